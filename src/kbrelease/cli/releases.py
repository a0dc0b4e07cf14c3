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
    json_output: JsonOpt = False,
) -> None:
    """Write a commented starter kbrelease.yaml."""
    from kbrelease.config import write_starter

    written = run(ctx, lambda: write_starter(path, force))
    echo_json({"written": str(written)}) if json_output else typer.echo(f"wrote {written}; edit its sources, then run `kbrelease publish`")


def sync(
    ctx: typer.Context,
    source: Annotated[list[str] | None, typer.Option("--source", "-s", help="Only these sources (repeatable).")] = None,
    index_only: Annotated[bool, typer.Option("--index-only", help="Hash the files where they are and write only the data index (no mirror).")] = False,
    json_output: JsonOpt = False,
) -> None:
    """Mirror every source into the workspace (incrementally) and write the data index."""
    with project(ctx, json_output) as kb:
        info = kb.sync(source or None, index_only=index_only)
    echo_json(info.asdict()) if json_output else typer.echo(str(info))


def _usage_error(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def build(
    ctx: typer.Context,
    release: Annotated[str | None, typer.Option("--release", "-r", help="Release name (default: next vN). Rerun a name to resume.")] = None,
    prepare: Annotated[bool, typer.Option("--prepare", help="Parallel build, step 1: freeze the data index, create the database, plan shards.")] = False,
    source: Annotated[str | None, typer.Option("--source", "-s", help="Parallel build, step 2: build this source of a prepared release.")] = None,
    shard: Annotated[str | None, typer.Option("--shard", help="With --source: only this shard, I/N (default: all its shards in turn).")] = None,
    finalize: Annotated[bool, typer.Option("--finalize", help="Parallel build, step 3: merge the shard results; the release is then built.")] = False,
    shard_files: Annotated[int | None, typer.Option("--shard-files", min=1, help="With --prepare: files per shard (default: deploy.shard_files).")] = None,
    bundle: Annotated[str | None, typer.Option("--bundle", "-b", help="Build from this resolved bundle (`kbrelease index`), not the last sync.")] = None,
    bundle_version: Annotated[str | None, typer.Option("--bundle-version", help="Version of --bundle (default: its latest).")] = None,
    json_output: JsonOpt = False,
) -> None:
    """Build a new release database from the current data index (never touches what is live).

    Alone, it builds the whole release in this process. --prepare, --source
    [--shard] and --finalize split the same build over many processes or
    machines (what the Argo workflow runs); the result is the same release.
    """
    from kbrelease.release.manifest import release_info_text

    modes = sum([prepare, source is not None, finalize])
    if modes > 1:
        _usage_error("use one of --prepare, --source, --finalize at a time")
    if shard is not None and source is None:
        _usage_error("--shard needs --source")
    if shard_files is not None and not prepare:
        _usage_error("--shard-files goes with --prepare")
    if bundle is not None and (source is not None or finalize):
        _usage_error("--bundle goes with --prepare or a whole build; the shards of a prepared release build its frozen index")
    if (source is not None or finalize) and not release:
        _usage_error("--source and --finalize need --release NAME (the prepared release)")
    with project(ctx, json_output) as kb:
        if prepare:
            plan = kb.prepare_build(release, shard_files, bundle, bundle_version)
            if json_output:
                echo_json(plan.asdict())
            else:
                shards = ", ".join(f"{s}: {n} shard(s)" for s, n in plan.sources.items())
                typer.echo(f"release {plan.release} prepared ({plan.database}); {shards}")
            return
        if source is not None:
            results = kb.build_shard(release or "", source, shard)
            echo_json([r.asdict() for r in results]) if json_output else typer.echo("\n".join(str(r) for r in results))
            return
        record = kb.finalize_build(release or "") if finalize else kb.build(release, bundle, bundle_version)
    if json_output:
        echo_json(record.asdict())
    else:
        typer.echo(release_info_text(record), nl=False)


def verify(ctx: typer.Context, release: Annotated[str, typer.Argument(help="Release to verify.")], json_output: JsonOpt = False) -> None:
    """Check a built release is complete; only verified releases can go live."""
    with project(ctx, json_output) as kb:
        record = kb.verify(release)
    echo_json(record.asdict()) if json_output else typer.echo(f"release {record.name} verified")


SkipQualityOpt = Annotated[
    bool, typer.Option("--skip-quality", help="Go live even if the release failed its quality gate (golden queries); recorded in the history.")
]
ReasonOpt = Annotated[str | None, typer.Option("--reason", help="Why (kept in `kbrelease history`).")]


def switch(
    ctx: typer.Context,
    release: Annotated[str, typer.Argument(help="Verified release to make live.")],
    skip_quality: SkipQualityOpt = False,
    reason: ReasonOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Make a verified release live (one atomic write of the live pointer)."""
    with project(ctx, json_output) as kb:
        pointer = kb.switch(release, skip_quality=skip_quality, reason=reason)
    echo_json(vars(pointer)) if json_output else typer.echo(f"live: {pointer.live} (previous: {pointer.previous or '-'})")


def rollback(ctx: typer.Context, reason: ReasonOpt = None, json_output: JsonOpt = False) -> None:
    """Switch back to the previous live release."""
    with project(ctx, json_output) as kb:
        pointer = kb.rollback(reason=reason)
    echo_json(vars(pointer)) if json_output else typer.echo(f"rolled back; live: {pointer.live} (previous: {pointer.previous or '-'})")


def publish(
    ctx: typer.Context,
    release: Annotated[str | None, typer.Option("--release", "-r", help="Release name (default: next vN).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Build even if the live release already has this data index and these models.")] = False,
    bundle: Annotated[
        Path | None, typer.Option("--bundle", "-b", help="Bundle spec (a file, or NAME for bundles/NAME.yaml): sync its sources, resolve, build from it.")
    ] = None,
    skip_quality: SkipQualityOpt = False,
    reason: ReasonOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """sync → build → verify → switch. A failure at any step leaves the live release untouched."""
    if bundle is not None and not bundle.is_file() and (Path("bundles") / f"{bundle}.yaml").is_file():
        bundle = Path("bundles") / f"{bundle}.yaml"
    with project(ctx, json_output) as kb:
        info = kb.publish(release, force=force, bundle=bundle, skip_quality=skip_quality, reason=reason)
    if json_output:
        echo_json(info.asdict())
        return
    from kbrelease.release.manifest import release_info_text

    typer.echo(str(info.sync))
    _advise(info.advice)
    if info.unchanged:
        typer.echo(f"nothing changed: live release {info.live} has this data index and these models; nothing built (--force to build anyway)")
        return
    typer.echo(release_info_text(info.release, "live" if info.live == info.release.name else None), nl=False)
    typer.echo(f"live: {info.live} (previous: {info.previous or '-'}) — published in {info.seconds:.1f}s")


def _advise(advice: list[str]) -> None:
    """Store advice (a source past the embedded store's size) on stderr, so scripts reading stdout are not disturbed."""
    for line in advice:
        typer.echo(f"advice: {line}", err=True)


def status(ctx: typer.Context, json_output: JsonOpt = False) -> None:
    """The live release and every release with its state and counts."""
    with project(ctx, json_output) as kb:
        data = kb.status()
    if json_output:
        echo_json(data)
        return
    typer.echo(f"environment: {data['environment']}   live: {data['live'] or '-'}   previous: {data['previous'] or '-'}   engine: {data['engine']}")
    for item in data["releases"]:
        typer.echo("  " + _release_line(item))
    _advise(data["advice"])


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
        state = record.display_state(kb.registry.pointer())  # live / retired, as `status` says
    if json_output:
        echo_json({**record.asdict(), "state": state, "stored_state": record.state})
    else:
        from kbrelease.release.manifest import release_info_text

        typer.echo(release_info_text(record, state), nl=False)


def gc(
    ctx: typer.Context,
    keep: Annotated[int | None, typer.Option("--keep", "-k", help="Releases to keep (default: keep_releases).")] = None,
    json_output: JsonOpt = False,
) -> None:
    """Drop old release databases (never the live or the previous one), interrupted builds and orphan databases."""
    with project(ctx, json_output) as kb:
        report = kb.gc_report(keep)
    if json_output:
        echo_json(report.asdict())
        return
    typer.echo(f"dropped: {', '.join(report.dropped) or 'nothing'}")
    if report.kept:
        typer.echo("kept: " + ", ".join(f"{name} ({why})" for name, why in report.kept.items()))
    if report.interrupted:
        typer.echo(f"dropped interrupted builds: {', '.join(report.interrupted)}")
    if report.orphans:
        typer.echo(f"dropped orphan databases (no release record): {', '.join(report.orphans)}")
    if report.finished:
        typer.echo(f"finished dropping (a previous gc was interrupted): {', '.join(report.finished)}")


def search(
    ctx: typer.Context,
    query: Annotated[str | None, typer.Argument(help="Text to search for.")] = None,
    image: Annotated[Path | None, typer.Option("--image", help="Search images similar to this file.")] = None,
    k: Annotated[int, typer.Option("--k", "-k", min=1, max=1000, help="Number of hits.")] = 5,
    source: Annotated[str | None, typer.Option("--source", "-s", help="Only this source.")] = None,
    release: Annotated[str | None, typer.Option("--release", "-r", help="Search this release instead of the live one.")] = None,
    where: Annotated[
        str | None, typer.Option("--where", "-w", help="Only files whose metadata passes this filter, e.g. 'camera_id == \"front\" and speed > 3'.")
    ] = None,
    after: Annotated[str | None, typer.Option("--after", help="Only files with a timestamp at or after this ISO date/time (UTC if no zone).")] = None,
    before: Annotated[str | None, typer.Option("--before", help="Only files with a timestamp at or before this ISO date/time (UTC if no zone).")] = None,
    mode: Annotated[
        str | None,
        typer.Option(
            "--mode",
            "-m",
            help="dense (vectors), sparse (BM25 keywords) or hybrid (both, rank fusion); "
            "default: hybrid on sources built with hybrid: true, dense on the others.",
        ),
    ] = None,
    json_output: JsonOpt = False,
) -> None:
    """Search the live (or a pinned) release by text or by image, optionally filtered by file metadata and time."""
    from kbrelease.release.search import SEARCH_MODES, check_mode

    if (query is None) == (image is None):
        typer.echo("error: give a query text or --image FILE (not both)", err=True)
        raise typer.Exit(2)
    if mode is not None and mode not in SEARCH_MODES:
        typer.echo(f"error: --mode {mode!r} is not one of {', '.join(SEARCH_MODES)}", err=True)
        raise typer.Exit(2)
    if image is not None and mode not in (None, "dense"):
        typer.echo(f"error: --mode {mode} matches words of a text query; images are searched by vectors only", err=True)
        raise typer.Exit(2)
    if image is not None and not image.is_file():
        typer.echo(f"error: image file {image} not found", err=True)
        raise typer.Exit(2)
    with project(ctx, json_output) as kb:
        filters: dict[str, str | None] = {"where": where, "after": after, "before": before}
        if image is not None:
            hits = kb.search_image(image, k, source, release, **filters)
        else:
            hits = kb.search(query or "", k, source, release, **filters, mode=check_mode(mode))
    if json_output:
        echo_json([h.asdict() for h in hits])
        return
    if not hits:
        typer.echo("no hits")
    for i, h in enumerate(hits, 1):
        where = f"{h.source}:{h.file}" + (f" p. {h.page}" if h.page is not None else "") + (f" § {h.heading}" if h.heading else "")
        found = "" if h.retrievers == ["dense"] else f"  ({'+'.join(h.retrievers)})"
        typer.echo(f"{i:>2}. {h.score:.3f}  {where}  [{h.release}]{found}")
        if h.text:
            snippet = " ".join(h.text.split())
            typer.echo(f"      {snippet[:200]}{'…' if len(snippet) > 200 else ''}")
