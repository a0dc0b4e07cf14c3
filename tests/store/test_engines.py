"""Store engines: choosing one (store.engine), the advice past the embedded store's size, and `store migrate`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from kbrelease import KbRelease, load_config
from kbrelease.cli import app
from kbrelease.config import record_engine
from kbrelease.errors import ConfigError, StoreError
from kbrelease.store.engines import ADVISE_ROWS, LATENCY_GOAL_MS, MIGRATE_COMMAND, advice, index_for, lite_p50_ms
from kbrelease.store.milvus_local import INSTALL, MilvusStandalone

runner = CliRunner()


def _config(tmp_path: Path, corpus: Path, extra: str = "") -> Path:
    path = tmp_path / "kbrelease.yaml"
    path.write_text(
        f"workspace: {tmp_path / 'ws'}\nsources:\n  - name: docs\n    path: {corpus / 'text'}\n    modality: text\nmonitor:\n  in_service: false\n{extra}",
        encoding="utf-8",
    )
    return path


# --- choosing the engine -------------------------------------------------------------


def test_engine_defaults_and_folders(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    lite = load_config(env={"KBRELEASE_WORKSPACE": str(ws)})
    assert (lite.store_engine, lite.milvus_uri) == ("lite", str(ws / "milvus"))
    server = load_config(env={"KBRELEASE_WORKSPACE": str(ws), "MILVUS_URI": "http://127.0.0.1:19530"})
    assert (server.store_engine, server.milvus_uri) == ("server", "http://127.0.0.1:19530")
    local = load_config(env={"KBRELEASE_WORKSPACE": str(ws), "KBRELEASE_STORE_ENGINE": "milvus-local", "KBRELEASE_ENV": "dev"})
    assert (local.store_engine, local.milvus_uri) == ("milvus-local", str(ws / "milvus-local-dev"))


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"KBRELEASE_STORE_ENGINE": "server"}, "names no server"),
        (
            {"KBRELEASE_STORE_ENGINE": "milvus-local", "MILVUS_URI": "http://u:secret@h:19530"},
            r"'milvus-local' but milvus.uri \(http://\*\*\*@h:19530\) names a server",
        ),
    ],
)
def test_an_engine_that_contradicts_the_uri_is_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(env=env)


def test_a_migrated_workspace_keeps_its_engine_unless_the_config_pins_one(tmp_path: Path, corpus: Path) -> None:
    cfg_file = _config(tmp_path, corpus)
    record_engine(tmp_path / "ws", "default", "milvus-local", "lite")
    assert load_config(cfg_file, env={}).store_engine == "milvus-local"
    assert load_config(cfg_file, env={"KBRELEASE_ENV": "dev"}).store_engine == "lite"  # recorded per environment
    assert load_config(cfg_file, env={"KBRELEASE_STORE_ENGINE": "lite"}).store_engine == "lite"
    pinned = load_config(cfg_file, env={"KBRELEASE_STORE_ENGINE": "lite", "KBRELEASE_ENV": "dev"})
    with KbRelease(pinned) as kb, pytest.raises(ConfigError, match=r"store\.engine is set to 'lite'"):
        kb.migrate_store("milvus-local")


def test_migrate_refuses_what_it_cannot_do(tmp_path: Path) -> None:
    cases = [
        ({"KBRELEASE_WORKSPACE": str(tmp_path)}, "lite", "already uses the lite engine"),
        ({"KBRELEASE_WORKSPACE": str(tmp_path)}, "server", "choose lite or milvus-local"),
        ({"MILVUS_URI": "http://127.0.0.1:9"}, "milvus-local", "use `kbrelease promote`"),
    ]
    for env, to, message in cases:
        with KbRelease(load_config(env=env)) as kb, pytest.raises(ConfigError, match=message):
            kb.migrate_store(to)


def test_missing_server_package_names_the_install_command(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=r"pip install 'kbrelease\[milvus-local\]'") as caught:
        MilvusStandalone(tmp_path / "data", executable=tmp_path / "no-milvus-server").start()
    assert INSTALL in str(caught.value)


# --- advice --------------------------------------------------------------------------


def test_advice_threshold_comes_from_the_measured_line() -> None:
    assert lite_p50_ms(ADVISE_ROWS) == pytest.approx(LATENCY_GOAL_MS, abs=0.5)
    assert 30_000 < ADVISE_ROWS < 50_000


def test_advice_names_the_numbers_and_the_command(tmp_path: Path) -> None:
    lite = load_config(env={"KBRELEASE_WORKSPACE": str(tmp_path), "KBRELEASE_STORE_ADVISE_ROWS": "100"})
    (line,) = advice(lite, {"docs": 250, "small": 100})
    assert "source 'docs' has 250 rows, past the 100" in line
    assert "7 ms p50 at 10,000 rows and 62 ms at 100,000" in line and MIGRATE_COMMAND in line
    assert advice(load_config(env={"KBRELEASE_WORKSPACE": str(tmp_path)}), {"docs": ADVISE_ROWS}) == []  # at the default, not past it
    server = load_config(env={"MILVUS_URI": "http://127.0.0.1:9", "KBRELEASE_STORE_ADVISE_ROWS": "1"})
    assert advice(server, {"docs": 10**6}) == []  # nothing to say about a server someone else runs


# --- a published workspace moved to milvus-local ------------------------------------------


@pytest.fixture
def workspace(tmp_path: Path, corpus: Path) -> Iterator[Path]:
    """A tiny text-only project on the workspace's own embedded store; every server it starts is stopped afterwards."""
    cfg = _config(tmp_path, corpus, "store:\n  advise_rows: 3\n")
    yield cfg
    from kbrelease.store.lite import stop_server
    from kbrelease.store.milvus_local import stop_server as stop_local

    stop_server(tmp_path / "ws" / "milvus")
    stop_local(tmp_path / "ws" / "milvus-local")


def _hits(kb: KbRelease, query: str) -> list[tuple[str, int]]:
    return [(h.file, h.chunk_index) for h in kb.search(query, k=4)]


@pytest.mark.slow
@pytest.mark.milvus_server
def test_migrate_to_milvus_local_keeps_releases_hits_and_live(
    workspace: Path, tmp_path: Path, corpus: Path, text_embedder: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from fastapi.testclient import TestClient

    from kbrelease.service.app import create_app

    queries = ["how do I connect to the VPN from home", "fire drill assembly point"]
    with KbRelease(load_config(workspace, env={}), text_embedder=text_embedder) as kb:
        assert kb.cfg.store_engine == "lite"
        first = kb.publish()
        assert first.advice and "kbrelease store migrate --to milvus-local" in first.advice[0]  # threshold lowered to 3 rows
        (corpus / "text" / "garden.md").write_text("# Rooftop garden\n\nThe rooftop garden opens at noon.\n", encoding="utf-8")
        kb.publish()
        before = kb.status()
        hits = {q: _hits(kb, q) for q in queries}
        capsys.readouterr()
        with TestClient(create_app(kb.cfg, kb=kb)) as client:
            releases = client.get("/api/v1/releases").json()
        assert releases["engine"] == "lite" and releases["advice"] == before["advice"] != []
        logged = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
        assert any(r["level"] == "WARNING" and MIGRATE_COMMAND in r["event"] for r in logged)  # the service says it at start
    assert (before["live"], before["previous"]) == ("v2", "v1")

    moved = runner.invoke(app, ["-c", str(workspace), "store", "migrate", "--to", "milvus-local", "--json"])
    assert moved.exit_code == 0, moved.output
    info = json.loads(moved.stdout)
    assert [m["name"] for m in info["moved"]] == ["v1", "v2"] and info["live"] == "v2"
    assert all(m["state"] == "verified" for m in info["moved"])

    with KbRelease(load_config(workspace, env={}), text_embedder=text_embedder) as kb:
        assert kb.cfg.store_engine == "milvus-local"  # recorded in the workspace, config untouched
        after = kb.status()
        assert {q: _hits(kb, q) for q in queries} == hits
        assert kb.search(queries[0], k=1)[0].file == "it/vpn-setup.md"
        assert kb.store.uri.startswith("http://127.0.0.1:")
    assert (after["live"], after["previous"], after["engine"]) == ("v2", "v1", "milvus-local")
    assert [(r["name"], r["state"]) for r in after["releases"]] == [(r["name"], r["state"]) for r in before["releases"]]
    assert after["advice"] == []  # the new engine is past no threshold

    status = runner.invoke(app, ["-c", str(workspace), "store", "status", "--json"])
    data = json.loads(status.stdout)
    assert data["engine"] == "milvus-local" and data["server"]["healthy"] is True
    assert data["server"]["rss_bytes"] > 50 << 20  # the whole process group of the server
    assert data["index"] == index_for("milvus-local").asdict()
    text = runner.invoke(app, ["-c", str(workspace), "store", "status"]).stdout
    assert text.startswith(f"engine milvus-local: {tmp_path / 'ws' / 'milvus-local'}: running, pid {data['server']['pid']}") and " MB" in text
    assert runner.invoke(app, ["-c", str(workspace), "store", "stop"]).stdout.strip() == "stopped"
    assert runner.invoke(app, ["-c", str(workspace), "store", "status"]).stdout.splitlines()[0].endswith("not running")
