"""``kbrelease store``: the embedded Milvus Lite server of the workspace, and what Milvus keeps loaded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from kbrelease.cli._common import JsonOpt, echo_json, load, run
from kbrelease.store.milvus import is_embedded

app = typer.Typer(help="The embedded Milvus Lite server of the workspace, and what Milvus keeps loaded.", no_args_is_help=True)


@app.command("status")
def status(ctx: typer.Context, json_output: JsonOpt = False) -> None:
    """Show the embedded Milvus Lite server (if running) and the load state of each release's collections."""
    from kbrelease.store.lite import running_server

    def find() -> dict[str, Any]:
        cfg = load(ctx)
        embedded = is_embedded(cfg.milvus_uri)
        found = running_server(Path(cfg.milvus_uri)) if embedded else None
        collections: list[dict[str, str]] = []
        error = None
        if found or not embedded:  # never start the embedded server just to report on it
            from kbrelease.api import KbRelease
            from kbrelease.errors import KbReleaseError

            try:
                with KbRelease(cfg) as kb:
                    collections = kb.collection_states()
            except KbReleaseError as exc:  # a status reports what it cannot reach
                error = str(exc)
        return {"uri": cfg.milvus_uri, "embedded_server": found, "collections": collections, "error": error}

    data = run(ctx, find)
    if json_output:
        echo_json(data)
        return
    server = data["embedded_server"] or ("not running" if is_embedded(data["uri"]) else "server")
    typer.echo(f"{data['uri']}: {server}" + (f" — {data['error']}" if data["error"] else ""))
    for c in data["collections"]:
        typer.echo(f"  {c['release']} ({c['release_state']}) {c['database']}/{c['collection']}: {c['state']}")


@app.command("stop")
def stop_(ctx: typer.Context) -> None:
    """Stop the embedded Milvus Lite server of the workspace."""
    from kbrelease.store.lite import stop_server

    def stop() -> bool:
        cfg = load(ctx)
        return stop_server(Path(cfg.milvus_uri)) if is_embedded(cfg.milvus_uri) else False

    typer.echo("stopped" if run(ctx, stop) else "not running")
