"""LangChain and LlamaIndex read the live release through kbrelease, and follow a switch without being recreated."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kbrelease import KbRelease, load_config
from kbrelease.errors import QueryError, ReadOnlyRelease
from kbrelease.integrations.reader import ReleaseReader

EXAMPLE_CORPUS = Path(__file__).resolve().parents[2] / "examples" / "corpus"

pytestmark = pytest.mark.slow


@pytest.fixture
def text_project(tmp_path: Path, isolated_milvus: dict[str, str], text_embedder: Any) -> Iterator[KbRelease]:
    """Two text files of the example corpus, published as v1."""
    docs = tmp_path / "docs"
    for rel in ["it/vpn-setup.md", "facilities/fire-drill.md"]:
        (docs / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(EXAMPLE_CORPUS / "text" / rel, docs / rel)
    cfg_file = tmp_path / "kbrelease.yaml"
    cfg_file.write_text(f"workspace: {tmp_path / 'ws'}\nsources:\n  - {{name: docs, path: {docs}, modality: text}}\n", encoding="utf-8")
    cfg = load_config(cfg_file, env={}, overrides=isolated_milvus)
    with KbRelease(cfg, text_embedder=text_embedder) as kb:
        assert kb.publish().live == "v1"
        yield kb


def _publish_bicycles(kb: KbRelease) -> None:
    docs = Path(kb.cfg.sources[0].path)
    page = "---\nteam: facilities\n---\n# Bicycles\n\n## Parking\n\nBicycles are parked in the basement rack next to the showers.\n"
    (docs / "bicycles.md").write_text(page, encoding="utf-8")
    assert kb.publish().live == "v2"


def test_langchain_retriever_and_store_follow_a_switch(text_project: KbRelease, isolated_milvus: dict[str, str]) -> None:
    from langchain_core.documents import Document

    from kbrelease.integrations.langchain import KbReleaseRetriever, KbReleaseVectorStore

    retriever = KbReleaseRetriever(reader=ReleaseReader(text_project, refresh_seconds=0), k=2)
    store = KbReleaseVectorStore(ReleaseReader(text_project, refresh_seconds=0))
    pinned = KbReleaseVectorStore(ReleaseReader(text_project, release="v1"))

    docs = retriever.invoke("how do I connect to the VPN from home")
    assert len(docs) == 2 and all(isinstance(d, Document) for d in docs)
    top = docs[0]
    assert top.metadata["file"] == "it/vpn-setup.md"
    assert (top.metadata["source"], top.metadata["release"], top.metadata["environment"]) == ("docs", "v1", "default")
    assert top.metadata["heading"] and top.page_content
    assert top.metadata["score"] >= docs[1].metadata["score"]

    scored = store.similarity_search_with_score("fire drill assembly point", k=1)
    assert scored[0][0].metadata["file"] == "facilities/fire-drill.md"
    assert scored[0][1] == scored[0][0].metadata["score"]

    _publish_bicycles(text_project)  # v2 goes live; the same objects answer from it

    after = retriever.invoke("where can I park my bicycle")
    assert (after[0].metadata["file"], after[0].metadata["release"]) == ("bicycles.md", "v2")
    assert after[0].metadata["heading"] == "Bicycles > Parking"
    via_store = store.as_retriever(search_kwargs={"k": 1}).invoke("where can I park my bicycle")
    assert [(d.metadata["file"], d.metadata["release"]) for d in via_store] == [("bicycles.md", "v2")]
    relevance = store.similarity_search_with_relevance_scores("where can I park my bicycle", k=1)
    assert 0.5 < relevance[0][1] <= 1.0
    assert {d.metadata["release"] for d in pinned.similarity_search("where can I park my bicycle", k=3)} == {"v1"}

    vector = text_project.query_text_embedder.embed_texts(["where can I park my bicycle"])[0].tolist()
    assert store.similarity_search_by_vector(vector, k=1)[0].metadata["file"] == "bicycles.md"
    with pytest.raises(QueryError, match="dimensions"):
        store.similarity_search_by_vector([0.1, 0.2], k=1)
    # The library's filters: the files' user metadata (front matter here).
    only = store.similarity_search("fire drill", k=3, where='team == "facilities"')
    assert [d.metadata["file"] for d in only] == ["bicycles.md"]
    assert KbReleaseRetriever(reader=store.reader, k=3, where='team == "nobody"').invoke("fire drill") == []
    with pytest.raises(QueryError, match="unsupported search arguments"):
        store.similarity_search("bicycle", k=1, filter={"file": "x"})

    # From a config, as a program would open it: its own facade, the live release read per query.
    cfg = load_config(Path(text_project.cfg.workspace).parent / "kbrelease.yaml", env={}, overrides=isolated_milvus)
    with KbReleaseRetriever.from_config(cfg, k=1, refresh_seconds=0).reader as own:
        assert KbReleaseRetriever(reader=own, k=1).invoke("fire drill")[0].metadata["release"] == "v2"
    with pytest.raises(QueryError, match="not 'prod'"):
        ReleaseReader.open(cfg, environment="prod")

    with pytest.raises(ReadOnlyRelease, match="kbrelease publish"):
        store.add_texts(["a new page"])
    with pytest.raises(ReadOnlyRelease, match="kbrelease publish"):
        store.add_documents([Document(page_content="a new page")])
    with pytest.raises(ReadOnlyRelease, match="kbrelease publish"):
        store.delete(["x"])
    with pytest.raises(ReadOnlyRelease, match="kbrelease publish"):
        KbReleaseVectorStore.from_texts(["a"], embedding=None)  # type: ignore[arg-type]


def test_llamaindex_retriever_follows_a_switch(text_project: KbRelease) -> None:
    from llama_index.core.schema import MetadataMode, NodeWithScore

    from kbrelease.integrations.llamaindex import KbReleaseRetriever

    retriever = KbReleaseRetriever(ReleaseReader(text_project, refresh_seconds=0), k=2)
    pinned = KbReleaseRetriever(ReleaseReader(text_project, release="v1"), k=3)

    nodes = retriever.retrieve("how do I connect to the VPN from home")
    assert len(nodes) == 2 and all(isinstance(n, NodeWithScore) for n in nodes)
    assert (nodes[0].node.metadata["file"], nodes[0].node.metadata["release"]) == ("it/vpn-setup.md", "v1")
    assert nodes[0].score == nodes[0].node.metadata["score"]
    shown = nodes[0].node.get_content(metadata_mode=MetadataMode.LLM)
    assert "file: it/vpn-setup.md" in shown and "release:" not in shown

    _publish_bicycles(text_project)

    after = retriever.retrieve("where can I park my bicycle")
    assert (after[0].node.metadata["file"], after[0].node.metadata["release"]) == ("bicycles.md", "v2")
    assert "basement rack" in after[0].node.get_content()
    assert {n.node.metadata["release"] for n in pinned.retrieve("where can I park my bicycle")} == {"v1"}
    filtered = KbReleaseRetriever(ReleaseReader(text_project, refresh_seconds=0), k=3, where='team == "facilities"')
    assert [n.node.metadata["file"] for n in filtered.retrieve("VPN")] == ["bicycles.md"]
