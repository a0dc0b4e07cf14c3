"""The GitHub Actions workflow that keeps the data index in git (seed 003's automation).

On a push that changes a bundle or the config, CI runs ``kbrelease sync
--index-only`` (files are hashed where they are; no mirror) and commits the
regenerated data index (``bundle.yaml`` + one Parquet per source) to the
branch ``data/<bundle>``. The previous index is restored from that branch
first, so unchanged files are not hashed again. Secrets are referenced as
``${{ secrets.NAME }}``, never written.
"""

from __future__ import annotations

from typing import Any

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


class _Dumper(yaml.SafeDumper):
    """Shell scripts as ``|`` blocks, readable in the rendered file."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_Dumper.add_representer(str, _str)


def github_workflow_yaml(cfg: Config) -> str:
    header = "# Rendered by `kbrelease argo github` from kbrelease.yaml (deploy.ci); change that and render again.\n"
    return header + yaml.dump(github_workflow(cfg), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=200)
