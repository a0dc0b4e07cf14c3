"""`kbrelease monitor`: one integrity check run, for cron or an Argo CronWorkflow."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kbrelease.cli._common import JsonOpt, echo_json, project

PROBLEMS_EXIT = 6  # 1-3 are errors, 4 a bad package, 5 an incompatibility, 75 transient


def register(app: typer.Typer) -> None:
    app.command("monitor")(monitor)


def monitor(
    ctx: typer.Context,
    sample: Annotated[str | None, typer.Option("--sample", help="Files per source to verify: a number or 'all' (default: monitor.checksum_sample).")] = None,
    no_alerts: Annotated[bool, typer.Option("--no-alerts", help="Only report: leave incidents and webhooks untouched.")] = False,
    metrics_file: Annotated[Path | None, typer.Option("--metrics-file", help="Also write Prometheus text format here (node_exporter textfile).")] = None,
    json_output: JsonOpt = False,
) -> None:
    """Check integrity once: completeness of the live release, checksums, sync delay, storage; alert once per incident.

    Exit code 0 when every check passes, 6 when one found a problem.
    """
    chosen: int | str | None = None
    if sample is not None:
        if sample != "all" and not (sample.isdigit() and int(sample) > 0):
            typer.echo(f"error: --sample {sample!r} must be a positive number or 'all'", err=True)
            raise typer.Exit(2)
        chosen = sample if sample == "all" else int(sample)
    with project(ctx, json_output) as kb:
        from kbrelease.monitor.monitor import Monitor

        registry = None
        if metrics_file is not None:
            from prometheus_client import CollectorRegistry

            registry = CollectorRegistry()
        report = Monitor(kb.cfg, kb.store, kb.registry, metrics=registry).run_once(alerts=not no_alerts, checksum_sample=chosen)
    if registry is not None and metrics_file is not None:
        from prometheus_client import write_to_textfile

        write_to_textfile(str(metrics_file), registry)
    echo_json(report.asdict()) if json_output else typer.echo(str(report))
    if not report.ok:
        raise typer.Exit(PROBLEMS_EXIT)
