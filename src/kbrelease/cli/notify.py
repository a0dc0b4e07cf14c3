"""``kbrelease notify``: post a workflow's result to the alert webhooks (the Argo exit handler's command)."""

from __future__ import annotations

from typing import Annotated

import typer

from kbrelease.cli._common import JsonOpt, echo_json, load, run


def register(app: typer.Typer) -> None:
    app.command("notify")(notify)


def notify(
    ctx: typer.Context,
    workflow: Annotated[str, typer.Option("--workflow", help="The workflow run's name ({{workflow.name}}).")],
    status: Annotated[str, typer.Option("--status", help="Its result: Succeeded, Failed or Error ({{workflow.status}}).")],
    release: Annotated[str | None, typer.Option("--release", help="The release it published ({{workflow.parameters.database-name}}).")] = None,
    failures: Annotated[str | None, typer.Option("--failures", help="Argo's {{workflow.failures}} JSON: the failed steps and their messages.")] = None,
    json_output: JsonOpt = False,
) -> None:
    """Post a workflow's result and failed steps to KBRELEASE_ALERT_WEBHOOKS; exit 1 when a webhook did not take it."""
    from kbrelease.monitor.notify import notify_workflow

    info = run(ctx, lambda: notify_workflow(load(ctx), workflow, status, release, failures))
    echo_json(info.asdict()) if json_output else typer.echo(str(info))
    if not info.ok:
        raise typer.Exit(1)
