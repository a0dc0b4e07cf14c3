"""The container image recipe (parsed by Docker's own parser) and the rendered GitHub Actions workflow."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy.rendering import CONFIG, SECRETS, render_cli
from kbrelease import __version__

REPO = Path(__file__).resolve().parents[2]


def _instructions() -> list[Any]:
    dockerfile = pytest.importorskip("dockerfile", reason="the dev extra 'dockerfile' parses the Dockerfile with Docker's parser")
    return list(dockerfile.parse_file(str(REPO / "Dockerfile")))


def _stages(instructions: list[Any]) -> list[list[Any]]:
    stages: list[list[Any]] = []
    for ins in instructions:
        if ins.cmd == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(ins)
    return stages


def test_dockerfile_is_multi_stage_and_runs_as_a_fixed_non_root_user() -> None:
    instructions = _instructions()
    build, runtime = _stages(instructions)

    assert [s[0].value[-1] for s in (build, runtime)] == ["build", "runtime"]
    users = [i.value[0] for i in runtime if i.cmd == "USER"]
    assert users == ["10001:10001"]  # the uid the rendered manifests run as (RUN_AS_USER)
    assert [i.value for i in runtime if i.cmd == "ENTRYPOINT"] == [("kbrelease",)]
    copies = [i for i in runtime if i.cmd == "COPY"]
    assert [c.flags for c in copies] == [("--from=build",)]  # nothing but the built venv enters the final image
    assert not any(i.cmd == "RUN" and "pip install" in i.value[0] for i in runtime)


def test_dockerfile_pins_its_versions_and_has_cpu_and_gpu_variants() -> None:
    from kbrelease.deploy.settings import RUN_AS_USER

    instructions = _instructions()
    args = dict(i.value[0].split("=", 1) for i in instructions if i.cmd == "ARG" and "=" in i.value[0])

    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+", args["PYTHON_IMAGE"])  # a full version, never 'latest'
    assert args["TORCH_VERSION"] == "2.13.0"
    assert args["VARIANT"] == "cpu"
    assert args["TORCH_INDEX_CPU"].endswith("/whl/cpu")
    install = next(i.value[0] for i in instructions if i.cmd == "RUN" and "torch==" in i.value[0])
    assert 'cpu) index="$TORCH_INDEX_CPU"' in install and 'gpu) index="$TORCH_INDEX_GPU"' in install
    assert "pip install -c /tmp/constraints.txt ." in install  # everything else from the tested constraint set
    assert RUN_AS_USER == 10001


def test_dockerignore_sends_only_what_the_image_needs() -> None:
    lines = [line for line in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines() if line and not line.startswith("#")]

    assert lines[0] == "*"
    assert {"!pyproject.toml", "!constraints.txt", "!README.md", "!LICENSE", "!src/"} <= set(lines)


def test_rendered_manifests_use_the_configured_image(rendered: Path) -> None:
    texts = "\n".join(p.read_text(encoding="utf-8") for p in rendered.glob("*.yaml"))
    images = set(re.findall(r"image: (\S+)", texts))

    assert images == {"registry.example.com/kbrelease:1.2.3", "registry.example.com/kbrelease:1.2.3-gpu"}


def test_default_image_tag_is_the_kbrelease_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = render_cli(tmp_path, CONFIG.replace('  tag: "1.2.3"\n', ""), monkeypatch)

    assert f"image: registry.example.com/kbrelease:{__version__}\n" in (out / "20-search-deployment.yaml").read_text(encoding="utf-8")


def _github(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, dict[str, Any]]:
    from typer.testing import CliRunner

    from kbrelease.cli import app

    cfg = tmp_path / "kbrelease.yaml"
    cfg.write_text(CONFIG + "  ci:\n    bundle: weekly\n    install: kbrelease==1.2.3\n", encoding="utf-8")
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    out = tmp_path / ".github" / "workflows" / "kbrelease-data-index.yml"
    result = CliRunner().invoke(app, ["-c", str(cfg), "argo", "github", "-o", str(out)])
    assert result.exit_code == 0, result.output
    return out, yaml.safe_load(out.read_text(encoding="utf-8"))


def test_github_workflow_regenerates_the_data_index_on_bundle_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out, workflow = _github(tmp_path, monkeypatch)

    assert workflow["on"]["push"]["paths"] == ["kbrelease.yaml", "bundles/**"]
    assert workflow["permissions"] == {"contents": "write"}
    job = workflow["jobs"]["data-index"]
    runs = [s.get("run", "") for s in job["steps"]]
    assert "python -m pip install 'kbrelease==1.2.3'" in runs
    assert "kbrelease sync --index-only --json" in runs
    restore, commit = runs[3], runs[5]
    assert 'git fetch --depth 1 origin "data/weekly"' in restore  # unchanged files are not hashed again
    assert 'git push origin "data/weekly"' in commit
    assert "git diff --cached --quiet" in commit  # no empty commits
    assert all(s["uses"].split("@")[1].startswith("v") for s in job["steps"] if "uses" in s)
    assert job["env"]["AWS_SECRET_ACCESS_KEY"] == "${{ secrets.AWS_SECRET_ACCESS_KEY }}"
    text = out.read_text(encoding="utf-8")
    assert not [name for name, value in SECRETS.items() if value in text]


def test_github_workflow_matches_the_github_workflow_schema(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("check_jsonschema", reason="the dev extra 'check-jsonschema' vendors GitHub's workflow schema")
    out, _ = _github(tmp_path, monkeypatch)

    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows", str(out)], capture_output=True, text=True, check=False
    )

    assert result.returncode == 0, result.stdout + result.stderr


def test_the_commit_script_is_valid_shell(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, workflow = _github(tmp_path, monkeypatch)

    for step in workflow["jobs"]["data-index"]["steps"]:
        if "run" in step:
            result = subprocess.run(["bash", "-n"], input=step["run"], capture_output=True, text=True, check=False)
            assert result.returncode == 0, (step["name"], result.stderr)
