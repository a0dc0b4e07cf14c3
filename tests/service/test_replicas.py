"""Three replicas behind nginx on 127.0.0.1: a SIGKILLed replica costs no request, and a switch
under load reaches every replica within the refresh time (2 s)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import ADMIN_TOKEN, copy_corpus, isolated
from .procs import Load, NginxServer, ServeProcess, raw_get

pytestmark = pytest.mark.slow


def text_only_config(folder: Path, corpus: Path, milvus: dict[str, str]) -> Path:
    cfg = folder / "kbrelease.yaml"
    cfg.write_text(
        f"""workspace: {folder / "ws"}
sources:
  - name: docs
    path: {corpus / "text"}
    modality: text
milvus:
  uri: {milvus["milvus.uri"]}
  db_prefix: {milvus["milvus.db_prefix"]}
  registry_db: {milvus["milvus.registry_db"]}
""",
        encoding="utf-8",
    )
    return cfg


def p99(values: list[float]) -> float:
    return sorted(values)[max(0, int(len(values) * 0.99) - 1)] if values else 0.0


def test_replicas_behind_nginx_lose_no_request_when_one_is_killed_and_all_follow_a_switch(tmp_path: Path, lite_server: str, text_embedder: Any) -> None:
    from kbrelease import KbRelease, load_config

    corpus = copy_corpus(tmp_path / "corpus", image_folders=())
    cfg_path = text_only_config(tmp_path, corpus, isolated(lite_server))
    replicas = [ServeProcess(cfg_path, env={"KBRELEASE_ADMIN_TOKEN": ADMIN_TOKEN}) for _ in range(3)]
    with KbRelease(load_config(cfg_path, env={}), text_embedder=text_embedder) as kb:
        kb.publish()  # v1 live
        (corpus / "text" / "it" / "printer-jam.md").write_text("# Printer jam\n\nPull the blue lever to clear a jam.\n")
        kb.sync()
        kb.verify(kb.build().name)  # v2 verified, not live
        try:
            for replica in replicas:
                replica.start(ready=False)  # all three load their model at once
            for replica in replicas:
                replica.wait("/readyz", 300)
            with NginxServer(tmp_path / "nginx", [f"127.0.0.1:{r.port}" for r in replicas]) as nginx, Load(nginx.uri, workers=4) as load:
                time.sleep(3)  # steady state
                steady = [o.seconds for o in load.outcomes]

                switched = httpx.post(f"{nginx.uri}/api/v1/releases/v2/switch", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30)
                assert switched.status_code == 200, switched.text
                t_switch = time.monotonic()
                followed: dict[int, float] = {}
                while len(followed) < len(replicas) and time.monotonic() - t_switch < 15:
                    for i, replica in enumerate(replicas):
                        if i not in followed and replica.get("/api/v1/live").json()["live"] == "v2":
                            followed[i] = time.monotonic() - t_switch
                    time.sleep(0.02)
                during = [o.seconds for o in load.since(t_switch - 0.5) if o.at < t_switch + 2.5]

                replicas[0].stop()  # SIGKILL, mid-load
                t_kill = time.monotonic()
                time.sleep(4)
                status, body = raw_get(nginx.port, "/api/v1/search?q=" + "a" * 100_000)  # through nginx too
                assert status == 422 and "max_query_chars" in body
            after_kill = load.since(t_kill)
            print(
                f"\nrequests {len(load.outcomes)}, failed {len(load.failures())}; switch seen by replicas after "
                f"{', '.join(f'{s:.2f}s' for s in followed.values())}; p99 steady {p99(steady) * 1000:.0f} ms, "
                f"during switch {p99(during) * 1000:.0f} ms; {len(after_kill)} requests after the kill"
            )
            assert load.failures() == []
            assert len(followed) == 3 and max(followed.values()) <= 2.5, followed  # refresh 2 s, plus the polling itself
            assert len(after_kill) >= 20  # traffic kept flowing through the two replicas left
            assert {o.release for o in load.since(t_switch + 2.5)} == {"v2"}  # nobody served the old release after that
            assert {o.release for o in load.outcomes if o.at < t_switch - 0.5} == {"v1"}
        finally:
            for replica in replicas:
                replica.stop()
