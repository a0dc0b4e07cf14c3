"""The same release code on a real Milvus server (PyPI `milvus` 2.3.5), not only on Milvus Lite."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kbrelease import KbRelease, ReleaseError, load_config

from helpers import write_config

pytestmark = [pytest.mark.milvus_server, pytest.mark.slow]


def test_publish_search_republish_rollback_gc_on_a_milvus_server(
    milvus_server: str, tmp_path: Path, corpus: Path, text_embedder: Any, image_embedder: Any
) -> None:
    env = {"MILVUS_URI": milvus_server, "MILVUS_TOKEN": "root:Milvus"}
    cfg = load_config(write_config(tmp_path, corpus, "milvus:\n  db_prefix: srv_\n"), env=env)
    with KbRelease(cfg, text_embedder=text_embedder, image_embedder=image_embedder) as kb:
        first = kb.publish()
        assert first.live == "v1"
        assert first.release.database == "srv_v1"
        assert kb.search("how do I connect to the VPN from home", k=1)[0].file == "it/vpn-setup.md"
        picture = sorted((corpus / "images" / "stripes").iterdir())[0]
        assert kb.search_image(picture, k=1)[0].file == f"stripes/{picture.name}"

        (corpus / "text" / "roof.md").write_text("# Roof\n\nThe rooftop garden opens at noon.\n", encoding="utf-8")
        second = kb.publish()
        assert (second.live, second.previous) == ("v2", "v1")
        assert second.release.sources["docs"].files == first.release.sources["docs"].files + 1
        assert kb.search("when does the rooftop garden open", k=1)[0].file == "roof.md"

        assert kb.rollback().live == "v1"
        assert kb.search("when does the rooftop garden open", k=1)[0].release == "v1"
        with pytest.raises(ReleaseError, match="only a verified release"):
            kb.sync()
            kb.switch(kb.build().name)
        assert kb.status()["live"] == "v1"
        assert kb.gc(keep=1) == []  # v1 live, v2 previous, v3 newest
        assert {"srv_v1", "srv_v2", "srv_v3"} <= set(kb.store.databases())


def test_hybrid_is_refused_before_anything_is_built_on_a_milvus_without_bm25(milvus_server: str, tmp_path: Path, corpus: Path, text_embedder: Any) -> None:
    """Milvus 2.3.5 accepts a schema with a BM25 function and drops the function: the version is checked first."""
    from kbrelease.errors import CompatibilityError

    hybrid = (
        write_config(tmp_path, corpus, "milvus:\n  db_prefix: hyb_\n  registry_db: hyb_registry\n")
        .read_text(encoding="utf-8")
        .replace("modality: text", "modality: text\n    hybrid: true")
    )
    (tmp_path / "kbrelease.yaml").write_text(hybrid, encoding="utf-8")
    cfg = load_config(tmp_path / "kbrelease.yaml", env={"MILVUS_URI": milvus_server, "MILVUS_TOKEN": "root:Milvus"})
    with KbRelease(cfg, text_embedder=text_embedder) as kb:
        with pytest.raises(CompatibilityError, match=r"source 'docs' \(hybrid: true\).*version v2\.3\.5.*hybrid: false"):
            kb.publish()
        assert "hyb_v1" not in kb.store.databases()
        assert kb.status()["live"] is None
        with pytest.raises(CompatibilityError, match="no BM25 function"):
            kb.store.ensure_collection("default", "hybrid_probe", 8, sparse=True)  # an import of a package with the field takes this path
        assert "hybrid_probe" not in kb.store.collections("default")
