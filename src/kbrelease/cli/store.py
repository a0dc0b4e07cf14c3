"""``kbrelease store``: the store engine of the environment, the server kbrelease runs for it, and migrations."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from kbrelease.cli._common import JsonOpt, echo_json, project

app = typer.Typer(help="The store engine (lite, milvus-local, server) and the server kbrelease runs for it.", no_args_is_help=True)


def _status_line(data: dict[str, Any]) -> str:
    found = data["server"]
    head = f"engine {data['engine']}: {data['uri']}"
    if data["engine"] == "server":
        return head
    if not found:
        return f"{head}: not running"
    rss = f"{found['rss_bytes'] / (1 << 20):,.0f} MB" if found.get("rss_bytes") else "unknown"
    health = "" if found.get("healthy", True) else ", not answering /healthz"
    return f"{head}: running, pid {found['pid']}, {found['uri']}, RSS {rss}{health}"


@app.command("status")
def status(ctx: typer.Context, json_output: JsonOpt = False) -> None:
    """Show the store engine and the server kbrelease runs for it (pid, port, resident memory), if running."""
    with project(ctx, json_output) as kb:
        data = kb.store_status()
    echo_json(data) if json_output else typer.echo(_status_line(data))


@app.command("stop")
def stop_(ctx: typer.Context) -> None:
    """Stop the server kbrelease runs for the environment (the embedded Milvus Lite, or milvus-local)."""
    with project(ctx) as kb:
        stopped = kb.store_stop()
    typer.echo("stopped" if stopped else "not running")


@app.command("migrate")
def migrate_(
    ctx: typer.Context,
    to: Annotated[str, typer.Option("--to", help="The engine to move to: milvus-local or lite.")],
    json_output: JsonOpt = False,
) -> None:
    """Move every release (live, previous and kept ones) to another engine by package export/import, keeping the live release."""
    with project(ctx, json_output) as kb:
        info = kb.migrate_store(to)
    echo_json(info.asdict()) if json_output else typer.echo(str(info))
