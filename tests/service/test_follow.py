"""Following the live pointer: switches made elsewhere are picked up, pins hold, a request never mixes releases."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import ADMIN_TOKEN, EXAMPLES, copy_corpus, isolated, make_client, wait_ready
from helpers import write_config

PRINTER = "# Printer jam\n\nWhen the big printer on floor two jams, open the green side door and pull the blue lever gently toward you.\n"


@pytest.fixture(scope="module")
def two_releases(tmp_path_factory: pytest.TempPathFactory, lite_server: str, text_embedder: Any, image_embedder: Any) -> Iterator[tuple[Any, Any]]:
    """(kb, other): v1 live, then v2 published by a second KbRelease (another 'process') with a new file.

    Two text sources, so one search queries two collections.
    """
    from kbrelease import KbRelease, load_config

    folder = tmp_path_factory.mktemp("follow")
    corpus = copy_corpus(folder / "corpus", image_folders=("stripes",))
    policies = folder / "policies"
    policies.mkdir()
    (policies / "remote-work.md").write_text((EXAMPLES / "text" / "policies" / "remote-work-policy.md").read_text())
    extra = f"  - name: policies\n    path: {policies}\n    modality: text\n"
    cfg = load_config(write_config(folder, corpus, extra), env={}, overrides=isolated(lite_server))
    with (
        KbRelease(cfg, text_embedder=text_embedder, image_embedder=image_embedder) as kb,
        KbRelease(cfg, text_embedder=text_embedder, image_embedder=image_embedder) as other,
    ):
        kb.publish()
        yield kb, other


def live_of(client: Any) -> str:
    return str(client.get("/api/v1/live").json()["live"])


def test_a_switch_made_elsewhere_reaches_the_service_within_its_refresh_time(two_releases: tuple[Any, Any]) -> None:
    kb, other = two_releases
    with make_client(kb, live_refresh_seconds=0.3) as fast, make_client(kb, live_refresh_seconds=300) as slow:
        wait_ready(fast)
        wait_ready(slow)
        assert live_of(fast) == live_of(slow) == "v1"
        assert fast.get("/api/v1/search", params={"q": "printer jammed, which lever?"}).json()["hits"][0]["file"] != "it/printer-jam.md"

        (Path(kb.cfg.source("docs").path) / "it" / "printer-jam.md").write_text(PRINTER)
        other.publish()  # sync → build → verify → switch, by another facade on the same store

        deadline = time.monotonic() + 10
        while live_of(fast) != "v2":
            assert time.monotonic() < deadline, "the service never followed the switch"
            time.sleep(0.05)
        found = fast.get("/api/v1/search", params={"q": "printer jammed, which lever?", "k": 1}).json()
        assert found["release"] == "v2" and found["hits"][0]["file"] == "it/printer-jam.md"
        assert fast.get("/readyz").json()["checks"]["live"] == "v2"
        assert 'kbrelease_live_release{environment="default",release="v2"} 1.0' in fast.get("/metrics").text
        assert "kbrelease_live_switches_seen_total 1.0" in fast.get("/metrics").text

        # A replica re-reads the pointer only when its snapshot is older than its refresh time.
        assert live_of(slow) == "v1"
        assert slow.get("/api/v1/search", params={"q": "vpn"}).json()["release"] == "v1"
        # A switch through this replica's own admin endpoint is served at once.
        assert slow.post("/api/v1/releases/v2/switch", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).json()["live"] == "v2"
        assert live_of(slow) == "v2"


def test_pinned_release_answers_canary_checks_while_another_is_live(two_releases: tuple[Any, Any]) -> None:
    kb, _ = two_releases
    with make_client(kb) as c:
        wait_ready(c)
        assert live_of(c) == "v2"
        pinned = c.get("/api/v1/search", params={"q": "printer jammed, which lever?", "release": "v1", "k": 3}).json()
        assert pinned["release"] == "v1" and all(h["release"] == "v1" and h["file"] != "it/printer-jam.md" for h in pinned["hits"])
        listing = c.get("/api/v1/releases").json()
        assert {r["name"]: r["state"] for r in listing["releases"]} == {"v1": "retired", "v2": "live"}
        assert c.get("/api/v1/releases/v1").json()["state"] == "retired"


def test_a_request_uses_one_release_even_when_the_pointer_moves_during_it(two_releases: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    kb, other = two_releases
    with make_client(kb, live_refresh_seconds=0.01) as c:
        wait_ready(c)
        start = live_of(c)
        target = "v1" if start == "v2" else "v2"
        databases: list[str] = []
        real_search = kb.store.search

        def search_then_switch(db: str, collection: str, *args: Any, **kwargs: Any) -> Any:
            databases.append(db)
            if len(databases) == 1:  # between the two collections of this one request
                other.switch(target)
                c.app.state.service.follower.refresh()
            return real_search(db, collection, *args, **kwargs)

        monkeypatch.setattr(kb.store, "search", search_then_switch)
        body = c.get("/api/v1/search", params={"q": "remote work from home", "k": 10}).json()
        assert len(databases) == 2 and len(set(databases)) == 1, databases  # both collections of ONE release
        assert databases[0] == kb.release(start).database and body["release"] == start
        assert {h["source"] for h in body["hits"]} == {"docs", "policies"}
        monkeypatch.setattr(kb.store, "search", real_search)
        assert c.get("/api/v1/search", params={"q": "remote work"}).json()["release"] == target  # the next request follows
        other.switch(start)


def test_a_collection_released_under_the_service_is_loaded_again(two_releases: tuple[Any, Any]) -> None:
    kb, _ = two_releases
    with make_client(kb) as c:
        wait_ready(c)
        record = kb.resolve(None)
        kb.store.client(record.database).release_collection("docs")  # e.g. the server restarted
        resp = c.get("/api/v1/search", params={"q": "vpn", "source": "docs"})
        assert resp.status_code == 200 and resp.json()["hits"]


def test_in_background_mode_no_request_waits_for_a_registry_read(two_releases: tuple[Any, Any]) -> None:
    from kbrelease.release.follow import LiveFollower

    kb, _ = two_releases
    gate = threading.Event()

    class SlowRegistry:
        """The real registry, whose pointer reads block until the gate opens (a Milvus 2.3 read waiting for its time tick)."""

        reads = 0

        def pointer(self) -> Any:
            SlowRegistry.reads += 1
            gate.wait(10)
            return kb.registry.pointer()

        def __getattr__(self, name: str) -> Any:
            return getattr(kb.registry, name)

    now = [0.0]
    gate.set()
    follower = LiveFollower(SlowRegistry(), kb.store, refresh_seconds=1.0, clock=lambda: now[0], background=True)  # type: ignore[arg-type]
    first = follower.snapshot()  # nothing to serve yet: the first read is made in the request

    gate.clear()
    now[0] = 1.5
    assert follower.snapshot() is first  # stale: answered at once from what it has, while a read runs in the background
    assert follower.snapshot() is first and SlowRegistry.reads == 2  # one background read at a time
    gate.set()
    deadline = time.monotonic() + 10
    while follower.snapshot() is first:
        assert time.monotonic() < deadline, "the background read never landed"
        time.sleep(0.01)
    assert follower.snapshot().read_at == 1.5 and follower.snapshot().pointer == kb.registry.pointer()

    now[0] = 1.5 + follower.sync_after_seconds + 1  # far too old (background reads failing): read in the request again
    assert follower.snapshot().read_at == now[0]
