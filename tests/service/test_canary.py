"""A canary: a share of the live traffic answered by a candidate release, every answer stamped with its release."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path
from typing import Any

from kbrelease.config import CanaryConfig

from .conftest import ADMIN_TOKEN, make_client, wait_ready

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def _twin(published: Any, name: str) -> None:
    """Register a verified copy of v1 under another name (same databases; not live)."""
    twin = published.release("v1")
    ws = Path(published.cfg.workspace)
    shutil.copytree(ws / "releases" / "v1", ws / "releases" / name, dirs_exist_ok=True)
    twin.name, twin.went_live_at = name, None
    published.registry.put(twin)


def test_a_canary_answers_its_share_and_every_answer_names_its_release(published: Any) -> None:
    _twin(published, "v1c")
    with make_client(published, canary=CanaryConfig(release="v1c", share=0.5)) as client:
        wait_ready(client)
        answers = [client.get("/api/v1/search", params={"q": "vpn from home", "k": 1}) for _ in range(60)]
        pinned = client.get("/api/v1/search", params={"q": "vpn", "k": 1, "release": "v1"})
        metrics = client.get("/metrics").text

    by_release = Counter(r.headers["x-kb-release"] for r in answers)
    assert all(r.status_code == 200 and r.json()["release"] == r.headers["x-kb-release"] for r in answers)
    assert set(by_release) == {"v1", "v1c"} and 10 <= by_release["v1c"] <= 50  # about half, never all or none
    assert all((r.headers.get("x-kb-canary") == "1") == (r.headers["x-kb-release"] == "v1c") for r in answers)
    assert pinned.headers["x-kb-release"] == "v1" and "x-kb-canary" not in pinned.headers  # a pinned search is never diverted
    assert f'kbrelease_searches_total{{canary="true",release="v1c"}} {float(by_release["v1c"])}' in metrics
    assert 'kbrelease_search_release_seconds_count{release="v1"}' in metrics


def test_the_canary_is_set_and_stopped_by_an_admin_and_refuses_what_cannot_answer(published: Any) -> None:
    _twin(published, "v1d")
    with make_client(published) as client:
        wait_ready(client)
        assert client.get("/api/v1/canary").json() == {"release": None, "share": 0.0}
        assert client.put("/api/v1/canary", json={"release": "v1d", "share": 1.0}).status_code == 401  # admin only
        set_ = client.put("/api/v1/canary", json={"release": "v1d", "share": 1.0}, headers=ADMIN)
        assert set_.status_code == 200 and set_.json() == {"release": "v1d", "share": 1.0}
        assert client.get("/api/v1/search", params={"q": "vpn", "k": 1}).headers["x-kb-release"] == "v1d"
        assert client.put("/api/v1/canary", json={"release": "v404", "share": 0.5}, headers=ADMIN).status_code == 404
        assert client.put("/api/v1/canary", json={"release": "v1d", "share": 2}, headers=ADMIN).status_code == 422
        assert client.delete("/api/v1/canary", headers=ADMIN).json() == {"release": None, "share": 0.0}
        assert client.get("/api/v1/search", params={"q": "vpn", "k": 1}).headers["x-kb-release"] == "v1"


def test_the_release_list_carries_each_releases_recall(published: Any) -> None:
    record = published.release("v1")
    record.verification["quality"] = {"candidate": {"k": 5, "recall": 0.8, "mrr": 0.7}, "gate": {"passed": False}}
    published.registry.put(record)
    try:
        with make_client(published) as client:
            listed = {r["name"]: r for r in client.get("/api/v1/releases").json()["releases"]}
        assert listed["v1"]["quality"] == {"k": 5, "recall": 0.8, "mrr": 0.7, "gate_passed": False}
    finally:
        record.verification.pop("quality")
        published.registry.put(record)
