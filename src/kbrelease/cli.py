"""The ``kbrelease`` command: a thin typer layer over :class:`kbrelease.api.KbRelease`.

Every command prints a readable summary, or stable JSON with ``--json``.
Errors are one line on stderr and an exit code (traceback with ``--debug``).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from kbrelease.errors import KbReleaseError

if TYPE_CHECKING:
    from kbrelease.api import KbRelease

T = TypeVar("T")

app = typer.Typer(
    name="kbrelease",
    help="Publish knowledge bases (text and images) into Milvus: versioned, verified, switched live atomically, reversible.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
store_app = typer.Typer(help="The embedded Milvus Lite server of the workspace.", no_args_is_help=True)
app.add_typer(store_app, name="store")
cache_app = typer.Typer(help="The embedding cache: vectors reused across releases.", no_args_is_help=True)
app.add_typer(cache_app, name="cache")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


@dataclass
class Options:
    config: Path | None
    workspace: Path | None
    env: str | None
    debug: bool


@app.callback()
def _root(
    ctx: typer.Context,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="Config file (default: ./kbrelease.yaml or $KBRELEASE_CONFIG).")] = None,
    workspace: Annotated[Path | None, typer.Option("--workspace", "-w", help="Workspace folder (default: from config, or .kbrelease).")] = None,
    env: Annotated[str | None, typer.Option("--env", "-e", help="Environment name (default: $KBRELEASE_ENV or 'default').")] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
) -> None:
    ctx.obj = Options(config, workspace, env, debug)


def _echo_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


@contextmanager
def _project(ctx: typer.Context, json_output: bool = False) -> Iterator[KbRelease]:
    """Load the config once, build the facade, map errors to one line + exit code."""
    opts: Options = ctx.obj
    try:
        from kbrelease.api import KbRelease
        from kbrelease.config import load_config
        from kbrelease.progress import RichReporter, wants_bars

        cfg = load_config(
            opts.config,
            overrides={"workspace": str(opts.workspace) if opts.workspace else None, "environment": opts.env},
        )
        if wants_bars(json_output):
            reporter = RichReporter()
            with reporter.live(), KbRelease(cfg, reporter) as kb:
                yield kb
        else:
            with KbRelease(cfg) as kb:
                yield kb
    except KbReleaseError as exc:
        if opts.debug:
            raise
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None


def _run(ctx: typer.Context, fn: Callable[[], T]) -> T:
    """For commands that need no project (init, store)."""
    try:
        return fn()
    except KbReleaseError as exc:
        if ctx.obj.debug:
            raise
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None


def _release_line(item: dict[str, Any]) -> str:
    """One line of `status`/`list` from an entry of ``KbRelease.status()["releases"]``."""
    counts = ", ".join(f"{n}: {c['rows']} rows/{c['files']} files" + (f", {c['failed']} failed" if c["failed"] else "") for n, c in item["sources"].items())
    return f"{item['name']:<10} {item['state']:<9} {item['created_at']}  {counts}"


@app.command()
def init(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="Where to write the starter config.")] = Path("kbrelease.yaml"),
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Write a commented starter kbrelease.yaml."""
    from kbrelease.config import write_starter

    written = _run(ctx, lambda: write_starter(path, force))
    typer.echo(f"wrote {written}; edit its sources, then run `kbrelease publish`")


@app.command()
def sync(
    ctx: typer.Context,
    source: Annotated[list[str] | None, typer.Option("--source", "-s", help="Only these sources (repeatable).")] = None,
    json_output: JsonOpt = False,
) -> None:
    """Mirror every source into the workspace (incrementally) and write the data index."""
    with _project(ctx, json_output) as kb:
        info = kb.sync(source or None)
    _echo_json(info.asdict()) if json_output else typer.echo(str(info))


@app.command()
def build(
    ctx: typer.Context,
    release: Annotated[str | None, typer.Option("--release", "-r", help="Release name (default: next vN). Rerun a name to resume.")] = None,
    json_output: JsonOpt = False,
) -> None:
    """Build a new release database from the current data index (never touches what is live)."""
    with _project(ctx, json_output) as kb:
        record = kb.build(release)
    if json_output:
        _echo_json(record.asdict())
    else:
        from kbrelease.release.manifest import release_info_text

        typer.echo(release_info_text(record), nl=False)


@app.command()
def verify(ctx: typer.Context, release: Annotated[str, typer.Argument(help="Release to verify.")], json_output: JsonOpt = False) -> None:
    """Check a built release is complete; only verified releases can go live."""
    with _project(ctx, json_output) as kb:
        record = kb.verify(release)
    _echo_json(record.asdict()) if json_output else typer.echo(f"release {record.name} verified")


@app.command()
def switch(ctx: typer.Context, release: Annotated[str, typer.Argument(help="Verified release to make live.")], json_output: JsonOpt = False) -> None:
    """Make a verified release live (one atomic write of the live pointer)."""
    with _project(ctx, json_output) as kb:
        pointer = kb.switch(release)
    _echo_json(vars(pointer)) if json_output else typer.echo(f"live: {pointer.live} (previous: {pointer.previous or '-'})")


@app.command()
def rollback(ctx: typer.Context, json_output: JsonOpt = False) -> None:
    """Switch back to the previous live release."""
    with _project(ctx, json_output) as kb:
        pointer = kb.rollback()
    _echo_json(vars(pointer)) if json_output else typer.echo(f"rolled back; live: {pointer.live} (previous: {pointer.previous or '-'})")


@app.command()
def publish(
    ctx: typer.Context,
    release: Annotated[str | None, typer.Option("--release", "-r", help="Release name (default: next vN).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Build even if the live release already has this data index and these models.")] = False,
    json_output: JsonOpt = False,
) -> None:
    """sync → build → verify → switch. A failure at any step leaves the live release untouched."""
    with _project(ctx, json_output) as kb:
        info = kb.publish(release, force=force)
    if json_output:
        _echo_json(info.asdict())
        return
    from kbrelease.release.manifest import release_info_text

    typer.echo(str(info.sync))
    if info.unchanged:
        typer.echo(f"nothing changed: live release {info.live} has this data index and these models; nothing built (--force to build anyway)")
        return
    typer.echo(release_info_text(info.release), nl=False)
    typer.echo(f"live: {info.live} (previous: {info.previous or '-'}) — published in {info.seconds:.1f}s")


@app.command()
def status(ctx: typer.Context, json_output: JsonOpt = False) -> None:
    """The live release and every release with its state and counts."""
    with _project(ctx, json_output) as kb:
        data = kb.status()
    if json_output:
        _echo_json(data)
        return
    typer.echo(f"environment: {data['environment']}   live: {data['live'] or '-'}   previous: {data['previous'] or '-'}")
    for item in data["releases"]:
        typer.echo("  " + _release_line(item))


@app.command("list")
def list_(ctx: typer.Context, json_output: JsonOpt = False) -> None:
    """List releases (name, state, created, counts)."""
    with _project(ctx, json_output) as kb:
        data = kb.status()
    if json_output:
        _echo_json(data["releases"])
        return
    for item in data["releases"]:
        typer.echo(_release_line(item))


@app.command()
def show(ctx: typer.Context, release: Annotated[str, typer.Argument(help="Release name.")], json_output: JsonOpt = False) -> None:
    """Print one release's manifest (RELEASE_INFO), with failed and skipped files."""
    with _project(ctx, json_output) as kb:
        record = kb.release(release)
    if json_output:
        _echo_json(record.asdict())
    else:
        from kbrelease.release.manifest import release_info_text

        typer.echo(release_info_text(record), nl=False)


@app.command()
def gc(
    ctx: typer.Context,
    keep: Annotated[int | None, typer.Option("--keep", "-k", help="Releases to keep (default: keep_releases).")] = None,
    json_output: JsonOpt = False,
) -> None:
    """Drop old release databases (never the live or the previous one)."""
    with _project(ctx, json_output) as kb:
        dropped = kb.gc(keep)
    _echo_json({"dropped": dropped}) if json_output else typer.echo(f"dropped: {', '.join(dropped) or 'nothing'}")


@app.command()
def search(
    ctx: typer.Context,
    query: Annotated[str | None, typer.Argument(help="Text to search for.")] = None,
    image: Annotated[Path | None, typer.Option("--image", help="Search images similar to this file.")] = None,
    k: Annotated[int, typer.Option("--k", "-k", min=1, max=1000, help="Number of hits.")] = 5,
    source: Annotated[str | None, typer.Option("--source", "-s", help="Only this source.")] = None,
    release: Annotated[str | None, typer.Option("--release", "-r", help="Search this release instead of the live one.")] = None,
    json_output: JsonOpt = False,
) -> None:
    """Search the live (or a pinned) release by text or by image."""
    if (query is None) == (image is None):
        typer.echo("error: give a query text or --image FILE (not both)", err=True)
        raise typer.Exit(2)
    if image is not None and not image.is_file():
        typer.echo(f"error: image file {image} not found", err=True)
        raise typer.Exit(2)
    with _project(ctx, json_output) as kb:
        hits = kb.search_image(image, k, source, release) if image is not None else kb.search(query or "", k, source, release)
    if json_output:
        _echo_json([h.asdict() for h in hits])
        return
    if not hits:
        typer.echo("no hits")
    for i, h in enumerate(hits, 1):
        where = f"{h.source}:{h.file}" + (f" § {h.heading}" if h.heading else "")
        typer.echo(f"{i:>2}. {h.score:.3f}  {where}  [{h.release}]")
        if h.text:
            snippet = " ".join(h.text.split())
            typer.echo(f"      {snippet[:200]}{'…' if len(snippet) > 200 else ''}")


@store_app.command("status")
def store_status(ctx: typer.Context, json_output: JsonOpt = False) -> None:
    """Show the embedded Milvus Lite server of the workspace, if running."""
    from kbrelease.config import load_config
    from kbrelease.store.lite import running_server

    def run() -> dict[str, Any]:
        cfg = load_config(ctx.obj.config, overrides={"workspace": str(ctx.obj.workspace) if ctx.obj.workspace else None})
        found = running_server(Path(cfg.milvus_uri)) if "://" not in cfg.milvus_uri else None
        return {"uri": cfg.milvus_uri, "embedded_server": found}

    data = _run(ctx, run)
    _echo_json(data) if json_output else typer.echo(f"{data['uri']}: {data['embedded_server'] or 'not running'}")


@store_app.command("stop")
def store_stop(ctx: typer.Context) -> None:
    """Stop the embedded Milvus Lite server of the workspace."""
    from kbrelease.config import load_config
    from kbrelease.store.lite import stop_server

    def run() -> bool:
        cfg = load_config(ctx.obj.config, overrides={"workspace": str(ctx.obj.workspace) if ctx.obj.workspace else None})
        return stop_server(Path(cfg.milvus_uri)) if "://" not in cfg.milvus_uri else False

    typer.echo("stopped" if _run(ctx, run) else "not running")


@cache_app.command("stats")
def cache_stats(ctx: typer.Context, json_output: JsonOpt = False) -> None:
    """Entries, size, and the hit rate of the last build."""
    with _project(ctx, json_output) as kb:
        stats = kb.cache_stats()
    if json_output:
        _echo_json(stats.asdict())
        return
    rate = f"{stats.hit_rate:.1%}" if stats.hit_rate is not None else "-"
    typer.echo(
        f"{stats.path}: {stats.entries} vectors in {stats.namespaces} model(s), {stats.size_bytes / 1048576:.1f} MB; "
        f"last build {stats.last_build or '-'}: {stats.last_hits} reused, {stats.last_misses} embedded (hit rate {rate})"
    )


@cache_app.command("prune")
def cache_prune(
    ctx: typer.Context,
    keep: Annotated[int, typer.Option("--keep", "-k", min=1, help="Keep entries used by the last N builds.")] = 5,
    json_output: JsonOpt = False,
) -> None:
    """Drop cached vectors that none of the last N builds used."""
    with _project(ctx, json_output) as kb:
        dropped = kb.cache_prune(keep)
    _echo_json({"dropped": dropped}) if json_output else typer.echo(f"dropped {dropped} cached vectors")


@cache_app.command("export")
def cache_export(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write files/<file_id>/<checksum>/ into.")],
    file: Annotated[list[str] | None, typer.Option("--file", "-f", help="A file id or relative path (repeatable).")] = None,
    all_files: Annotated[bool, typer.Option("--all", help="Every file of the release.")] = False,
    release: Annotated[str | None, typer.Option("--release", "-r", help="Release to export (default: the live one).")] = None,
    json_output: JsonOpt = False,
) -> None:
    """Write per-file content packages (chunks + vectors) that another environment imports without embedding."""
    if bool(file) == all_files:
        typer.echo("error: give --file PATH_OR_ID (repeatable) or --all", err=True)
        raise typer.Exit(2)
    with _project(ctx, json_output) as kb:
        info = kb.cache_export(out, None if all_files else file, release)
    _echo_json(info.asdict()) if json_output else typer.echo(f"exported {info.files} file package(s), {info.vectors} vectors, to {out}")


@cache_app.command("import")
def cache_import(
    ctx: typer.Context,
    folder: Annotated[Path, typer.Argument(help="A folder written by `kbrelease cache export`.")],
    json_output: JsonOpt = False,
) -> None:
    """Load content packages into the embedding cache; the next build reuses their vectors."""
    with _project(ctx, json_output) as kb:
        info = kb.cache_import(folder)
    _echo_json(info.asdict()) if json_output else typer.echo(f"imported {info.files} file package(s), {info.vectors} vectors")


def _return_freed_memory() -> None:
    """Make glibc give large freed blocks back to the OS.

    With the default dynamic mmap threshold, the many short-lived tensor and
    row buffers of a build end up in fragmented heap arenas and the RSS creeps
    up with the corpus (1.5 -> 1.8 GB from 2,500 to 10,000 paragraphs); with a
    fixed 128 KiB threshold it stayed flat at ~1.2 GB (docs/benchmarks.md).
    Same as MALLOC_MMAP_THRESHOLD_=131072; an explicit setting wins.
    """
    if not sys.platform.startswith("linux") or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD


def main() -> None:
    _return_freed_memory()
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
