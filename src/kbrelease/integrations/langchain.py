"""LangChain on the live release: a ``BaseRetriever`` and a read-only ``VectorStore``.

Needs ``pip install 'kbrelease[langchain]'`` (langchain-core). Both read through
a :class:`~kbrelease.integrations.reader.ReleaseReader`, so they follow
switches of the live pointer without being recreated (or stay on a pinned
release). Each :class:`~langchain_core.documents.Document` is one chunk: its
text as ``page_content``, and ``file``, ``heading``, ``source``, ``release``,
``environment``, ``score`` (cosine similarity), ``chunk_index``, ``start``,
``file_id`` in ``metadata``.

>>> from kbrelease.integrations.langchain import KbReleaseRetriever, KbReleaseVectorStore
>>> retriever = KbReleaseRetriever.from_config("kbrelease.yaml", k=4)
>>> docs = retriever.invoke("how do I reset my password?")
>>> store = KbReleaseVectorStore.from_config("kbrelease.yaml")
>>> store.similarity_search_with_score("VPN from home", k=3)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kbrelease.errors import QueryError
from kbrelease.integrations.reader import ReleaseReader, read_only

try:
    from langchain_core.callbacks import CallbackManagerForRetrieverRun
    from langchain_core.documents import Document
    from langchain_core.embeddings import Embeddings
    from langchain_core.retrievers import BaseRetriever
    from langchain_core.vectorstores import VectorStore
    from pydantic import ConfigDict
except ImportError as exc:  # pragma: no cover - the extra is installed in the dev extra
    raise ImportError(f"kbrelease.integrations.langchain needs langchain-core: pip install 'kbrelease[langchain]' ({exc})") from exc

if TYPE_CHECKING:
    from kbrelease.config import Config
    from kbrelease.release.search import SearchResult

__all__ = ["KbReleaseRetriever", "KbReleaseVectorStore"]

_FILTERS = ("where", "after", "before")


def _documents(reader: ReleaseReader, result: SearchResult) -> list[tuple[Document, float]]:
    return [(Document(page_content=h.text, metadata=reader.metadata(h), id=f"{h.file_id}:{h.chunk_index}"), h.score) for h in result.hits]


class KbReleaseRetriever(BaseRetriever):
    """The ``k`` best chunks of the live (or pinned) release for a query, as LangChain documents."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    reader: ReleaseReader
    """Resolves the release per query and searches it."""
    k: int = 4
    source: str | None = None
    """Search only this text source (default: all text sources of the release)."""
    where: str | None = None
    """Only chunks of files whose user metadata matches (``team == "it"``; the grammar of ``kbrelease search --where``)."""

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
        reader = ReleaseReader.open(config, environment=environment, release=release, refresh_seconds=refresh_seconds)
        return cls(reader=reader, k=k, source=source, where=where)

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        return [doc for doc, _ in _documents(self.reader, self.reader.search(query, self.k, self.source, self.where))]


class KbReleaseVectorStore(VectorStore):
    """A read-only LangChain ``VectorStore`` over the live (or pinned) release.

    Searching works as on any vector store (``similarity_search``,
    ``similarity_search_with_score``, ``similarity_search_by_vector``,
    ``similarity_search_with_relevance_scores``, ``as_retriever``); the one
    keyword arguments searches take are ``source`` and the library's filters
    ``where`` (files' user metadata), ``after`` and ``before`` (files' time). Writing (``add_texts``,
    ``add_documents``, ``delete``, ``from_texts``) raises
    :class:`~kbrelease.errors.ReadOnlyRelease`: releases are built by ``kbrelease publish``.
    """

    def __init__(self, reader: ReleaseReader, source: str | None = None) -> None:
        self.reader = reader
        self.source = source

    @classmethod
    def from_config(
        cls,
        config: str | Path | Config | None = None,
        *,
        environment: str | None = None,
        release: str | None = None,
        source: str | None = None,
        refresh_seconds: float | None = None,
    ) -> KbReleaseVectorStore:
        """A store of ``config`` and ``environment`` (see :meth:`KbReleaseRetriever.from_config`)."""
        return cls(ReleaseReader.open(config, environment=environment, release=release, refresh_seconds=refresh_seconds), source)

    @property
    def embeddings(self) -> Embeddings | None:
        """None: queries are embedded by kbrelease with the release's own text model."""
        return None

    def _options(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """The search keywords a release takes: ``source``, and the filters ``where``, ``after``, ``before``."""
        options = {"source": kwargs.pop("source", self.source), **{key: kwargs.pop(key) for key in _FILTERS if key in kwargs}}
        if kwargs:
            raise QueryError(
                f"unsupported search arguments {sorted(kwargs)}; a kbrelease release is searched by text, k, source, "
                "and the filters where (metadata), after and before (time)"
            )
        return options

    # --- reading --------------------------------------------------------------
    def similarity_search_with_score(self, query: str, k: int = 4, **kwargs: Any) -> list[tuple[Document, float]]:
        """Documents with their cosine similarity (higher is closer)."""
        return _documents(self.reader, self.reader.search(query, k, **self._options(kwargs)))

    def similarity_search(self, query: str, k: int = 4, **kwargs: Any) -> list[Document]:
        return [doc for doc, _ in self.similarity_search_with_score(query, k, **kwargs)]

    def similarity_search_by_vector(self, embedding: list[float], k: int = 4, **kwargs: Any) -> list[Document]:
        """Documents nearest to a vector of the release's text model."""
        return [doc for doc, _ in _documents(self.reader, self.reader.search_by_vector(embedding, k, **self._options(kwargs)))]

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        # Scores are cosine similarities in [-1, 1]; LangChain's relevance scores are in [0, 1].
        return lambda score: (score + 1.0) / 2.0

    # --- writing: refused -----------------------------------------------------
    def add_texts(self, texts: Iterable[str], metadatas: list[dict[Any, Any]] | None = None, *, ids: list[str] | None = None, **kwargs: Any) -> list[str]:
        raise read_only("add_texts")

    def add_documents(self, documents: list[Document], **kwargs: Any) -> list[str]:
        raise read_only("add_documents")

    async def aadd_texts(
        self, texts: Iterable[str], metadatas: list[dict[Any, Any]] | None = None, *, ids: list[str] | None = None, **kwargs: Any
    ) -> list[str]:
        raise read_only("aadd_texts")

    async def aadd_documents(self, documents: list[Document], **kwargs: Any) -> list[str]:
        raise read_only("aadd_documents")

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool | None:
        raise read_only("delete")

    async def adelete(self, ids: list[str] | None = None, **kwargs: Any) -> bool | None:
        raise read_only("adelete")

    @classmethod
    def from_texts(
        cls, texts: list[str], embedding: Embeddings, metadatas: list[dict[Any, Any]] | None = None, *, ids: list[str] | None = None, **kwargs: Any
    ) -> KbReleaseVectorStore:
        raise read_only("from_texts")

    def close(self) -> None:
        self.reader.close()
