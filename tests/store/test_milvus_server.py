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


def test_a_collection_past_the_large_size_is_sealed_with_the_large_index(milvus_server: str) -> None:
    """milvus-local keeps FLAT (exact) for small collections and rebuilds HNSW at seal past its row count (150,000; here 30)."""
    import numpy as np

    from kbrelease.store.engines import INDEXES, IndexChoice
    from kbrelease.store.milvus import MilvusStore

    rng = np.random.default_rng(7)
    store = MilvusStore(milvus_server, "root:Milvus", index=INDEXES["milvus-local"])
    store.large_index = (30, IndexChoice("HNSW", {"M": 8, "efConstruction": 32}, {"ef": 64, "nprobe": 16}))
    store.ensure_database("large_idx")
    try:
        for name, rows in (("small", 20), ("big", 40)):
            store.ensure_collection("large_idx", name, 8)
            vectors = rng.standard_normal((rows, 8)).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            store.upsert(
                "large_idx",
                name,
                [
                    {
                        "id": f"{i:04d}:0",
                        "file_id": f"{i:04d}",
                        "file": f"f{i}.md",
                        "chunk_index": 0,
                        "n_chunks": 1,
                        "checksum": "0" * 64,
                        "vector": v.tolist(),
                        "start": 0,
                        "heading": "",
                        "text": f"row {i}",
                        "metadata": {},
                    }
                    for i, v in enumerate(vectors)
                ],
            )
            store.seal("large_idx", name)
            c = store.client("large_idx")
            kinds = {c.describe_index(name, index)["index_type"] for index in c.list_indexes(name, field_name="vector")}
            assert kinds == ({"HNSW"} if rows > 30 else {"FLAT"})
            hit = store.search("large_idx", name, [vectors[3].tolist()], 1, output_fields=("file",))[0][0]
            assert hit["entity"]["file"] == "f3.md"  # searched with the index's own parameter (ef), the exact row found
        store.seal("large_idx", "big")  # sealing again keeps the large index, no rebuild
    finally:
        store.drop_database("large_idx")
        store.close()


def test_a_store_runs_pymilvus_one_time_scipy_probe_before_any_thread_searches(tmp_path: Path) -> None:
    """pymilvus executes scipy.sparse by hand on its first search, outside the import lock; two threads searching
    first at once (a service's requests and its pointer refresh) met it half-initialized (CI: HTTP 500)."""
    from pymilvus.client.utils import SciPyHelper

    from kbrelease.store.milvus import MilvusStore

    SciPyHelper._checked = False
    store = MilvusStore("http://127.0.0.1:9")  # no connection is made until a call needs one
    try:
        assert SciPyHelper._checked
    finally:
        store.close()
