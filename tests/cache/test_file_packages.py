"""Per-file content packages: exported from one workspace, imported into another, nothing re-embedded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kbrelease import ConfigError, KbRelease, ReleaseError, load_config
from kbrelease.embedding.base import EmbedderIdentity

from .test_incremental import CountingEmbedder
from helpers import write_config


def test_export_import_then_build_without_embedding(
    tmp_path: Path, corpus: Path, isolated_milvus: dict[str, str], text_embedder: Any, image_embedder: Any
) -> None:
    dev = load_config(write_config(tmp_path, corpus), env={}, overrides=isolated_milvus)
    with KbRelease(dev, text_embedder=text_embedder, image_embedder=image_embedder) as kb:
        v1 = kb.publish().release
        one = kb.cache_export(tmp_path / "one", files=["it/vpn-setup.md"])
        info = kb.cache_export(tmp_path / "packages")
    assert one.files == 1
    assert info.files == v1.sources["docs"].files + v1.sources["pictures"].files
    pkg = next((tmp_path / "one" / "files").glob("*/*"))
    meta = json.loads((pkg / "metadata.json").read_text(encoding="utf-8"))
    assert meta["relative_path"] == "it/vpn-setup.md"
    assert meta["embedder"]["model"] == "all-MiniLM-L6-v2"
    assert {p.name for p in pkg.iterdir()} == {"metadata.json", "chunks.parquet", "RELEASE_INFO.txt", "SHA256SUMS"}

    (tmp_path / "prod").mkdir()
    prod_milvus = {**isolated_milvus, "milvus.db_prefix": isolated_milvus["milvus.db_prefix"] + "prod_"}
    prod_milvus["milvus.registry_db"] = prod_milvus["milvus.db_prefix"] + "registry"
    prod = load_config(write_config(tmp_path / "prod", corpus), env={}, overrides=prod_milvus)
    counting = CountingEmbedder(text_embedder)
    with KbRelease(prod, text_embedder=counting, image_embedder=image_embedder) as kb:
        kb.sync()  # an unsigned image package is checked by re-embedding its image from the mirror
        imported = kb.cache_import(tmp_path / "packages")
        assert 0 < len(counting.texts) < info.vectors  # a sample of the unsigned text vectors was re-embedded to check them
        counting.texts.clear()
        built = kb.publish().release
        assert counting.texts == []  # nothing embedded for the build
        hits = kb.search("how do I connect to the VPN from home", k=1)
    assert imported.files == info.files
    assert built.sources["docs"].embedded == 0 and built.sources["pictures"].embedded == 0
    assert built.sources["docs"].rows == v1.sources["docs"].rows
    assert hits[0].file == "it/vpn-setup.md"


def test_import_refuses_corrupt_packages_and_other_models(
    tmp_path: Path, corpus: Path, isolated_milvus: dict[str, str], text_embedder: Any, image_embedder: Any
) -> None:
    cfg = load_config(write_config(tmp_path, corpus), env={}, overrides=isolated_milvus)
    with KbRelease(cfg, text_embedder=text_embedder, image_embedder=image_embedder) as kb:
        kb.publish()
        kb.cache_export(tmp_path / "packages", files=["it/vpn-setup.md"])
    other = CountingEmbedder(text_embedder, EmbedderIdentity("text", "bge-small", 384))
    with KbRelease(cfg, text_embedder=other, image_embedder=image_embedder) as kb, pytest.raises(ConfigError, match="configure the same model"):
        kb.cache_import(tmp_path / "packages")

    pkg = next((tmp_path / "packages" / "files").glob("*/*"))
    (pkg / "chunks.parquet").write_bytes((pkg / "chunks.parquet").read_bytes()[:-10] + b"0123456789")
    with KbRelease(cfg, text_embedder=text_embedder, image_embedder=image_embedder) as kb, pytest.raises(ReleaseError, match="does not match its checksum"):
        kb.cache_import(tmp_path / "packages")
