"""``kbrelease store``: the embedded Milvus Lite server of the workspace."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from kbrelease.cli._common import JsonOpt, echo_json, load, run
from kbrelease.store.milvus import is_embedded

app = typer.Typer(help="The embedded Milvus Lite server of the workspace.", no_args_is_help=True)


@app.command("status")
def status(ctx: typer.Context, json_output: JsonOpt = False) -> None:
    """Show the embedded Milvus Lite server of the workspace, if running."""
    from kbrelease.store.lite import running_server

    def find() -> dict[str, Any]:
        cfg = load(ctx)
        found = running_server(Path(cfg.milvus_uri)) if is_embedded(cfg.milvus_uri) else None
        return {"uri": cfg.milvus_uri, "embedded_server": found}

    data = run(ctx, find)
    echo_json(data) if json_output else typer.echo(f"{data['uri']}: {data['embedded_server'] or 'not running'}")


@app.command("stop")
def stop_(ctx: typer.Context) -> None:
    """Stop the embedded Milvus Lite server of the workspace."""
    from kbrelease.store.lite import stop_server

    def stop() -> bool:
        cfg = load(ctx)
        return stop_server(Path(cfg.milvus_uri)) if is_embedded(cfg.milvus_uri) else False

    typer.echo("stopped" if run(ctx, stop) else "not running")
