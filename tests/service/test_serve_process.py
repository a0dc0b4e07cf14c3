"""`kbrelease serve` as a real process (uvicorn) on the embedded store, while `kbrelease publish`
runs in another process: the API and page show the new release after the switch, without a restart."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import copy_corpus
from .procs import Load, ServeProcess, raw_get
from helpers import write_config

pytestmark = pytest.mark.slow


def publish(cfg: Path) -> dict[str, object]:
    done = subprocess.run([sys.executable, "-m", "kbrelease.cli", "-c", str(cfg), "publish", "--json"], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(json.loads(done.stdout))


def test_serve_follows_publish_from_another_process_on_the_embedded_store(tmp_path: Path) -> None:
    from kbrelease.store.lite import stop_server

    corpus = copy_corpus(tmp_path / "corpus", image_folders=("stripes",))
    cfg = write_config(tmp_path, corpus)  # no milvus.uri: the embedded Milvus Lite of the workspace
    serve = ServeProcess(cfg)
    try:
        serve.start(ready=False)  # starts the workspace's embedded store; nothing is live yet
        not_ready = serve.get("/readyz")
        assert not_ready.status_code == 503 and "nothing is live" in not_ready.json()["checks"]["live_error"]
        assert serve.get("/api/v1/search", params={"q": "vpn"}).json()["error"]["code"] in ("no_live_release", "warming_up")

        assert publish(cfg)["live"] == "v1"  # another process, same embedded store
        serve.wait("/readyz", 120)
        assert serve.get("/api/v1/live").json()["live"] == "v1"
        assert serve.get("/api/v1/search", params={"q": "how do I connect to the VPN", "k": 1}).json()["hits"][0]["file"] == "it/vpn-setup.md"

        (corpus / "text" / "it" / "printer-jam.md").write_text("# Printer jam\n\nOpen the green door and pull the blue lever to clear a jam.\n")
        with Load(serve.uri, workers=2) as load:
            assert publish(cfg)["live"] == "v2"
            published_at = time.monotonic()
            while serve.get("/api/v1/live").json()["live"] != "v2":
                assert time.monotonic() - published_at < 2.5, "the service did not follow the switch within its refresh time"
                time.sleep(0.05)
            time.sleep(0.5)
        assert load.failures() == [] and len(load.outcomes) > 5
        hit = serve.get("/api/v1/search", params={"q": "printer jam blue lever", "k": 1}).json()
        assert hit["release"] == "v2" and hit["hits"][0]["file"] == "it/printer-jam.md"
        states = {r["name"]: r["state"] for r in serve.get("/api/v1/releases").json()["releases"]}
        assert states == {"v1": "retired", "v2": "live"}  # what the page's release list shows
        assert "kbrelease search" in serve.get("/").text

        # A 100 KB query reaches the app over real HTTP and gets the JSON error, not a bare 400 from the server.
        status, body = raw_get(serve.port, "/api/v1/search?q=" + "a" * 100_000)
        assert status == 422 and "over service.max_query_chars" in json.loads(body)["error"]["message"]

        assert serve._proc is not None
        serve._proc.send_signal(signal.SIGTERM)  # graceful stop: uvicorn drains, then re-raises the signal
        assert serve._proc.wait(timeout=20) in (0, -signal.SIGTERM)
        assert any('"event": "service stopping"' in line for line in serve.output())
    finally:
        serve.stop()
        stop_server(tmp_path / "ws" / "milvus")
