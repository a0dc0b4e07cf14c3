"""Hybrid search: a BM25 field per text source (``hybrid: true``), fused with the vectors by reciprocal rank fusion.

One module project on the shared Lite server: v1 built without the BM25 field (as every release before hybrid
search), v2 with it. The same releases answer the library, the CLI, the service and a package round trip.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from kbrelease import KbRelease, load_config
from kbrelease.config import SourceConfig
from kbrelease.errors import QueryError
from kbrelease.release.manifest import release_info_text
from kbrelease.release.registry import ReleaseRecord
from kbrelease.release.search import check_mode, fuse
from kbrelease.store.milvus import version_tuple

REPO = Path(__file__).resolve().parents[2]
# An exact term no sentence of the example corpus is about: a keyword query a dense model has no meaning for.
FLAGS = "---\nteam: tools\n---\n# Tool flags\n\nPass --xqz-spill to kbtool to raise XQZ_SPILL_LIMIT for one run.\n"


def _config(folder: Path, corpus: Path, milvus: dict[str, str], hybrid: bool) -> Path:
    cfg = folder / f"kbrelease-{'hybrid' if hybrid else 'dense'}.yaml"
    cfg.write_text(
        f"workspace: {folder / 'ws'}\n"
        f"milvus:\n  uri: {milvus['milvus.uri']}\n  db_prefix: {milvus['milvus.db_prefix']}\n  registry_db: {milvus['milvus.registry_db']}\n"
        f"sources:\n  - name: docs\n    path: {corpus}\n    modality: text\n    hybrid: {str(hybrid).lower()}\n",
        encoding="utf-8",
    )
    return cfg


@pytest.fixture(scope="module")
def hybrid_kb(tmp_path_factory: pytest.TempPathFactory, lite_server: str, text_embedder: Any) -> Iterator[tuple[KbRelease, Path]]:
    """v1 dense-only, v2 hybrid (live); yields the hybrid project and its config file."""
    folder = tmp_path_factory.mktemp("hybrid")
    corpus = folder / "corpus"
    for rel in ["it/vpn-setup.md", "it/password-rotation.md", "facilities/fire-drill.md"]:
        (corpus / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / "examples" / "corpus" / "text" / rel, corpus / rel)
    (corpus / "tools" / "flags.md").parent.mkdir(parents=True)
    (corpus / "tools" / "flags.md").write_text(FLAGS, encoding="utf-8")
    milvus = {"milvus.uri": lite_server, "milvus.db_prefix": "hyb_", "milvus.registry_db": "hyb_registry"}
    with KbRelease(load_config(_config(folder, corpus, milvus, False), env={}), text_embedder=text_embedder) as old:
        assert old.publish().live == "v1"
    cfg = _config(folder, corpus, milvus, True)
    with KbRelease(load_config(cfg, env={}), text_embedder=text_embedder) as kb:
        assert kb.publish().live == "v2"
        yield kb, cfg


# --- the parts, without a store ------------------------------------------------------
def test_reciprocal_rank_fusion_adds_one_over_60_plus_rank_and_names_the_retrievers() -> None:
    dense = ("dense", [("a", 1), ("b", 2), ("c", 3)])
    sparse = ("sparse", [("c", 30), ("d", 40)])
    fused = fuse([dense, sparse], k=3)
    assert [key for key, *_ in fused] == ["c", "a", "b"]  # c: 1/63 + 1/61 beats a: 1/61
    assert fused[0][1] == pytest.approx(1 / 63 + 1 / 61)
    assert fused[0][2] == ["dense", "sparse"] and fused[1][2] == ["dense"]
    assert fused[0][3] == 3  # the payload of its first sighting
    assert [key for key, *_ in fuse([sparse], k=5)] == ["c", "d"]


def test_modes_versions_and_manifest_flags_are_checked() -> None:
    assert check_mode(None) is None and check_mode("hybrid") == "hybrid"
    with pytest.raises(QueryError, match="dense, hybrid, sparse"):
        check_mode("bm25")
    assert version_tuple("v2.3.5-lite") == (2, 3)
    assert version_tuple("milvus_lite-3.2.2") == (3, 2)
    assert version_tuple("v2.5.4") == (2, 5)
    assert version_tuple("unknown") is None
    with pytest.raises(ValueError, match="hybrid search is for text sources"):
        SourceConfig(name="pics", path="/x", modality="image", hybrid=True)
    base = {"name": "v1", "environment": "default", "database": "d", "schema_version": 3}
    source = {"collection": "docs", "modality": "text"}
    assert ReleaseRecord.from_dict({**base, "schema_version": 2, "sources": {"docs": source}}).sources["docs"].sparse is False  # a release from before
    assert ReleaseRecord.from_dict({**base, "sources": {"docs": {**source, "sparse": "yes"}}}).sources["docs"].sparse is False
    assert ReleaseRecord.from_dict({**base, "sources": {"docs": {**source, "sparse": True}}}).sources["docs"].sparse is True


# --- the library ---------------------------------------------------------------------
def test_a_hybrid_release_records_its_bm25_field_and_answers_every_mode(hybrid_kb: tuple[KbRelease, Path]) -> None:
    kb, _ = hybrid_kb
    assert kb.release("v2").sources["docs"].sparse is True
    assert kb.release("v1").sources["docs"].sparse is False
    assert kb.store.has_sparse(kb.release("v2").database, "docs") and not kb.store.has_sparse(kb.release("v1").database, "docs")
    assert "docs -> docs [text, +BM25]" in release_info_text(kb.release("v2"))

    sparse = kb.query("XQZ_SPILL_LIMIT", k=3, mode="sparse")
    assert sparse.mode == "sparse"
    assert [h.file for h in sparse.hits] == ["tools/flags.md"]  # BM25 returns only chunks with the term
    assert sparse.hits[0].retrievers == ["sparse"]

    default = kb.query("XQZ_SPILL_LIMIT", k=3)  # no mode: hybrid, because the source was built with hybrid: true
    assert default.mode == "hybrid"
    assert default.hits[0].file == "tools/flags.md"
    assert "sparse" in default.hits[0].retrievers
    assert all(h.retrievers == ["dense"] for h in default.hits[1:])  # the others come from the vectors only
    assert default.hits[0].score == pytest.approx(sum(1 / (60 + 1) for _ in default.hits[0].retrievers), abs=1e-3)

    # A metadata filter (issue 15) applies to the BM25 list as well as to the dense one.
    assert [h.file for h in kb.query("XQZ_SPILL_LIMIT", k=3, mode="sparse", where='team == "tools"').hits] == ["tools/flags.md"]
    assert kb.query("XQZ_SPILL_LIMIT", k=3, mode="sparse", where='team == "other"').hits == []
    assert all(h.file == "tools/flags.md" for h in kb.query("XQZ_SPILL_LIMIT", k=3, mode="hybrid", where='team == "tools"').hits)

    dense = kb.query("how do I connect to the VPN from home", k=2, mode="dense")
    assert dense.mode == "dense" and dense.hits[0].file == "it/vpn-setup.md"
    assert all(h.retrievers == ["dense"] and 0 < h.score <= 1 for h in dense.hits)  # cosine, as before


def test_a_release_without_the_field_is_searched_dense_and_refuses_keyword_modes(hybrid_kb: tuple[KbRelease, Path]) -> None:
    kb, _ = hybrid_kb
    old = kb.query("how do I connect to the VPN from home", k=1, release="v1")
    assert old.mode == "dense" and old.hits[0].file == "it/vpn-setup.md" and old.hits[0].retrievers == ["dense"]
    for mode in ("hybrid", "sparse"):
        with pytest.raises(QueryError, match=r"release 'v1'.*no keyword \(BM25\) index.*mode dense"):
            kb.query("XQZ_SPILL_LIMIT", release="v1", mode=mode)  # type: ignore[arg-type]
    assert kb.diff("v1", "v2")["sources"]["docs"]["hybrid"] == {"before": False, "after": True}


def test_a_package_with_the_bm25_field_imports_and_answers_keyword_queries(hybrid_kb: tuple[KbRelease, Path], tmp_path: Path) -> None:
    kb, _ = hybrid_kb
    package = tmp_path / "v2.kbpkg"
    kb.package_export("v2", package)
    imported = kb.package_import(package, name="v2copy")
    record = kb.release(imported.release)
    assert record.sources["docs"].sparse is True
    assert kb.store.has_sparse(record.database, "docs")  # Milvus refilled the field from the rows' text
    hits = kb.search("XQZ_SPILL_LIMIT", k=1, release="v2copy", mode="sparse")
    assert hits[0].file == "tools/flags.md" and hits[0].release == "v2copy"


# --- CLI and HTTP --------------------------------------------------------------------
def test_cli_search_mode(hybrid_kb: tuple[KbRelease, Path]) -> None:
    from kbrelease.cli import app

    _, cfg = hybrid_kb
    runner = CliRunner()
    found = runner.invoke(app, ["-c", str(cfg), "search", "XQZ_SPILL_LIMIT", "--mode", "sparse", "--json"])
    assert found.exit_code == 0, found.output
    hits = json.loads(found.stdout)
    assert hits[0]["file"] == "tools/flags.md" and hits[0]["retrievers"] == ["sparse"]
    bad = runner.invoke(app, ["-c", str(cfg), "search", "XQZ_SPILL_LIMIT", "--mode", "bm25"])
    assert bad.exit_code == 2 and "dense, hybrid, sparse" in bad.output


def test_http_search_mode_is_validated_and_hits_name_their_retrievers(hybrid_kb: tuple[KbRelease, Path]) -> None:
    from service.conftest import make_client, wait_ready

    kb, _ = hybrid_kb
    with make_client(kb) as client:
        wait_ready(client)
        bad = client.get("/api/v1/search", params={"q": "XQZ_SPILL_LIMIT", "mode": "bm25"})
        assert bad.status_code == 422 and "mode" in bad.text
        got = client.get("/api/v1/search", params={"q": "XQZ_SPILL_LIMIT", "k": 2, "mode": "sparse"}).json()
        assert got["mode"] == "sparse" and got["hits"][0]["file"] == "tools/flags.md" and got["hits"][0]["retrievers"] == ["sparse"]
        posted = client.post("/api/v1/search", json={"q": "XQZ_SPILL_LIMIT", "k": 2, "mode": "hybrid"}).json()
        assert posted["mode"] == "hybrid" and "sparse" in posted["hits"][0]["retrievers"]
        pinned = client.get("/api/v1/search", params={"q": "XQZ_SPILL_LIMIT", "release": "v1", "mode": "hybrid"})
        assert pinned.status_code == 400 and "no keyword (BM25) index" in pinned.text
        assert client.get("/api/v1/releases/v2").json()["sources"]["docs"]["sparse"] is True
