"""``kbrelease store``: the embedded Milvus Lite servers (one per workspace folder)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from kbrelease.cli._common import JsonOpt, echo_json, load, run
from kbrelease.store.milvus import is_embedded

app = typer.Typer(help="The embedded Milvus Lite servers: one per workspace, stopped after store.idle_stop_minutes unused.", no_args_is_help=True)


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
    """Show the embedded server of this workspace, and every running embedded server of this user (pid, port, workspace, memory, idle time)."""
    from kbrelease.store.lite import list_servers, running_server

    def find() -> dict[str, Any]:
        cfg = load(ctx)
        found = running_server(Path(cfg.milvus_uri)) if is_embedded(cfg.milvus_uri) else None
        return {"uri": cfg.milvus_uri, "embedded_server": found, "servers": list_servers(cfg.store.servers_path)}

    data = run(ctx, find)
    if json_output:
        echo_json(data)
        return
    typer.echo(f"{data['uri']}: {data['embedded_server'] or 'not running'}")
    typer.echo(f"embedded servers of this user: {len(data['servers'])}")
    for server in data["servers"]:
        typer.echo(_server_line(server))


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
