"""Seed 003's CI automation, rendered and run: a push to bundles/** in the spec repository finds the changed
specs and dispatches each to the index repository, whose job resolves the bundle with `kbrelease index
--bundle` and commits it to data/<bundle_name>. The workflows are checked against GitHub's schema; their
shell steps run here, in real git repositories, with GitHub's expressions filled in from the event."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from kbrelease import load_config
from kbrelease.cli import app
from kbrelease.deploy.ci import check_payload, commit_index, restore_index
from kbrelease.errors import KbReleaseError

from data_workspace import SPEC, make_files, write_config

pytestmark = pytest.mark.slow
SRC = Path(__file__).resolve().parents[2] / "src"
CI = "  ci:\n    spec_repository: company/DataSpecHub\n    index_repository: company/DataIndexHub\n    install: kbrelease==0.1.0\n"
_EXPR = re.compile(r"\$\{\{\s*([A-Za-z0-9_.-]+)\s*\}\}")


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


def _render(tmp_path: Path, flow: str) -> dict[str, dict[str, Any]]:
    cfg = write_config(tmp_path, "deploy:\n" + CI)
    out = tmp_path / "rendered" / flow
    target = out if flow == "two-repo" else out / "workflow.yml"
    result = CliRunner().invoke(app, ["-c", str(cfg), "argo", "github", "--flow", flow, "-o", str(target)])
    assert result.exit_code == 0, result.output
    return {p.name: yaml.safe_load(p.read_text(encoding="utf-8")) for p in sorted(out.glob("*.yml"))}


def _fill(value: str, ctx: dict[str, Any]) -> str:
    """GitHub's ${{ a.b.c }} from ``ctx``; an expression the test does not know fails the test."""

    def one(m: re.Match[str]) -> str:
        node: Any = ctx
        for part in m.group(1).split("."):
            node = node[part]
        return str(node)

    return _EXPR.sub(one, value)


def _shell_env(tmp_path: Path, extra: dict[str, str]) -> dict[str, str]:
    """A runner's environment: `kbrelease` on PATH (this checkout's), a git identity, $GITHUB_* files."""
    bin_dir = tmp_path / "bin"
    if not bin_dir.exists():
        bin_dir.mkdir()
        shim = bin_dir / "kbrelease"
        shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m kbrelease.cli "$@"\n', encoding="utf-8")
        shim.chmod(0o755)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("KBRELEASE_", "GIT_"))}
    return base | {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(SRC), "HOME": str(tmp_path)} | extra


def _run_steps(steps: list[dict[str, Any]], cwd: Path, env: dict[str, str], uses: Any) -> list[subprocess.CompletedProcess[str]]:
    done = []
    for step in steps:
        if "uses" in step:
            uses(step)
            continue
        if step["run"].startswith("python -m pip install"):
            continue  # kbrelease is this checkout (on PATH)
        assert "${{" not in step["run"], f"{step['name']}: event data must reach scripts through env:, not inside them"
        step_env = env | {k: str(v) for k, v in (step.get("env") or {}).items()}
        result = subprocess.run(["bash", "-eo", "pipefail", "-c", step["run"]], cwd=cwd, env=step_env, capture_output=True, text=True, check=False)
        assert result.returncode == 0, (step["name"], result.stdout, result.stderr)
        done.append(result)
    return done


def _spec_repo(tmp_path: Path) -> tuple[Path, str, str]:
    """The spec repository: a first commit, then one that adds a bundle spec (and a broken one)."""
    repo = tmp_path / "DataSpecHub"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "config", "user.name", "t")
    _git(repo, "config", "user.email", "t@example.com")
    (repo / "README.md").write_text("specs\n", encoding="utf-8")
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "start")
    before = _git(repo, "rev-parse", "HEAD")
    (repo / "bundles" / "weekly").mkdir(parents=True)
    (repo / "bundles" / "weekly" / "weekly_docs.yaml").write_text(SPEC, encoding="utf-8")
    (repo / "bundles" / "weekly" / "broken.yaml").write_text("version: v1\nsources: []\n", encoding="utf-8")
    (repo / "notes.yaml").write_text("not a bundle\n", encoding="utf-8")
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "weekly docs bundle")
    return repo, before, _git(repo, "rev-parse", "HEAD")


def _index_repo(tmp_path: Path, name: str) -> tuple[Path, Path]:
    """A bare remote and its checkout holding kbrelease.yaml (sources on this machine)."""
    make_files(tmp_path / "src")
    cfg = write_config(tmp_path)
    bare = tmp_path / f"{name}.git"
    _git(tmp_path, "init", "-q", "--bare", "-b", "main", str(bare))
    work = tmp_path / name
    subprocess.run(["git", "clone", "-q", str(bare), str(work)], check=True, capture_output=True)
    _git(work, "config", "user.name", "t")
    _git(work, "config", "user.email", "t@example.com")
    (work / "kbrelease.yaml").write_text(cfg.read_text(encoding="utf-8"), encoding="utf-8")
    _git(work, "add", ".")
    _git(work, "commit", "-qm", "config")
    _git(work, "push", "-q", "origin", "main")
    return work, bare


def test_the_rendered_workflows_match_githubs_schema(tmp_path: Path) -> None:
    pytest.importorskip("check_jsonschema", reason="the dev extra 'check-jsonschema' vendors GitHub's workflow schema")
    files = []
    for flow in ("one-repo", "two-repo"):
        _render(tmp_path, flow)
        files += sorted((tmp_path / "rendered" / flow).glob("*.yml"))
    assert len(files) == 3

    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows", *map(str, files)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_two_repositories_push_dispatch_resolve_and_commit_to_the_bundle_branch(tmp_path: Path) -> None:
    workflows = _render(tmp_path, "two-repo")
    spec_side, index_side = workflows["kbrelease-bundle-dispatch.yml"], workflows["kbrelease-generate-index.yml"]
    assert spec_side["on"] == {"push": {"paths": ["bundles/**/*.yaml"]}}
    assert index_side["on"] == {"repository_dispatch": {"types": ["generate-data-index"]}}
    spec_repo, before, after = _spec_repo(tmp_path)

    # --- the spec repository: find the changed bundles -----------------------------------
    outputs = tmp_path / "github_output"
    event = {"github": {"sha": after, "event": {"before": before}}}
    find = spec_side["jobs"]["changed-bundles"]["steps"][-1]
    step_env = _shell_env(tmp_path, {"GITHUB_OUTPUT": str(outputs), "GITHUB_REPOSITORY": "company/DataSpecHub"})
    step_env |= {k: _fill(v, event) for k, v in find["env"].items()}
    found = subprocess.run(["bash", "-c", find["run"]], cwd=spec_repo, env=step_env, capture_output=True, text=True, check=False)

    assert found.returncode == 1, found.stderr  # the broken spec fails the job; the good one is dispatched anyway
    assert "::error file=bundles/weekly/broken.yaml::" in found.stderr
    lines = dict(line.split("=", 1) for line in outputs.read_text(encoding="utf-8").splitlines())
    assert (lines["count"], lines["invalid"]) == ("1", "1")
    (payload,) = json.loads(lines["bundles"])
    assert payload == {
        "bundle_file": "bundles/weekly/weekly_docs.yaml",
        "bundle_type": "weekly",
        "bundle_name": "weekly_docs",
        "bundle_version": "v1.0.0-2025.23",
        "spec_repo_commit": after,
        "spec_repository": "company/DataSpecHub",
    }
    dispatch = spec_side["jobs"]["dispatch"]
    assert "always()" in dispatch["if"]
    (send,) = dispatch["steps"]
    assert send["uses"].startswith("peter-evans/repository-dispatch@")
    assert send["with"] == {
        "token": "${{ secrets.DATAINDEX_TRIGGER_TOKEN }}",
        "repository": "company/DataIndexHub",
        "event-type": "generate-data-index",
        "client-payload": "${{ toJSON(matrix.bundle) }}",  # the payload is the matrix item, as found above
    }

    # --- the index repository: the dispatched job ----------------------------------------
    work, bare = _index_repo(tmp_path, "DataIndexHub")
    job = index_side["jobs"]["generate-index"]
    ctx = {"github": {"event": {"client_payload": payload}}, "secrets": {}}
    summary = tmp_path / "summary.md"
    env = _shell_env(tmp_path, {k: _fill(str(v), ctx | {"secrets": dict.fromkeys(re.findall(r"secrets\.(\w+)", str(v)), "")}) for k, v in job["env"].items()})
    env["GITHUB_STEP_SUMMARY"] = str(summary)

    def checkout(step: dict[str, Any]) -> None:
        if step["with"].get("path") == "spec":  # actions/checkout of the configured spec repository at the dispatched commit
            assert step["with"]["repository"] == "company/DataSpecHub"
            assert _fill(step["with"]["ref"], ctx) == after
            subprocess.run(["git", "clone", "-q", str(spec_repo), str(work / "spec")], check=True)
            _git(work / "spec", "checkout", "-q", after)

    first = _run_steps(job["steps"], work, env, checkout)
    assert "no branch data/weekly_docs yet" in first[1].stdout
    committed = json.loads(first[-1].stdout)
    assert committed["branch"] == "data/weekly_docs" and committed["changed"] and committed["pushed"]
    assert _git(bare, "rev-parse", "data/weekly_docs") == committed["commit"]
    bundle = yaml.safe_load(_git(bare, "show", "data/weekly_docs:bundles/weekly_docs/v1.0.0-2025.23/bundle.yaml"))
    assert bundle["meta"]["bundle_name"] == "weekly_docs"
    assert bundle["meta"]["spec_source"]["commit"] == after and bundle["meta"]["spec_source"]["file"] == "bundles/weekly/weekly_docs.yaml"
    assert {s["channel"] for s in bundle["data_manifest"]} == {"docs", "pictures"}
    assert _git(bare, "show", "data/weekly_docs:bundles/weekly_docs/LATEST") == "v1.0.0-2025.23"
    assert "index/bundle.yaml" in _git(bare, "ls-tree", "-r", "--name-only", "data/weekly_docs")
    assert "Data index of bundle `weekly_docs` v1.0.0-2025.23" in summary.read_text(encoding="utf-8")

    # A fresh runner restores the index from the branch; the same content again commits nothing.
    cfg = load_config(work / "kbrelease.yaml", env={"KBRELEASE_WORKSPACE": str(tmp_path / "fresh")})
    assert restore_index(cfg, work, "weekly_docs")
    assert (tmp_path / "fresh" / "index" / "bundle.yaml").read_bytes() == (work / ".kbrelease-ci" / "index" / "bundle.yaml").read_bytes()
    same = commit_index(load_config(work / "kbrelease.yaml", env={"KBRELEASE_WORKSPACE": str(work / ".kbrelease-ci")}), work, "weekly_docs", after)
    assert (same.changed, same.commit) == (False, committed["commit"])
    assert _git(bare, "rev-parse", "data/weekly_docs") == committed["commit"]
    with pytest.raises(KbReleaseError, match=r"bundle_file '\.\./x\.yaml' has a '\.\.' part"):
        check_payload(work / "spec", "../x.yaml", "weekly_docs")
    with pytest.raises(KbReleaseError, match="names bundle 'weekly_docs', the dispatch payload says 'other'"):
        check_payload(work / "spec", "bundles/weekly/weekly_docs.yaml", "other")


def test_one_repository_finds_its_changed_bundles_and_runs_the_same_index_steps(tmp_path: Path) -> None:
    (workflow,) = _render(tmp_path, "one-repo").values()
    two = _render(tmp_path, "two-repo")["kbrelease-generate-index.yml"]["jobs"]["generate-index"]
    spec_repo, _, after = _spec_repo(tmp_path)

    outputs = tmp_path / "out"
    find = workflow["jobs"]["changed-bundles"]["steps"][-1]
    env = _shell_env(tmp_path, {"GITHUB_OUTPUT": str(outputs), "BEFORE": "0" * 40, "AFTER": after})  # a new branch: the head commit's changes
    subprocess.run(["bash", "-c", find["run"]], cwd=spec_repo, env=env, check=False, capture_output=True)
    (item,) = json.loads(dict(line.split("=", 1) for line in outputs.read_text(encoding="utf-8").splitlines())["bundles"])
    assert item["bundle_file"] == "bundles/weekly/weekly_docs.yaml" and "spec_repository" not in item

    job = workflow["jobs"]["generate-index"]
    assert job["strategy"]["matrix"]["bundle"] == "${{ fromJSON(needs.changed-bundles.outputs.bundles) }}"
    assert job["env"]["BUNDLE_NAME"] == "${{ matrix.bundle.bundle_name }}"
    # The index steps are the two-repository job's, reading the spec from this checkout instead of spec/.
    ours = [s["run"] for s in job["steps"] if "run" in s]
    theirs = [s["run"].replace("--spec-root spec", "--spec-root .").replace('"spec/', '"./') for s in two["steps"] if "run" in s]
    assert ours == theirs
