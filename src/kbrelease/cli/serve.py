"""``kbrelease serve``: the search service and web page; ``serve nginx-conf`` for replicas behind nginx."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from kbrelease.cli._common import Options, load, run

if TYPE_CHECKING:
    from kbrelease.config import Config

app = typer.Typer()

# Long GET queries must reach the app, which answers them with a JSON 422 (h11's default cuts at 16 KiB).
MAX_REQUEST_LINE = 256 * 1024


@app.callback(invoke_without_command=True)
def serve(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option("--host", help="Address to listen on (default: service.host, 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option("--port", "-p", help="TCP port (default: service.port, 8000).")] = None,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Worker processes on this port (each loads the models).")] = 1,
    reload: Annotated[bool, typer.Option("--reload", help="Restart when the code changes (development).")] = False,
    log_level: Annotated[str, typer.Option("--log-level", help="uvicorn's own log level; the service log is JSON on stderr.")] = "warning",
) -> None:
    """Serve the search API (/api/v1) and web page (/) of the live release, following switches without a restart.

    `kbrelease serve nginx-conf` renders an nginx config for several replicas.
    """
    if ctx.invoked_subcommand is not None:
        return
    import uvicorn

    overrides = {"service.host": host, "service.port": port}
    cfg = run(ctx, lambda: _load(ctx, overrides))
    url = f"http://{cfg.service.host}:{cfg.service.port}/"
    typer.echo(f"kbrelease serve: web page {url}, API {url}api/v1 (environment {cfg.environment!r}); Ctrl+C stops", err=True)
    options = {
        "host": cfg.service.host,
        "port": cfg.service.port,
        "log_level": log_level,
        "access_log": False,  # the service writes its own structured access log
        "h11_max_incomplete_event_size": MAX_REQUEST_LINE,
        "timeout_graceful_shutdown": 5,
    }
    if reload or workers > 1:
        # Several processes: each builds the app from the environment (uvicorn's factory).
        _export_options(ctx.obj, host, port)
        uvicorn.run("kbrelease.service.app:app_from_env", factory=True, reload=reload, workers=None if reload else workers, **options)  # type: ignore[arg-type]
        return
    from kbrelease.service.app import create_app

    web = run(ctx, lambda: create_app(cfg))
    uvicorn.run(web, **options)  # type: ignore[arg-type]


def _load(ctx: typer.Context, overrides: Mapping[str, object]) -> Config:
    """The global options' config, plus this command's flags."""
    from kbrelease.config import load_config

    opts: Options = ctx.obj
    base = {"workspace": str(opts.workspace) if opts.workspace else None, "environment": opts.env}
    return load_config(opts.config, overrides={**base, **overrides})


def _export_options(opts: Options, host: str | None, port: int | None) -> None:
    """Hand the global options to the worker processes through the variables load_config reads."""
    pairs = {
        "KBRELEASE_CONFIG": str(Path(opts.config).resolve()) if opts.config else None,
        "KBRELEASE_WORKSPACE": str(Path(opts.workspace).resolve()) if opts.workspace else None,
        "KBRELEASE_ENV": opts.env,
        "KBRELEASE_SERVICE_HOST": host,
        "KBRELEASE_SERVICE_PORT": str(port) if port else None,
    }
    for name, value in pairs.items():
        if value:
            os.environ[name] = value


@app.command("nginx-conf")
def nginx_conf(
    ctx: typer.Context,
    upstream: Annotated[list[str], typer.Option("--upstream", "-u", help="HOST:PORT of one `kbrelease serve` replica (repeat per replica).")],
    listen: Annotated[str, typer.Option("--listen", "-l", help="Port, or HOST:PORT, nginx listens on (a bare port means 127.0.0.1).")] = "8080",
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write the config here (default: print it).")] = None,
    foreground: Annotated[bool, typer.Option("--foreground", help="Add `daemon off;` (for systemd or a container).")] = False,
    access_log: Annotated[str | None, typer.Option("--access-log", help="Access log path, relative to nginx's prefix (default: off).")] = None,
) -> None:
    """Render an nginx.conf that balances several replicas and retries a failed request on the next one."""
    from kbrelease.service.nginx import render_nginx_conf

    def render() -> str:
        # nginx must let through the largest upload the replicas accept
        limit = load(ctx).service.max_upload_bytes
        return render_nginx_conf(upstream, listen, max_upload_bytes=limit, access_log=access_log, foreground=foreground)

    text = run(ctx, render)
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.write_text(text, encoding="utf-8")
        typer.echo(f"wrote {out}; start it with: nginx -p {out.resolve().parent} -c {out.resolve()} -e stderr" + ("" if foreground else " -g 'daemon off;'"))
