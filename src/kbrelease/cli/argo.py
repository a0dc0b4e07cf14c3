"""``kbrelease argo ...``: render the Kubernetes/Argo deployment, run it locally, plan shards."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kbrelease.cli._common import JsonOpt, echo_json, load, project, run

app = typer.Typer(help="Run at scale: render Argo Workflows and Kubernetes objects from kbrelease.yaml, and try them locally.", no_args_is_help=True)


@app.command("render")
def render(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write the manifests into (for `kubectl apply -f`).")] = Path("k8s"),
    template_name: Annotated[
        str | None,
        typer.Option(
            "--template-name",
            help="Name of the WorkflowTemplate (default: deploy.workflow_template, else <deploy.name>-publish); "
            "bg-deploy keeps `argo submit --from workflowtemplate/bg-deploy` working.",
        ),
    ] = None,
    publish_schedule: Annotated[
        str | None, typer.Option("--publish-schedule", help="Cron schedule of a CronWorkflow that publishes (default: deploy.schedule.publish).")
    ] = None,
    monitor_schedule: Annotated[
        str | None, typer.Option("--monitor-schedule", help="Cron schedule of a CronWorkflow that runs the monitor (default: deploy.schedule.monitor).")
    ] = None,
    json_output: JsonOpt = False,
) -> None:
    """Render the WorkflowTemplate, CronWorkflows, ConfigMaps, PVC, RBAC and the search service from the config."""
    from kbrelease.api import KbRelease

    info = run(ctx, lambda: KbRelease(load(ctx)).render_kubernetes(out, template_name, publish_schedule, monitor_schedule))
    echo_json(info.asdict()) if json_output else typer.echo(str(info))


def _parameters(values: list[str]) -> dict[str, str]:
    out = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name:
            typer.echo(f"error: -p {item!r}: write NAME=VALUE, e.g. -p database-name=v1", err=True)
            raise typer.Exit(2)
        out[name] = value
    return out


@app.command("run-local")
def run_local(
    ctx: typer.Context,
    folder: Annotated[Path, typer.Argument(help="A folder written by `kbrelease argo render`.")],
    parameter: Annotated[list[str] | None, typer.Option("--parameter", "-p", help="Workflow parameter NAME=VALUE, e.g. database-name=v1.")] = None,
    workspace_dir: Annotated[Path, typer.Option("--workspace-dir", help="Local folder standing in for the workspace volume.")] = Path(".kbrelease-argo"),
    parallelism: Annotated[int | None, typer.Option("--parallelism", min=1, help="Most steps at once (default: the template's).")] = None,
    approve: Annotated[bool, typer.Option("--approve", help="Pass approval (suspend) steps; without it the run stops there.")] = False,
    json_output: JsonOpt = False,
) -> None:
    """Run the rendered workflow's steps on this machine as local processes, in dependency order, in parallel."""
    from kbrelease.deploy.local_run import LocalRunner

    params = _parameters(parameter or [])
    echo = (lambda line: typer.echo(line, err=True)) if not json_output else None
    runner = run(ctx, lambda: LocalRunner(folder, workspace_dir, params, parallelism, approve, echo=echo))
    info = run(ctx, runner.run)
    echo_json(info.asdict()) if json_output else typer.echo(str(info))
    if not info.succeeded:
        raise typer.Exit(1)


@app.command("shards")
def shards(
    ctx: typer.Context,
    release: Annotated[str, typer.Option("--release", "-r", help="A release prepared with `kbrelease build --release R --prepare`.")],
    source: Annotated[str, typer.Option("--source", "-s", help="Source name.")],
) -> None:
    """Print the shard list of one source as JSON (["1/3","2/3","3/3"]): the workflow fans out over it."""
    import json

    with project(ctx, json_output=True) as kb:
        items = kb.build_plan(release).shards(source)
    typer.echo(json.dumps(items))


@app.command("github")
def github(
    ctx: typer.Context,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="File to write (single, one-repo; default .github/workflows/kbrelease-data-index.yml), or folder (two-repo)."),
    ] = None,
    flow: Annotated[
        str,
        typer.Option(
            "--flow",
            help="single: sync and commit the whole index to data/<deploy.ci.bundle>; one-repo: each changed bundle spec to data/<bundle_name>; "
            "two-repo: the spec repository dispatches to the index repository (two files).",
        ),
    ] = "single",
) -> None:
    """Render the GitHub Actions workflow(s) that regenerate the data index and commit it to data/<bundle>."""
    from kbrelease.api import KbRelease
    from kbrelease.deploy.github import FLOWS

    if flow not in FLOWS:
        typer.echo(f"error: --flow {flow!r} must be one of {', '.join(FLOWS)}", err=True)
        raise typer.Exit(2)
    texts = run(ctx, lambda: KbRelease(load(ctx)).github_workflows(flow))  # type: ignore[arg-type]
    default = Path(".github/workflows")
    if flow == "two-repo":
        folder = out or default
        paths = {name: folder / name for name in texts}
    else:
        paths = {name: out or default / name for name in texts}
    for name, text in texts.items():
        paths[name].parent.mkdir(parents=True, exist_ok=True)
        paths[name].write_text(text, encoding="utf-8")
    if flow == "two-repo":
        spec, index = list(paths.values())
        typer.echo(f"wrote {spec} (commit it to the spec repository) and {index} (commit it to the index repository)")
    else:
        typer.echo(f"wrote {next(iter(paths.values()))}")


@app.command("diagram")
def diagram(
    ctx: typer.Context,
    folder: Annotated[Path, typer.Argument(help="A folder written by `kbrelease argo render`.")],
) -> None:
    """Print a Mermaid flowchart of the rendered workflow."""
    from kbrelease.deploy.dag import load as load_dag
    from kbrelease.deploy.diagram import mermaid

    dag, _ = run(ctx, lambda: load_dag(folder))
    typer.echo(mermaid(dag), nl=False)
