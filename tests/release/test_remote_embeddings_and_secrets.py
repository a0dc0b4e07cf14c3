"""Publishing through an OpenAI-compatible endpoint, and secrets that never leak."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from kbrelease import KbRelease, load_config
from kbrelease.cli import app

from embed_server import EmbedServer
from helpers import write_config

API_KEY = "sk-test-5f2d9c1e-never-print-me"
MILVUS_TOKEN = "root:hunter2-never-print-me"


def test_publish_with_an_openai_compatible_endpoint(
    tmp_path: Path, corpus: Path, isolated_milvus: dict[str, str], text_embedder: Any, image_embedder: Any
) -> None:
    with EmbedServer(text_embedder, token=API_KEY) as server:
        env = {
            "TEXT_EMBEDDING_BASE_URL": server.base_url,
            "TEXT_EMBEDDING_MODEL": "all-MiniLM-L6-v2",
            "TEXT_EMBEDDING_DIM": "384",
            "TEXT_EMBEDDING_API_KEY": API_KEY,
        }
        cfg = load_config(write_config(tmp_path, corpus), env=env, overrides=isolated_milvus)
        assert cfg.text.embedder == "openai"
        server.fail_next(2, 429)  # rate limited at first: retried, not fatal
        with KbRelease(cfg, image_embedder=image_embedder) as kb:
            info = kb.publish()
            hits = kb.search("how do I connect to the VPN from home", k=1)

        assert server.requests > 2
    assert info.release.embedders["text"]["model"] == "all-MiniLM-L6-v2"
    assert info.release.sources["docs"].failed == 0
    assert hits[0].file == "it/vpn-setup.md"
    workspace_text = "".join(p.read_text(errors="ignore") for p in (tmp_path / "ws").rglob("*") if p.is_file() and p.suffix in {".json", ".txt", ".yaml"})
    assert API_KEY not in workspace_text


def test_secrets_stay_out_of_output_manifests_and_errors(tmp_path: Path, corpus: Path, lite_server: str, monkeypatch: Any) -> None:
    cfg = write_config(tmp_path, corpus, "milvus:\n  db_prefix: secret_\n  registry_db: secret_registry\n")
    monkeypatch.setenv("MILVUS_URI", lite_server)
    monkeypatch.setenv("MILVUS_TOKEN", MILVUS_TOKEN)
    monkeypatch.setenv("TEXT_EMBEDDING_API_KEY", API_KEY)
    runner = CliRunner()

    outputs = [runner.invoke(app, ["-c", str(cfg), *args]) for args in (["publish", "--json"], ["status", "--json"], ["show", "v1", "--json"])]
    assert all(r.exit_code == 0 for r in outputs), [r.output for r in outputs]
    monkeypatch.setenv("MILVUS_URI", "http://127.0.0.1:1")
    failed = runner.invoke(app, ["-c", str(cfg), "status"])
    assert failed.exit_code == 75  # unreachable: transient

    texts = [r.output for r in [*outputs, failed]]
    texts += [p.read_text(errors="ignore") for p in (tmp_path / "ws").rglob("*") if p.is_file() and p.suffix in {".json", ".txt", ".yaml"}]
    for text in texts:
        assert MILVUS_TOKEN not in text and "hunter2" not in text
        assert API_KEY not in text
    assert json.loads(outputs[2].stdout)["name"] == "v1"
