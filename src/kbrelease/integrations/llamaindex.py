"""LlamaIndex on the live release: a retriever returning ``NodeWithScore``.

Needs ``pip install 'kbrelease[llamaindex]'`` (llama-index-core). It reads
through a :class:`~kbrelease.integrations.reader.ReleaseReader`, so it follows
switches of the live pointer without being recreated (or stays on a pinned
release). Each node is one chunk: its text, and ``file``, ``heading``,
``source``, ``release``, ``environment``, ``score``, ``chunk_index``, ``start``,
``file_id`` in its metadata (only ``file``, ``heading`` and ``source`` are shown
to the LLM and the embedder).

>>> from kbrelease.integrations.llamaindex import KbReleaseRetriever
>>> retriever = KbReleaseRetriever.from_config("kbrelease.yaml", k=4)
>>> nodes = retriever.retrieve("how do I reset my password?")
>>> from llama_index.core.query_engine import RetrieverQueryEngine  # with an LLM configured
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from kbrelease.integrations.reader import ReleaseReader

try:
    from llama_index.core.retrievers import BaseRetriever
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
except ImportError as exc:  # pragma: no cover - the extra is installed in the dev extra
    raise ImportError(f"kbrelease.integrations.llamaindex needs llama-index-core: pip install 'kbrelease[llamaindex]' ({exc})") from exc

if TYPE_CHECKING:
    from kbrelease.config import Config

__all__ = ["KbReleaseRetriever"]

_SHOWN = ("file", "heading", "source")
"""The metadata keys LlamaIndex puts in front of the text for the LLM and embedders; the others are for the program."""


class KbReleaseRetriever(BaseRetriever):
    """The ``k`` best chunks of the live (or pinned) release for a query, as LlamaIndex nodes with scores."""

    def __init__(self, reader: ReleaseReader, k: int = 4, source: str | None = None, where: str | None = None, **kwargs: Any) -> None:
        """``source``: search only this text source (default: all text sources); ``where``: only files whose user metadata
        matches (the grammar of ``kbrelease search --where``); ``kwargs`` go to LlamaIndex's ``BaseRetriever``."""
        self.reader = reader
        self.k = k
        self.source = source
        self.where = where
        super().__init__(**kwargs)

    @classmethod
    def from_config(
        cls,
        config: str | Path | Config | None = None,
        *,
        environment: str | None = None,
        release: str | None = None,
        k: int = 4,
        source: str | None = None,
        where: str | None = None,
        refresh_seconds: float | None = None,
    ) -> KbReleaseRetriever:
        """A retriever of ``config`` (a file, default ``./kbrelease.yaml``, or a loaded Config) and ``environment``.

        ``release`` pins one release; ``refresh_seconds`` is how long a read of the live pointer is reused.
        """
        return cls(ReleaseReader.open(config, environment=environment, release=release, refresh_seconds=refresh_seconds), k, source, where)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        result = self.reader.search(query_bundle.query_str, self.k, self.source, self.where)
        nodes = []
        for hit in result.hits:
            metadata = self.reader.metadata(hit)
            hidden = [key for key in metadata if key not in _SHOWN]
            node = TextNode(
                id_=f"{hit.release}:{hit.file_id}:{hit.chunk_index}",
                text=hit.text,
                metadata=metadata,
                excluded_llm_metadata_keys=hidden,
                excluded_embed_metadata_keys=hidden,
            )
            nodes.append(NodeWithScore(node=node, score=hit.score))
        return nodes

    def close(self) -> None:
        self.reader.close()
