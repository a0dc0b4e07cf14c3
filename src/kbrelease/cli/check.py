"""``kbrelease check``: incompatibilities that would break queries."""

from __future__ import annotations

from typing import Annotated

import typer

from kbrelease.cli._common import JsonOpt, echo_json, project


def register(root: typer.Typer) -> None:
    root.command("check")(check)


def check(
    ctx: typer.Context,
    service: Annotated[str | None, typer.Option("--service", help="Also check a running service at this base URL (its GET /api/v1/info).")] = None,
    timeout: Annotated[float, typer.Option("--timeout", min=0.1, help="Seconds to wait for the service.")] = 5.0,
    json_output: JsonOpt = False,
) -> None:
    """Compare the configured models, the data index, the live release and a service; exit 5 if queries would break."""
    from kbrelease.errors import CompatibilityError

    with project(ctx, json_output=True) as kb:  # no progress bars: nothing long runs
        report = kb.check(service, timeout)
    echo_json(report.asdict()) if json_output else typer.echo(str(report))
    if not report.ok:
        raise typer.Exit(CompatibilityError.exit_code)
