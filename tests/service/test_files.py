"""Registered files (seed 001): POST /api/v1/files/register, GET /api/v1/files/{id}, `kbrelease files`, following a real publish."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from kbrelease import KbRelease, load_config
from kbrelease.cli import app
from kbrelease.index.data_index import file_id_for

from .conftest import ADMIN_TOKEN, API_TOKEN, copy_corpus, isolated, make_client
from helpers import write_config

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
READ = {"Authorization": f"Bearer {API_TOKEN}"}


def test_a_registered_file_follows_the_publish_to_live_and_a_corrupt_one_fails_with_its_reason(
    tmp_path: Path, lite_server: str, text_embedder: Any, image_embedder: Any
) -> None:
    corpus = copy_corpus(tmp_path / "corpus", text=["it/vpn-setup.md"], image_folders=("stripes",))
    (corpus / "images" / "stripes" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a picture" * 20)
    db = isolated(lite_server)
    milvus = f"milvus:\n  uri: {db['milvus.uri']}\n  db_prefix: {db['milvus.db_prefix']}\n  registry_db: {db['milvus.registry_db']}\n"
    config = write_config(tmp_path, corpus, "max_failed_share: 0.5\n" + milvus)
    cfg = load_config(config, env={})
    with KbRelease(cfg, text_embedder=text_embedder, image_embedder=image_embedder) as kb, make_client(kb, api=API_TOKEN) as client:
        body = {"files": [{"source": "docs", "path": "it/vpn-setup.md", "note": "ticket 42"}, {"source": "pictures", "path": "stripes/broken.png"}]}
        assert client.post("/api/v1/files/register", json=body).status_code == 401  # admin token required
        assert client.post("/api/v1/files/register", json=body, headers=READ).status_code == 403
        registered = client.post("/api/v1/files/register", json=body, headers=ADMIN)
        assert registered.status_code == 200, registered.text
        page, picture = registered.json()["files"]
        assert page["file_id"] == file_id_for("docs", "it/vpn-setup.md")
        assert (page["status"], picture["status"], page["note"]) == ("registered", "registered", "ticket 42")

        def status(file_id: str) -> dict[str, Any]:
            resp = client.get(f"/api/v1/files/{file_id}", headers=READ)
            assert resp.status_code == 200, resp.text
            return dict(resp.json())

        kb.sync()
        assert status(page["file_id"])["status"] == "synced" and status(page["file_id"])["checksum"]
        record = kb.build()
        kb.verify(record.name)
        assert (status(page["file_id"])["status"], status(page["file_id"])["release"]) == ("embedded", record.name)
        failed = status(picture["file_id"])
        assert failed["status"] == "failed" and failed["release"] == record.name and "fix the file" in failed["reason"]
        kb.switch(record.name)
        assert (status(page["file_id"])["status"], status(page["file_id"])["release"]) == ("live", record.name)

        (corpus / "text" / "it" / "vpn-setup.md").write_text("# VPN\n\nA new version of the page.\n", encoding="utf-8")
        kb.sync()
        changed = status(page["file_id"])
        assert changed["status"] == "synced" and f"changed since release {record.name}" in changed["reason"]

        assert client.get("/api/v1/files/0123456789abcdef0123", headers=READ).status_code == 404
        assert client.get("/api/v1/files/..%2Fetc", headers=READ).status_code in (404, 422)
        for bad in (
            {"files": [{"source": "docs", "path": "../etc/passwd"}]},
            {"files": [{"source": "nope", "path": "a.md"}]},
            {"files": [{"source": "docs", "path": "picture.png"}]},
            {"files": [{"source": "docs", "path": "a.md", "extra": 1}]},
            {"files": []},
        ):
            resp = client.post("/api/v1/files/register", json=bad, headers=ADMIN)
            assert resp.status_code in (400, 422), (bad, resp.text)
        assert [f.path for f in kb.file_status()] == ["it/vpn-setup.md", "stripes/broken.png"]  # nothing of the bad calls was registered

    runner = CliRunner()
    root = ["-c", str(config)]
    one = runner.invoke(app, [*root, "file", "status", page["file_id"], "--json"])
    assert one.exit_code == 0, one.output
    assert json.loads(one.stdout)["status"] == "synced"
    listed = runner.invoke(app, [*root, "file", "status"])
    assert "failed" in listed.stdout and "stripes/broken.png" in listed.stdout
    added = runner.invoke(app, [*root, "file", "register", "docs", "it/new-page.md", "--json"])
    assert added.exit_code == 0, added.output
    assert json.loads(added.stdout)[0]["status"] == "registered"
    refused = runner.invoke(app, [*root, "file", "register", "docs", "../../etc/passwd"])
    assert refused.exit_code != 0 and "error:" in refused.stderr
