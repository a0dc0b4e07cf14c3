"""``kbrelease ci ...``: the steps of the rendered GitHub workflows (``kbrelease argo github --flow``), one command each."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kbrelease.cli._common import JsonOpt, echo_json, load, run

app = typer.Typer(help="Steps of the CI workflows: find changed bundle specs, check a dispatch, restore and commit data/<bundle>.", no_args_is_help=True)
RepoOpt = Annotated[Path, typer.Option("--repo", help="The git repository (default: the current folder).")]


@app.command("changed-bundles")
def changed_bundles(
    ctx: typer.Context,
    after: Annotated[str, typer.Option("--after", help="Last commit of the push (github.sha).")],
    before: Annotated[
        str | None, typer.Option("--before", help="Commit before the push (github.event.before); none or zeros: the after commit's own changes.")
    ] = None,
    glob: Annotated[str, typer.Option("--glob", help="Bundle spec files (git glob pathspec).")] = "bundles/**/*.yaml",
    repo: RepoOpt = Path("."),
    spec_repository: Annotated[str | None, typer.Option("--spec-repository", help="owner/name added to each payload (two-repository flow).")] = None,
    github_output: Annotated[
        Path | None, typer.Option("--github-output", help="Append outputs bundles=<json>, count, invalid to this file ($GITHUB_OUTPUT).")
    ] = None,
) -> None:
    """List the bundle specs a push added or changed, as repository_dispatch payloads (JSON); exit 1 if some are invalid (the rest are listed)."""
    from kbrelease.deploy.ci import changed_bundles as find
    from kbrelease.deploy.ci import github_output as write_output

    result = run(ctx, lambda: find(repo, before, after, glob))
    if spec_repository:
        for item in result.bundles:
            item["spec_repository"] = spec_repository
    if github_output is not None:
        write_output(github_output, result)
    echo_json(result.bundles)
    for bad in result.invalid:
        # A GitHub annotation on the file, and the reason; the other bundles are dispatched anyway.
        typer.echo(f"::error file={bad['bundle_file']}::{bad['error'].splitlines()[0]}", err=True)
        typer.echo(bad["error"], err=True)
    if result.invalid:
        raise typer.Exit(1)


@app.command("check-payload")
def check_payload(
    ctx: typer.Context,
    bundle_file: Annotated[str, typer.Option("--bundle-file", help="The payload's bundle_file (bundles/.../<name>.yaml).")],
    bundle_name: Annotated[str, typer.Option("--bundle-name", help="The payload's bundle_name.")],
    spec_root: Annotated[Path, typer.Option("--spec-root", help="Checkout of the spec repository.")] = Path("."),
) -> None:
    """Check a dispatch payload (untrusted): a bundles/**.yaml file inside the spec checkout whose spec has that name."""
    from kbrelease.deploy.ci import check_payload as check

    path = run(ctx, lambda: check(spec_root, bundle_file, bundle_name))
    typer.echo(f"bundle {bundle_name}: {path}")


@app.command("restore-index")
def restore_index(
    ctx: typer.Context,
    bundle_name: Annotated[str, typer.Option("--bundle-name", help="Bundle whose branch data/<bundle_name> holds the previous index.")],
    repo: RepoOpt = Path("."),
    remote: Annotated[str, typer.Option("--remote", help="Git remote.")] = "origin",
) -> None:
    """Copy index/ of the branch data/<bundle_name> into the workspace, so unchanged files are not hashed again."""
    from kbrelease.deploy.ci import branch_of
    from kbrelease.deploy.ci import restore_index as restore

    found = run(ctx, lambda: restore(load(ctx), repo, bundle_name, remote))
    typer.echo(f"restored the data index from {branch_of(bundle_name)}" if found else f"no branch {branch_of(bundle_name)} yet: a first index")


@app.command("commit-index")
def commit_index(
    ctx: typer.Context,
    bundle_name: Annotated[str, typer.Option("--bundle-name", help="The resolved bundle to commit.")],
    spec_commit: Annotated[str | None, typer.Option("--spec-commit", help="Spec repository commit, named in the commit message.")] = None,
    repo: RepoOpt = Path("."),
    remote: Annotated[str, typer.Option("--remote", help="Git remote to push to.")] = "origin",
    push: Annotated[bool, typer.Option("--push/--no-push", help="Push the branch.")] = True,
    summary: Annotated[Path | None, typer.Option("--summary", help="Append a Markdown report here ($GITHUB_STEP_SUMMARY).")] = None,
    json_output: JsonOpt = False,
) -> None:
    """Commit the resolved bundle and the data index to the branch data/<bundle_name> (nothing when unchanged) and push it."""
    from kbrelease.deploy.ci import commit_index as commit

    done = run(ctx, lambda: commit(load(ctx), repo, bundle_name, spec_commit, remote, push))
    if summary is not None:
        with summary.open("a", encoding="utf-8") as fh:
            fh.write(done.markdown())
    if json_output:
        echo_json(done.asdict())
    else:
        state = f"committed {done.commit}" if done.changed else "unchanged"
        typer.echo(f"{done.branch}: bundle {done.bundle_name} {done.bundle_version} {state}{' and pushed' if done.pushed else ''}")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="ci")
