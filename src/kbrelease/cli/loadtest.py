"""``kbrelease loadtest``: a bounded load test of a running search service (one replica or nginx in front)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from kbrelease.cli._common import JsonOpt, echo_json, load, run

if TYPE_CHECKING:
    from kbrelease.service.loadtest import LoadReport


def register(root: typer.Typer) -> None:
    root.command("loadtest")(loadtest)


def loadtest(
    ctx: typer.Context,
    url: Annotated[str, typer.Argument(help="Base URL of the service, e.g. http://127.0.0.1:8080 (nginx in front of the replicas).")],
    duration: Annotated[str, typer.Option("--duration", "-d", help="How long to send load: 30s, 2m, 500ms (at most 1h).")] = "30s",
    concurrency: Annotated[int, typer.Option("--concurrency", "-n", min=1, max=256, help="Client threads, each searching back to back.")] = 8,
    max_requests: Annotated[int, typer.Option("--max-requests", min=1, help="Stop after this many requests even if time is left.")] = 1_000_000,
    queries: Annotated[Path | None, typer.Option("--queries", "-q", help="UTF-8 file with one query per line (default: a built-in set).")] = None,
    k: Annotated[int, typer.Option("-k", min=1, help="Results per search.")] = 5,
    switch_every: Annotated[
        str | None, typer.Option("--switch-every", help="Move the live pointer every so often (e.g. 10s) through the admin API, and back at the end.")
    ] = None,
    release: Annotated[
        list[str] | None, typer.Option("--release", "-r", help="Releases to switch between (repeat; default: the live and the previous one).")
    ] = None,
    token: Annotated[str | None, typer.Option("--token", help="Read token (default: KBRELEASE_API_TOKEN).", show_default=False)] = None,
    admin_token: Annotated[
        str | None, typer.Option("--admin-token", help="Admin token for --switch-every (default: KBRELEASE_ADMIN_TOKEN).", show_default=False)
    ] = None,
    timeout: Annotated[float, typer.Option("--timeout", min=0.1, help="Seconds one request may take before it counts as failed.")] = 30.0,
    json_output: JsonOpt = False,
) -> None:
    """Load-test a running service: QPS, p50/p95/p99, errors by status, and which release answered (X-KB-Release).

    Bounded by --duration and --max-requests. With --switch-every, the live pointer
    moves between two releases under load, so the report shows what a switch costs.
    """
    from kbrelease.service.loadtest import DEFAULT_QUERIES, parse_duration, read_queries, run_loadtest
    from kbrelease.trust.redact import register_secret

    def go() -> LoadReport:
        cfg = load(ctx)  # the tokens come from the one secrets table unless given here
        read = token or (cfg.service.api_token.get_secret_value() if cfg.service.api_token else None)
        admin = admin_token or (cfg.service.admin_token.get_secret_value() if cfg.service.admin_token else None)
        for secret in (read, admin):
            register_secret(secret)
        if not json_output:
            typer.echo(f"load test of {url} for {duration} at concurrency {concurrency} ...", err=True)
        return run_loadtest(
            url,
            duration=parse_duration(duration),
            concurrency=concurrency,
            queries=read_queries(queries) if queries else DEFAULT_QUERIES,
            token=read,
            switch_every=parse_duration(switch_every, "--switch-every") if switch_every else None,
            admin_token=admin,
            releases=release or None,
            max_requests=max_requests,
            k=k,
            timeout=timeout,
        )

    report = run(ctx, go)
    echo_json(report.asdict()) if json_output else typer.echo(str(report))
