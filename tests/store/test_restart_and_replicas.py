"""The store restarts under a running service (Milvus Lite, the embedded store, the real Milvus server): the service
reports not ready meanwhile and answers again within seconds; and milvus.replica_number on a real server."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kbrelease import KbRelease, load_config
from kbrelease.errors import StoreError
from kbrelease.store.milvus import MilvusStore

from helpers import write_config

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def text_project(folder: Path, milvus: str) -> Path:
    corpus = folder / "corpus" / "text"
    corpus.mkdir(parents=True)
    for rel in ("it/vpn-setup.md", "facilities/fire-drill.md"):
        (corpus / Path(rel).name).write_text((REPO / "examples/corpus/text" / rel).read_text(encoding="utf-8"), encoding="utf-8")
    config = write_config(folder, folder / "corpus", f"milvus:\n  uri: {milvus}\n  db_prefix: rst_\n  registry_db: rst_registry\n")
    text = config.read_text(encoding="utf-8")
    config.write_text(text.replace("  - name: pictures\n", "").replace(f"    path: {folder / 'corpus' / 'images'}\n    modality: image\n", ""))
    return config


def poll(client: Any, path: str, want: int, timeout: float) -> tuple[float, Any]:
    """Seconds until GET ``path`` answers ``want``, and that response."""
    began = time.monotonic()
    while True:
        resp = client.get(path, params={"q": "vpn from home", "k": 1} if "search" in path else None)
        if resp.status_code == want:
            return time.monotonic() - began, resp
        if time.monotonic() - began > timeout:
            raise AssertionError(f"{path} did not answer {want} within {timeout:.0f}s: {resp.status_code} {resp.text[:300]}")
        time.sleep(0.1)


def service(kb: KbRelease) -> Any:
    from fastapi.testclient import TestClient

    from kbrelease.service.app import create_app

    return TestClient(create_app(kb.cfg, kb=kb))


def restart_under_service(kb: KbRelease, stop: Any, start_again: Any) -> dict[str, float]:
    """Serve, stop the store, check not-ready and failing searches, start it again, measure the recovery."""
    with service(kb) as client:
        poll(client, "/readyz", 200, 120)
        assert client.get("/api/v1/search", params={"q": "vpn from home", "k": 1}).json()["hits"][0]["file"] == "vpn-setup.md"
        stop()
        to_unready, down = poll(client, "/readyz", 503, 30)
        assert down.json()["checks"]["store"] is False and "cannot reach Milvus" in down.json()["checks"]["store_error"]
        assert client.get("/api/v1/search", params={"q": "vpn from home", "k": 1}).status_code == 503
        start_again()
        back = time.monotonic()
        to_ready, _ = poll(client, "/readyz", 200, 60)
        to_answer, resp = poll(client, "/api/v1/search", 200, 30)
        assert resp.json()["hits"][0]["file"] == "vpn-setup.md"
        assert resp.headers["X-KB-Release"] == "v1"
        return {"not_ready_after_s": to_unready, "ready_after_s": to_ready, "answering_after_s": round(time.monotonic() - back, 2), "answer_s": to_answer}


def test_a_milvus_lite_server_restart_makes_the_service_unready_then_it_answers_again(tmp_path: Path, text_embedder: Any) -> None:
    from servers import MilvusLiteServer

    with MilvusLiteServer(tmp_path / "lite") as lite, KbRelease(load_config(text_project(tmp_path, lite.uri), env={}), text_embedder=text_embedder) as kb:
        kb.publish()
        took = restart_under_service(kb, lite.stop, lite.start_again)
    print(f"\nMilvus Lite restart: {took}")


def test_the_embedded_store_comes_back_by_itself_after_its_server_dies(tmp_path: Path, text_embedder: Any) -> None:
    from kbrelease.store.lite import running_server, state_file, stop_server

    data = tmp_path / "ws" / "milvus"
    cfg = load_config(text_project(tmp_path, str(data)), env={})
    try:
        with KbRelease(cfg, text_embedder=text_embedder) as kb:
            kb.publish()
            with service(kb) as client:
                poll(client, "/readyz", 200, 120)
                first = running_server(data)
                assert first is not None
                os.killpg(first["pid"], signal.SIGKILL)  # a crash: nobody cleans up server.json
                took, resp = poll(client, "/api/v1/search", 200, 30)
                assert resp.json()["hits"][0]["file"] == "vpn-setup.md"
                second = running_server(data)
                assert second is not None and second["pid"] != first["pid"]
                assert json.loads(state_file(data).read_text())["pid"] == second["pid"]
                poll(client, "/readyz", 200, 30)
        print(f"\nembedded store answering again {took:.2f}s after its server was killed")
    finally:
        stop_server(data)


@pytest.fixture(scope="module")
def own_milvus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real Milvus 2.3.5 of this module's own, so a test may stop and restart it."""
    from servers import MilvusServer

    if not MilvusServer.available():
        pytest.fail("milvus-server is not installed: pip install milvus==2.3.5 (scripts/setup does)")
    with MilvusServer(tmp_path_factory.mktemp("milvus-restart")) as server:
        yield server


@pytest.mark.milvus_server
def test_replica_number_one_loads_and_more_replicas_than_query_nodes_is_a_clear_error(own_milvus_server: Any) -> None:
    one = MilvusStore(own_milvus_server.uri, replica_number=1)
    two = MilvusStore(own_milvus_server.uri, replica_number=2)
    try:
        one.ensure_database("rep_db")
        one.ensure_collection("rep_db", "one", dim=4)
        assert one.load_state("rep_db", "one") == "Loaded"
        with pytest.raises(StoreError) as caught:
            two.ensure_collection("rep_db", "two", dim=4)
    finally:
        one.drop_database("rep_db")
        one.close()
        two.close()
    message = str(caught.value)
    assert "with 2 in-memory replicas (milvus.replica_number, env MILVUS_REPLICA_NUMBER)" in message
    assert "nodes not enough" in message  # what Milvus 2.3.5 standalone answers, passed on
    assert message.endswith("run a Milvus cluster with at least 2 query nodes, or set MILVUS_REPLICA_NUMBER=1")


def test_replica_number_comes_from_the_seed_variable_and_the_embedded_store_ignores_it(tmp_path: Path) -> None:
    cfg = load_config(None, env={"MILVUS_REPLICA_NUMBER": "3", "MILVUS_URI": "http://milvus.example:19530"})
    assert cfg.milvus.replica_number == 3
    assert MilvusStore.from_config(cfg).replica_number == 3

    from kbrelease.store.lite import stop_server

    embedded = load_config(None, env={"MILVUS_REPLICA_NUMBER": "3", "KBRELEASE_WORKSPACE": str(tmp_path / "ws")})
    store = MilvusStore.from_config(embedded)
    try:
        store.ensure_database("emb")
        store.ensure_collection("emb", "c", dim=4)  # a load with replicas would fail on Lite; none is asked
        assert store.embedded and store.load_state("emb", "c") == "Loaded"
    finally:
        store.close()
        stop_server(Path(embedded.milvus_uri))


@pytest.mark.milvus_server
def test_a_milvus_server_restart_makes_the_service_unready_then_it_answers_again(own_milvus_server: Any, tmp_path: Path, text_embedder: Any) -> None:
    from servers import TcpForwarder

    def start_again() -> None:
        own_milvus_server.start_again()
        front.target = own_milvus_server.port  # the same port unless the old one was still in TIME_WAIT

    # The service reaches Milvus through a fixed address, as through a Kubernetes Service.
    with (
        TcpForwarder(own_milvus_server.port) as front,
        KbRelease(load_config(text_project(tmp_path, front.uri), env={}), text_embedder=text_embedder) as kb,
    ):
        kb.publish()
        took = restart_under_service(kb, own_milvus_server.stop, start_again)
    print(f"\nMilvus 2.3.5 restart: {took}")
