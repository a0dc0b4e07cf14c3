"""Embedded servers stop themselves when nobody uses them, and `kbrelease store status` lists every one of this user."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kbrelease.cli import app
from kbrelease.store.lite import clients_dir, ensure_server, list_servers, log_file, running_server, stop_server

pytestmark = pytest.mark.slow
runner = CliRunner()


def _wait_until_stopped(data_dir: Path, limit: float = 90.0) -> None:
    deadline = time.monotonic() + limit
    while running_server(data_dir) is not None:
        assert time.monotonic() < deadline, f"the server of {data_dir} is still running; its log:\n{log_file(data_dir).read_text()}"
        time.sleep(0.2)


def test_servers_are_listed_and_one_nobody_uses_stops_itself(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    servers = tmp_path / "servers"
    monkeypatch.setenv("KBRELEASE_SERVERS_DIR", str(servers))
    never, soon = tmp_path / "a" / "milvus", tmp_path / "b" / "milvus"
    cfg = tmp_path / "kbrelease.yaml"
    cfg.write_text(f"workspace: {tmp_path / 'a'}\nsources: []\n", encoding="utf-8")
    try:
        ensure_server(never, idle_stop_minutes=0, servers_dir=servers)
        ensure_server(soon, idle_stop_minutes=0.02, servers_dir=servers)  # 1.2 s

        listed = runner.invoke(app, ["store", "status", "--json", "-c", str(cfg)])
        assert listed.exit_code == 0, listed.output
        data = json.loads(listed.stdout)
        assert data["embedded_server"]["pid"] == running_server(never)["pid"]  # type: ignore[index]
        by_workspace = {s["workspace"]: s for s in data["servers"]}
        assert set(by_workspace) == {str(tmp_path / "a"), str(tmp_path / "b")}
        for folder, server in zip([never, soon], [by_workspace[str(tmp_path / "a")], by_workspace[str(tmp_path / "b")]], strict=True):
            assert (server["pid"], server["port"]) == (running_server(folder)["pid"], running_server(folder)["port"])  # type: ignore[index]
            assert server["data_dir"] == str(folder)
            assert server["rss_bytes"] > 20 << 20  # a real Milvus Lite process
            assert server["clients"] == [os.getpid()]  # this test process uses both
            assert server["idle_seconds"] == 0.0
        assert [by_workspace[str(tmp_path / f)]["idle_stop_minutes"] for f in "ab"] == [0, 0.02]
        text = runner.invoke(app, ["store", "status", "-c", str(cfg)]).stdout
        assert "embedded servers of this user: 2" in text and "never stops by itself" in text

        # The last process using `soon` goes away: it stops itself; `never` stays.
        (clients_dir(soon.resolve()) / str(os.getpid())).unlink()
        _wait_until_stopped(soon)
        assert "stopped (idle for 1.2 s)" in log_file(soon).read_text()
        assert [s["workspace"] for s in list_servers(servers)] == [str(tmp_path / "a")]

        stopped = runner.invoke(app, ["store", "stop", "--all", "--json", "-c", str(cfg)])
        assert json.loads(stopped.stdout) == {"stopped": [str(never.resolve())]}
        assert list_servers(servers) == []
    finally:
        stop_server(never)
        stop_server(soon)


def test_a_command_leaves_the_server_to_stop_when_idle(tmp_path: Path) -> None:
    """A real command starts the embedded server with store.idle_stop_minutes from the environment; after it exits, the server stops."""
    cfg = tmp_path / "kbrelease.yaml"
    cfg.write_text(f"workspace: {tmp_path / 'ws'}\nsources: []\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MILVUS_", "KBRELEASE_"))}
    env |= {"KBRELEASE_STORE_IDLE_STOP_MINUTES": "0.02", "KBRELEASE_SERVERS_DIR": str(tmp_path / "servers")}
    data_dir = tmp_path / "ws" / "milvus"
    try:
        done = subprocess.run([sys.executable, "-m", "kbrelease.cli", "status", "--json", "-c", str(cfg)], env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["live"] is None
        _wait_until_stopped(data_dir)
        assert "stopped (idle for 1.2 s)" in log_file(data_dir).read_text()
        assert list_servers(tmp_path / "servers") == []
    finally:
        stop_server(data_dir)
