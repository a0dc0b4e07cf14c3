"""``kbrelease store``: the store engine of the environment (lite, milvus-local, server), the servers kbrelease runs
for it (the embedded Milvus Lite servers, one per workspace folder; milvus-local), what Milvus keeps loaded, and migrations."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from kbrelease.cli._common import JsonOpt, echo_json, load, project, run

app = typer.Typer(
    help="The store engine (lite, milvus-local, server), the servers kbrelease runs for it (the embedded Milvus Lite stops after "
    "store.idle_stop_minutes unused), what Milvus keeps loaded, and migrations between engines.",
    no_args_is_help=True,
)


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
    """Show the store engine, its index and the server kbrelease runs for it (pid, port, resident memory), every running
    embedded server of this user (pid, port, workspace, memory, idle time), and the load state of each release's
    collections in Milvus memory."""
    from kbrelease.store.engines import server_status
    from kbrelease.store.lite import list_servers, running_server

    def find() -> dict[str, Any]:
        cfg = load(ctx)
        data = server_status(cfg)  # engine, uri (credentials masked), server, index
        engine = data["engine"]
        embedded = running_server(Path(cfg.milvus_uri)) if engine == "lite" else None
        collections: list[dict[str, str]] = []
        error = None
        if engine == "server" or data["server"]:  # never start a server kbrelease runs just to report on it
            from kbrelease.api import KbRelease
            from kbrelease.errors import KbReleaseError

            try:
                with KbRelease(cfg) as kb:
                    collections = kb.collection_states()
            except KbReleaseError as exc:  # a status reports what it cannot reach
                error = str(exc)
        return {
            **data,
            "embedded_server": embedded,
            "servers": list_servers(cfg.store.servers_path),
            "collections": collections,
            "error": error,
        }

    data = run(ctx, find)
    if json_output:
        echo_json(data)
        return
    typer.echo(_status_line(data) + (f" — {data['error']}" if data["error"] else ""))
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
    """Stop the server kbrelease runs for the environment (the embedded Milvus Lite, or milvus-local), or every embedded
    server of this user; the next command starts it again."""
    from kbrelease.store.engines import stop_managed
    from kbrelease.store.lite import list_servers, stop_server

    def stop() -> list[str]:
        cfg = load(ctx)
        if all_servers:
            return [s["data_dir"] for s in list_servers(cfg.store.servers_path) if stop_server(Path(s["data_dir"]))]
        return [cfg.milvus_uri] if stop_managed(cfg) else []

    stopped = run(ctx, stop)
    if json_output:
        echo_json({"stopped": stopped})
    elif all_servers:
        typer.echo(f"stopped {len(stopped)}: {', '.join(stopped)}" if stopped else "none running")
    else:
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
