"""Commands of the release lifecycle: init, sync, build, verify, switch, rollback,
publish, status, list, show, gc, search."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from kbrelease.cli._common import JsonOpt, echo_json, project, run


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app (top-level commands, not a group)."""
    for fn in (init, sync, build, verify, switch, rollback, publish, status, list_, show, gc, search):
        app.command("list" if fn is list_ else fn.__name__)(fn)


def _release_line(item: dict[str, Any]) -> str:
    """One line of `status`/`list` from an entry of ``KbRelease.status()["releases"]``."""
    counts = ", ".join(f"{n}: {c['rows']} rows/{c['files']} files" + (f", {c['failed']} failed" if c["failed"] else "") for n, c in item["sources"].items())
    return f"{item['name']:<10} {item['state']:<10} {item['created_at']}  {counts}"


def init(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="Where to write the starter config.")] = Path("kbrelease.yaml"),
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Write a commented starter kbrelease.yaml."""
    from kbrelease.config import write_starter

    written = run(ctx, lambda: write_starter(path, force))
    typer.echo(f"wrote {written}; edit its sources, then run `kbrelease publish`")


def sync(
    ctx: typer.Context,
    source: Annotated[list[str] | None, typer.Option("--source", "-s", help="Only these sources (repeatable).")] = None,
    json_output: JsonOpt = False,
) -> None:
    """Mirror every source into the workspace (incrementally) and write the data index."""
    with project(ctx, json_output) as kb:
        info = kb.sync(source or None)
    echo_json(info.asdict()) if json_output else typer.echo(str(info))


def build(
    ctx: typer.Context,
    release: Annotated[str | None, typer.Option("--release", "-r", help="Release name (default: next vN). Rerun a name to resume.")] = None,
    json_output: JsonOpt = False,
) -> None:
    """Build a new release database from the current data index (never touches what is live)."""
    with project(ctx, json_output) as kb:
        record = kb.build(release)
    if json_output:
        echo_json(record.asdict())
    else:
        from kbrelease.release.manifest import release_info_text

        typer.echo(release_info_text(record), nl=False)


def verify(ctx: typer.Context, release: Annotated[str, typer.Argument(help="Release to verify.")], json_output: JsonOpt = False) -> None:
    """Check a built release is complete; only verified releases can go live."""
    with project(ctx, json_output) as kb:
        record = kb.verify(release)
    echo_json(record.asdict()) if json_output else typer.echo(f"release {record.name} verified")


def switch(ctx: typer.Context, release: Annotated[str, typer.Argument(help="Verified release to make live.")], json_output: JsonOpt = False) -> None:
    """Make a verified release live (one atomic write of the live pointer)."""
    with project(ctx, json_output) as kb:
        pointer = kb.switch(release)
    echo_json(vars(pointer)) if json_output else typer.echo(f"live: {pointer.live} (previous: {pointer.previous or '-'})")


def rollback(ctx: typer.Context, json_output: JsonOpt = False) -> None:
    """Switch back to the previous live release."""
    with project(ctx, json_output) as kb:
        pointer = kb.rollback()
    echo_json(vars(pointer)) if json_output else typer.echo(f"rolled back; live: {pointer.live} (previous: {pointer.previous or '-'})")


def publish(
    ctx: typer.Context,
    release: Annotated[str | None, typer.Option("--release", "-r", help="Release name (default: next vN).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Build even if the live release already has this data index and these models.")] = False,
    json_output: JsonOpt = False,
) -> None:
    """sync → build → verify → switch. A failure at any step leaves the live release untouched."""
    with project(ctx, json_output) as kb:
        info = kb.publish(release, force=force)
    if json_output:
        echo_json(info.asdict())
        return
    from kbrelease.release.manifest import release_info_text

    typer.echo(str(info.sync))
    if info.unchanged:
        typer.echo(f"nothing changed: live release {info.live} has this data index and these models; nothing built (--force to build anyway)")
        return
    typer.echo(release_info_text(info.release), nl=False)
    typer.echo(f"live: {info.live} (previous: {info.previous or '-'}) — published in {info.seconds:.1f}s")


def status(ctx: typer.Context, json_output: JsonOpt = False) -> None:
    """The live release and every release with its state and counts."""
    with project(ctx, json_output) as kb:
        data = kb.status()
    if json_output:
        echo_json(data)
        return
    typer.echo(f"environment: {data['environment']}   live: {data['live'] or '-'}   previous: {data['previous'] or '-'}")
    for item in data["releases"]:
        typer.echo("  " + _release_line(item))


def list_(ctx: typer.Context, json_output: JsonOpt = False) -> None:
    """List releases (name, state, created, counts)."""
    with project(ctx, json_output) as kb:
        data = kb.status()
    if json_output:
        echo_json(data["releases"])
        return
    for item in data["releases"]:
        typer.echo(_release_line(item))


def show(ctx: typer.Context, release: Annotated[str, typer.Argument(help="Release name.")], json_output: JsonOpt = False) -> None:
    """Print one release's manifest (RELEASE_INFO), with failed and skipped files."""
    with project(ctx, json_output) as kb:
        record = kb.release(release)
    if json_output:
        echo_json(record.asdict())
    else:
        from kbrelease.release.manifest import release_info_text

        typer.echo(release_info_text(record), nl=False)


def gc(
    ctx: typer.Context,
    keep: Annotated[int | None, typer.Option("--keep", "-k", help="Releases to keep (default: keep_releases).")] = None,
    json_output: JsonOpt = False,
) -> None:
    """Drop old release databases (never the live or the previous one)."""
    with project(ctx, json_output) as kb:
        dropped = kb.gc(keep)
    echo_json({"dropped": dropped}) if json_output else typer.echo(f"dropped: {', '.join(dropped) or 'nothing'}")


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
    with project(ctx, json_output) as kb:
        hits = kb.search_image(image, k, source, release) if image is not None else kb.search(query or "", k, source, release)
    if json_output:
        echo_json([h.asdict() for h in hits])
        return
    if not hits:
        typer.echo("no hits")
    for i, h in enumerate(hits, 1):
        where = f"{h.source}:{h.file}" + (f" § {h.heading}" if h.heading else "")
        typer.echo(f"{i:>2}. {h.score:.3f}  {where}  [{h.release}]")
        if h.text:
            snippet = " ".join(h.text.split())
            typer.echo(f"      {snippet[:200]}{'…' if len(snippet) > 200 else ''}")
