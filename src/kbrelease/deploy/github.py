"""The GitHub Actions workflows that keep the data index in git (seed 003's automation).

Three flows (``kbrelease argo github --flow``):

* ``single``: on a push that changes a bundle or the config, sync and commit
  the whole data index to ``data/<deploy.ci.bundle>`` (below);
* ``one-repo``: on a push to the bundle specs, each changed spec is resolved
  (``kbrelease index --bundle``) and committed to ``data/<bundle_name>``;
* ``two-repo``: the seed's two repositories: the spec repository finds the
  changed specs and sends one ``repository_dispatch`` each (payload: bundle
  file, type, name and version, spec commit) to the index repository, whose
  workflow resolves that bundle and commits it to ``data/<bundle_name>``.

Every shell step is one ``kbrelease`` command (:mod:`kbrelease.deploy.ci`);
event data reaches them only through ``env:``, never inside a script.

On a push that changes a bundle or the config, CI runs ``kbrelease sync
--index-only`` (files are hashed where they are; no mirror) and commits the
regenerated data index (``bundle.yaml`` + one Parquet per source) to the
branch ``data/<bundle>``. The previous index is restored from that branch
first, so unchanged files are not hashed again. Secrets are referenced as
``${{ secrets.NAME }}``, never written.
"""

from __future__ import annotations

from typing import Any, Literal

import yaml

from kbrelease.config import Config
from kbrelease.config.secrets import keys_for, url_credentials
from kbrelease.errors import ConfigError

WORKSPACE = ".kbrelease-ci"

_RESTORE = """\
set -euo pipefail
mkdir -p {ws}
if git ls-remote --exit-code --heads origin "{branch}" >/dev/null; then
  git fetch --depth 1 origin "{branch}"
  git archive FETCH_HEAD index | tar -x -C {ws}
fi
"""

_COMMIT = """\
set -euo pipefail
git config user.name "kbrelease-bot"
git config user.email "kbrelease-bot@users.noreply.github.com"
DEST=$(mktemp -d)
if git ls-remote --exit-code --heads origin "{branch}" >/dev/null; then
  git fetch --depth 1 origin "{branch}"
  git worktree add -B "{branch}" "$DEST" FETCH_HEAD
else
  git worktree add --orphan -b "{branch}" "$DEST"
fi
rm -rf "$DEST/index"
cp -r {ws}/index "$DEST/index"
rm -f "$DEST/index/.bundle.lock"
cd "$DEST"
git add -A index
if git diff --cached --quiet; then
  echo "data index unchanged"
else
  git commit -m "data index of {bundle} from ${{GITHUB_SHA}}"
  git push origin "{branch}"
fi
"""


def github_workflow(cfg: Config) -> dict[str, Any]:
    """The workflow as a dict (``yaml.safe_dump`` it to ``.github/workflows/``)."""
    ci = cfg.deploy.ci
    branch = f"data/{ci.bundle}"
    secrets = {key: f"${{{{ secrets.{key} }}}}" for key in keys_for("ci")}
    env = {"KBRELEASE_CONFIG": ci.config, "KBRELEASE_WORKSPACE": WORKSPACE, **secrets}
    if cfg.s3.endpoint_url and url_credentials(cfg.s3.endpoint_url):
        raise ConfigError(
            "s3.endpoint_url carries credentials; a workflow file is not secret: put them in the repository secrets AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY"
        )
    if cfg.s3.endpoint_url:
        env["S3_ENDPOINT_URL"] = cfg.s3.endpoint_url
    return {
        "name": "kbrelease data index",
        "on": {"push": {"paths": list(ci.paths)}, "workflow_dispatch": {}},
        "permissions": {"contents": "write"},
        # One index update at a time per branch: pushes must not race on data/<bundle>.
        "concurrency": {"group": "kbrelease-data-index-${{ github.ref }}", "cancel-in-progress": False},
        "jobs": {
            "data-index": {
                "runs-on": "ubuntu-latest",
                "timeout-minutes": 120,
                "env": env,
                "steps": [
                    {"name": "Check out", "uses": "actions/checkout@v4", "with": {"fetch-depth": 0}},
                    {"name": "Set up Python", "uses": "actions/setup-python@v5", "with": {"python-version": ci.python}},
                    {"name": "Install kbrelease", "run": f"python -m pip install '{ci.install}'"},
                    {"name": f"Restore the previous data index from {branch}", "run": _RESTORE.format(ws=WORKSPACE, branch=branch)},
                    {"name": "Write the data index (files hashed in place, no mirror)", "run": "kbrelease sync --index-only --json"},
                    {"name": f"Commit it to {branch}", "run": _COMMIT.format(ws=WORKSPACE, branch=branch, bundle=ci.bundle)},
                ],
            }
        },
    }


# --- seed 003's flow: changed bundle specs → repository_dispatch → data/<bundle_name> ------------

Flow = Literal["single", "one-repo", "two-repo"]
FLOWS: tuple[Flow, ...] = ("single", "one-repo", "two-repo")
SPEC_DIR = "spec"
"""Where the index repository's job checks out the spec repository at the dispatched commit."""
_CHECKOUT = "actions/checkout@v4"


def _base_env(cfg: Config) -> dict[str, str]:
    ci = cfg.deploy.ci
    env = {"KBRELEASE_CONFIG": ci.config, "KBRELEASE_WORKSPACE": WORKSPACE, **{k: f"${{{{ secrets.{k} }}}}" for k in keys_for("ci")}}
    if cfg.s3.endpoint_url and url_credentials(cfg.s3.endpoint_url):
        raise ConfigError(
            "s3.endpoint_url carries credentials; a workflow file is not secret: put them in the repository secrets AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY"
        )
    if cfg.s3.endpoint_url:
        env["S3_ENDPOINT_URL"] = cfg.s3.endpoint_url
    return env


def _setup(cfg: Config) -> list[dict[str, Any]]:
    ci = cfg.deploy.ci
    return [
        {"name": "Set up Python", "uses": "actions/setup-python@v5", "with": {"python-version": ci.python}},
        {"name": "Install kbrelease", "run": f"python -m pip install '{ci.install}'"},
    ]


def _changed_job(cfg: Config, spec_repository: bool) -> dict[str, Any]:
    """Finds the bundle specs the push changed (``kbrelease ci changed-bundles``); its outputs feed a matrix."""
    ci = cfg.deploy.ci
    run = f'kbrelease ci changed-bundles --before "$BEFORE" --after "$AFTER" --glob \'{ci.bundle_glob}\' --github-output "$GITHUB_OUTPUT"'
    if spec_repository:
        run += ' --spec-repository "$GITHUB_REPOSITORY"'
    return {
        "runs-on": "ubuntu-latest",
        "timeout-minutes": 15,
        "outputs": {"bundles": "${{ steps.changed.outputs.bundles }}", "count": "${{ steps.changed.outputs.count }}"},
        "steps": [
            {"name": "Check out", "uses": _CHECKOUT, "with": {"fetch-depth": 0}},
            *_setup(cfg),
            {
                "name": "Find the changed bundle specs",
                "id": "changed",
                # Expressions only in env: the script itself never interpolates event data.
                "env": {"BEFORE": "${{ github.event.before }}", "AFTER": "${{ github.sha }}"},
                "run": run,
            },
        ],
    }


_FAN_OUT = "${{ always() && needs.changed-bundles.outputs.count != '' && needs.changed-bundles.outputs.count != '0' }}"
_MATRIX = {"fail-fast": False, "matrix": {"bundle": "${{ fromJSON(needs.changed-bundles.outputs.bundles) }}"}}


def index_steps(cfg: Config, spec_dir: str) -> list[dict[str, Any]]:
    """The index side's steps after checkout and setup: check the payload, restore, sync, resolve, commit and report.

    They read ``BUNDLE_FILE``, ``BUNDLE_NAME`` and ``SPEC_COMMIT`` from the job's environment.
    """
    return [
        {
            "name": "Check the dispatched bundle",
            "run": f'kbrelease ci check-payload --spec-root {spec_dir} --bundle-file "$BUNDLE_FILE" --bundle-name "$BUNDLE_NAME"',
        },
        {"name": "Restore the previous data index from data/<bundle_name>", "run": 'kbrelease ci restore-index --bundle-name "$BUNDLE_NAME"'},
        {"name": "Write the data index (files hashed in place, no mirror)", "run": "kbrelease sync --index-only --json"},
        {"name": "Resolve the bundle", "run": f'kbrelease index --bundle "{spec_dir}/$BUNDLE_FILE" --json'},
        {
            "name": "Commit it to data/<bundle_name> and report",
            "run": 'kbrelease ci commit-index --bundle-name "$BUNDLE_NAME" --spec-commit "$SPEC_COMMIT" --summary "$GITHUB_STEP_SUMMARY" --json',
        },
    ]


def _payload_env(source: str) -> dict[str, str]:
    return {
        "BUNDLE_FILE": f"${{{{ {source}.bundle_file }}}}",
        "BUNDLE_NAME": f"${{{{ {source}.bundle_name }}}}",
        "SPEC_COMMIT": f"${{{{ {source}.spec_repo_commit }}}}",
    }


def one_repo_workflow(cfg: Config) -> dict[str, Any]:
    """Specs and data branches in one repository: a push to the specs indexes each changed bundle into data/<bundle_name>."""
    ci = cfg.deploy.ci
    job = {
        "needs": "changed-bundles",
        "if": _FAN_OUT,
        "runs-on": "ubuntu-latest",
        "timeout-minutes": 120,
        "strategy": _MATRIX,
        # One index update at a time per bundle: runs must not race on data/<bundle_name>.
        "concurrency": {"group": "kbrelease-data-${{ matrix.bundle.bundle_name }}", "cancel-in-progress": False},
        "env": {**_base_env(cfg), **_payload_env("matrix.bundle")},
        "steps": [{"name": "Check out", "uses": _CHECKOUT, "with": {"fetch-depth": 0}}, *_setup(cfg), *index_steps(cfg, ".")],
    }
    return {
        "name": "kbrelease data index of changed bundles",
        "on": {"push": {"paths": [ci.bundle_glob]}},
        "permissions": {"contents": "write"},
        "jobs": {"changed-bundles": _changed_job(cfg, spec_repository=False), "generate-index": job},
    }


def spec_repo_workflow(cfg: Config) -> dict[str, Any]:
    """The spec repository's side: changed bundle specs → one repository_dispatch each to the index repository."""
    ci = cfg.deploy.ci
    if not ci.index_repository:
        raise ConfigError("deploy.ci.index_repository is not set; name the index repository (owner/name) that gets the dispatch")
    dispatch = {
        "needs": "changed-bundles",
        "if": _FAN_OUT,
        "runs-on": "ubuntu-latest",
        "timeout-minutes": 10,
        "strategy": _MATRIX,
        "steps": [
            {
                "name": "Trigger the data index of ${{ matrix.bundle.bundle_name }}",
                "uses": "peter-evans/repository-dispatch@v3",
                "with": {
                    "token": f"${{{{ secrets.{ci.dispatch_token_secret} }}}}",
                    "repository": ci.index_repository,
                    "event-type": ci.event_type,
                    "client-payload": "${{ toJSON(matrix.bundle) }}",
                },
            }
        ],
    }
    return {
        "name": "kbrelease bundle dispatch",
        "on": {"push": {"paths": [ci.bundle_glob]}},
        "permissions": {"contents": "read"},
        "jobs": {"changed-bundles": _changed_job(cfg, spec_repository=True), "dispatch": dispatch},
    }


def index_repo_workflow(cfg: Config) -> dict[str, Any]:
    """The index repository's side: on the dispatch, resolve that bundle and commit it to data/<bundle_name>."""
    ci = cfg.deploy.ci
    if not ci.spec_repository:
        raise ConfigError("deploy.ci.spec_repository is not set; name the spec repository (owner/name) the bundle specs are checked out from")
    payload = "github.event.client_payload"
    spec_checkout = {
        "name": "Check out the bundle spec at the dispatched commit",
        "uses": _CHECKOUT,
        # The repository is the configured one, never the payload's: only the commit comes from the dispatch.
        "with": {
            "repository": ci.spec_repository,
            "ref": f"${{{{ {payload}.spec_repo_commit }}}}",
            "path": SPEC_DIR,
            "token": f"${{{{ secrets.{ci.spec_token_secret} }}}}",
        },
    }
    job = {
        "runs-on": "ubuntu-latest",
        "timeout-minutes": 120,
        "env": {**_base_env(cfg), **_payload_env(payload)},
        "steps": [{"name": "Check out", "uses": _CHECKOUT, "with": {"fetch-depth": 0}}, spec_checkout, *_setup(cfg), *index_steps(cfg, SPEC_DIR)],
    }
    return {
        "name": "kbrelease generate data index",
        "on": {"repository_dispatch": {"types": [ci.event_type]}},
        "permissions": {"contents": "write"},
        "concurrency": {"group": f"kbrelease-data-${{{{ {payload}.bundle_name }}}}", "cancel-in-progress": False},
        "jobs": {"generate-index": job},
    }


def workflows(cfg: Config, flow: Flow = "single") -> dict[str, dict[str, Any]]:
    """File name → workflow of a flow. ``two-repo``: the first goes into the spec repository, the second into the index repository."""
    if flow == "single":
        return {"kbrelease-data-index.yml": github_workflow(cfg)}
    if flow == "one-repo":
        return {"kbrelease-data-index.yml": one_repo_workflow(cfg)}
    if flow == "two-repo":
        return {"kbrelease-bundle-dispatch.yml": spec_repo_workflow(cfg), "kbrelease-generate-index.yml": index_repo_workflow(cfg)}
    raise ConfigError(f"unknown flow {flow!r}; use one of {', '.join(FLOWS)}")


class _Dumper(yaml.SafeDumper):
    """Shell scripts as ``|`` blocks, readable in the rendered file."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_Dumper.add_representer(str, _str)


HEADER = "# Rendered by `kbrelease argo github` from kbrelease.yaml (deploy.ci); change that and render again.\n"


def dump(workflow: dict[str, Any]) -> str:
    return HEADER + yaml.dump(workflow, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=200)


def github_workflow_yaml(cfg: Config) -> str:
    return dump(github_workflow(cfg))


def workflows_yaml(cfg: Config, flow: Flow = "single") -> dict[str, str]:
    """:func:`workflows` as YAML texts."""
    return {name: dump(workflow) for name, workflow in workflows(cfg, flow).items()}
