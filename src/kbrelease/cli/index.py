"""Commands over the data index: resolve a bundle spec (`index`) and list files (`files`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from kbrelease.cli._common import JsonOpt, echo_json, project


def register(app: typer.Typer) -> None:
    app.command("index")(index)
    app.command("files")(files)


def index(
    ctx: typer.Context,
    bundle: Annotated[Path | None, typer.Option("--bundle", "-b", help="Bundle spec to resolve (bundles/<name>.yaml).")] = None,
    sync: Annotated[bool, typer.Option("--sync", help="Sync the spec's sources first (default: use the last sync).")] = False,
    json_output: JsonOpt = False,
) -> None:
    """Resolve a bundle spec into a data index (workspace bundles/<name>/<version>/); without --bundle, list resolved bundles."""
    with project(ctx, json_output) as kb:
        if bundle is None:
            found = kb.bundles()
            lines = [f"{b['name']}: {', '.join(b['versions'])} (latest {b['latest']})" for b in found]
            echo_json(found) if json_output else typer.echo("\n".join(lines) or "no bundles resolved yet; run `kbrelease index --bundle FILE`")
            return
        resolved = kb.index_bundle(bundle, sync=sync)
    echo_json(resolved.asdict()) if json_output else typer.echo(str(resolved))


def files(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Bundle name, 'current' (last sync), 'live', or a release name.")] = "current",
    version: Annotated[str | None, typer.Option("--version", help="Bundle version (default: its latest).")] = None,
    source: Annotated[list[str] | None, typer.Option("--source", "-s", help="Only these sources (repeatable).")] = None,
    start_time: Annotated[str | None, typer.Option("--start-time", help="Files with a timestamp at or after this ISO time (UTC if no zone).")] = None,
    end_time: Annotated[str | None, typer.Option("--end-time", help="Files with a timestamp at or before this ISO time (UTC if no zone).")] = None,
    prefix: Annotated[str, typer.Option("--prefix", help="Only relative paths starting with this.")] = "",
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=10_000, help="Most files to print.")] = 100,
    cursor: Annotated[str | None, typer.Option("--cursor", help="Continue after a previous answer's next_cursor.")] = None,
    where: Annotated[str, typer.Option("--where", "-w", help="Only files whose metadata passes this filter, e.g. 'camera_id == \"front\"'.")] = "",
    json_output: JsonOpt = False,
) -> None:
    """List files of a data index with filters (source, time, path prefix, metadata), sorted by source and path."""
    from kbrelease.index.query import FileFilter, parse_time

    with project(ctx, json_output) as kb:
        flt = FileFilter(tuple(source or ()), parse_time(start_time, "--start-time"), parse_time(end_time, "--end-time"), prefix, where)
        page = kb.data_index(name, version).page(flt, limit, cursor)
    records = page.to_dicts()
    if json_output:
        echo_json({"files": records, "next_cursor": page.next_cursor})
        return
    for rec in records:
        meta = {k: v for k, v in rec["metadata"].items() if k != "suffix"}
        shown = f"  {json.dumps(meta, ensure_ascii=False, sort_keys=True)}" if meta else ""
        line = f"{rec['file_id']}  {rec['source']}:{rec['relative_path']}  {rec['size_bytes']} B  {rec['timestamp'].isoformat()}  sha256:{rec['checksum']}"
        typer.echo(line + shown)
    if page.next_cursor:
        typer.echo(f"more: --cursor {page.next_cursor}")
