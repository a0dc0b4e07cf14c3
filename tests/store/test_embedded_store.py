"""The embedded default: no MILVUS_URI, several processes on one workspace, no lock errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from kbrelease.store.lite import running_server, stop_server

from helpers import write_config


@pytest.fixture
def embedded_project(tmp_path: Path, corpus: Path) -> Iterator[Path]:
    cfg = write_config(tmp_path, corpus)
    yield cfg
    stop_server(tmp_path / "ws" / "milvus")


def _kb(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MILVUS_")}
    return subprocess.run([sys.executable, "-m", "kbrelease.cli", "-c", str(cfg), *args], capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.slow
def test_separate_processes_share_the_embedded_store(embedded_project: Path, tmp_path: Path, corpus: Path) -> None:
    published = _kb(embedded_project, "publish", "--json")
    assert published.returncode == 0, published.stderr
    server = running_server(tmp_path / "ws" / "milvus")
    assert server is not None  # started on demand, still there for the next command

    # A second publish in one process while another process searches, again and again.
    (corpus / "text" / "extra.md").write_text("# Extra\n\nA page about the rooftop garden.\n", encoding="utf-8")
    results: list[subprocess.CompletedProcess[str]] = []

    def search_loop() -> None:
        for _ in range(3):
            results.append(_kb(embedded_project, "search", "connect to the VPN", "--json"))

    reader = threading.Thread(target=search_loop)
    reader.start()
    second = _kb(embedded_project, "publish", "--json")
    reader.join()

    assert second.returncode == 0, second.stderr
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
    assert all(json.loads(r.stdout)[0]["file"] == "it/vpn-setup.md" for r in results)
    assert "lock" not in "".join(r.stderr for r in results).lower()
    assert running_server(tmp_path / "ws" / "milvus") == server  # the same server served everyone

    status = json.loads(_kb(embedded_project, "status", "--json").stdout)
    assert status["live"] == "v2"

    stopped = _kb(embedded_project, "store", "stop")
    assert stopped.stdout.strip() == "stopped"
    assert running_server(tmp_path / "ws" / "milvus") is None
    again = _kb(embedded_project, "status", "--json")  # starts it again on demand, data intact
    assert json.loads(again.stdout)["live"] == "v2"
