"""``kbrelease store``: the embedded Milvus Lite servers (one per workspace folder), and what Milvus keeps loaded."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from kbrelease.cli._common import JsonOpt, echo_json, load, run
from kbrelease.store.milvus import is_embedded

app = typer.Typer(
    help="The embedded Milvus Lite servers (one per workspace, stopped after store.idle_stop_minutes unused), and what Milvus keeps loaded.",
    no_args_is_help=True,
)


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def _server_line(s: dict[str, Any]) -> str:
    rss = f"{s['rss_bytes'] / (1 << 20):.0f} MiB" if s.get("rss_bytes") else "?"
    idle = _duration(s["idle_seconds"]) if s["idle_seconds"] else f"in use ({len(s.get('clients') or [])} processes)"
    stop = f"stops after {s['idle_stop_minutes']:g} min idle" if s.get("idle_stop_minutes") else "never stops by itself"
    return f"  pid {s['pid']:<7} port {s['port']:<5}  {rss:>8}  idle: {idle}  {stop}  {s['workspace']}"


@app.command("status")
def status(ctx: typer.Context, json_output: JsonOpt = False) -> None:
    """Show the embedded server of this workspace, every running embedded server of this user (pid, port, workspace,
    memory, idle time), and the load state of each release's collections in Milvus memory."""
    from kbrelease.store.lite import list_servers, running_server

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
        return {
            "uri": cfg.milvus_uri,
            "embedded_server": found,
            "servers": list_servers(cfg.store.servers_path),
            "collections": collections,
            "error": error,
        }

    data = run(ctx, find)
    if json_output:
        echo_json(data)
        return
    server = data["embedded_server"] or ("not running" if is_embedded(data["uri"]) else "server")
    typer.echo(f"{data['uri']}: {server}" + (f" — {data['error']}" if data["error"] else ""))
    typer.echo(f"embedded servers of this user: {len(data['servers'])}")
    for found in data["servers"]:
        typer.echo(_server_line(found))
    if data["collections"]:
        typer.echo("collections in Milvus memory:")
    for c in data["collections"]:
        typer.echo(f"  {c['release']} ({c['release_state']}) {c['database']}/{c['collection']}: {c['state']}")


@app.command("stop")
def stop_(
    ctx: typer.Context,
    all_servers: Annotated[bool, typer.Option("--all", help="Stop every embedded server of this user (those `store status` lists).")] = False,
    json_output: JsonOpt = False,
) -> None:
    """Stop the embedded Milvus Lite server of the workspace (or all of them); the next command starts it again."""
    from kbrelease.store.lite import list_servers, stop_server

    def stop() -> list[str]:
        cfg = load(ctx)
        if all_servers:
            return [s["data_dir"] for s in list_servers(cfg.store.servers_path) if stop_server(Path(s["data_dir"]))]
        return [cfg.milvus_uri] if is_embedded(cfg.milvus_uri) and stop_server(Path(cfg.milvus_uri)) else []

    stopped = run(ctx, stop)
    if json_output:
        echo_json({"stopped": stopped})
    elif all_servers:
        typer.echo(f"stopped {len(stopped)}: {', '.join(stopped)}" if stopped else "none running")
    else:
        typer.echo("stopped" if stopped else "not running")
