"""Read the live (or a pinned) release for the LangChain and LlamaIndex integrations.

A :class:`ReleaseReader` holds a :class:`~kbrelease.api.KbRelease` and a
:class:`~kbrelease.release.follow.LiveFollower`: every query resolves its
release once (the live pointer is re-read when older than ``refresh_seconds``;
0 re-reads it on every query), then searches that release only, so a switch
reaches a long-lived retriever within ``refresh_seconds`` and never mixes two
releases in one answer. Only text sources are searched, with the release's
own text model.

>>> from kbrelease.integrations.reader import ReleaseReader
>>> with ReleaseReader.open("kbrelease.yaml") as reader:
...     hits = reader.search("how do I reset my password?", k=3).hits
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kbrelease.errors import QueryError, ReadOnlyRelease

if TYPE_CHECKING:
    from kbrelease.api import KbRelease
    from kbrelease.config import Config
    from kbrelease.release.follow import LiveFollower
    from kbrelease.release.registry import ReleaseRecord
    from kbrelease.release.search import Hit, SearchResult

When = datetime | str | None
"""A time bound of a filter: a datetime, or ISO 8601 text (UTC when no zone)."""


class ReleaseReader:
    """Text search of the live release of one environment (or of a pinned release), following switches."""

    def __init__(self, kb: KbRelease, release: str | None = None, refresh_seconds: float | None = None, *, close_kb: bool = False) -> None:
        """``kb``: the facade to search with; ``release``: pin this (verified) release instead of following the live one;
        ``refresh_seconds``: how long a read of the live pointer is reused (default ``service.live_refresh_seconds``;
        0 reads it on every query); ``close_kb``: close ``kb`` with the reader."""
        from kbrelease.release.follow import LiveFollower
        from kbrelease.trust.names import check_name

        if refresh_seconds is not None and refresh_seconds < 0:
            raise QueryError(f"refresh_seconds must be 0 or more (got {refresh_seconds})")
        self.kb = kb
        self.release = check_name("release", release) if release else None
        self.refresh_seconds = kb.cfg.service.live_refresh_seconds if refresh_seconds is None else refresh_seconds
        self._follower: LiveFollower = LiveFollower(kb.registry, kb.store, self.refresh_seconds)
        self._close_kb = close_kb

    @classmethod
    def open(
        cls,
        config: str | Path | Config | None = None,
        *,
        environment: str | None = None,
        release: str | None = None,
        refresh_seconds: float | None = None,
    ) -> ReleaseReader:
        """A reader with its own facade: ``config`` is a config file (default ``./kbrelease.yaml`` or ``$KBRELEASE_CONFIG``)
        or a loaded :class:`~kbrelease.config.Config`; ``environment`` as ``--env``."""
        from kbrelease.api import KbRelease
        from kbrelease.config import Config, load_config

        cfg = config if isinstance(config, Config) else load_config(config, overrides={"environment": environment})
        if isinstance(config, Config) and environment is not None and environment != config.environment:
            raise QueryError(f"the config given is for environment {config.environment!r}, not {environment!r}; load it with --env {environment}")
        return cls(KbRelease(cfg), release, refresh_seconds, close_kb=True)

    @property
    def environment(self) -> str:
        return self.kb.cfg.environment

    def resolve(self) -> ReleaseRecord:
        """The release the next query uses: the pinned one, or the live one (re-read if older than ``refresh_seconds``)."""
        return self._follower.resolve(self.release)

    def search(self, query: str, k: int = 4, source: str | None = None, where: str | None = None, after: When = None, before: When = None) -> SearchResult:
        """The ``k`` best chunks of the release's text sources (or of ``source``) for ``query``.

        ``where``, ``after``, ``before``: the library's filters on the files' user metadata and time (see ``KbRelease.query``).
        """
        return self.kb.query(query, k, source, self.resolve(), where=where, after=after, before=before)

    def search_by_vector(
        self, vector: list[float], k: int = 4, source: str | None = None, where: str | None = None, after: When = None, before: When = None
    ) -> SearchResult:
        """The ``k`` chunks nearest to ``vector``, which must come from the release's text model (same dimension)."""
        from kbrelease.api import row_filter
        from kbrelease.embedding.base import RecordedEmbedder
        from kbrelease.release.search import SearchResult, check_k, search_vectors

        check_k(k)
        rows = row_filter(where, after, before)
        record = self.resolve()
        if not record.embedders.get("text"):
            raise QueryError(f"release {record.name!r} has no text sources; pick another release")
        dim = RecordedEmbedder.from_record(record.embedders["text"]).dim
        if len(vector) != dim:
            raise QueryError(f"the vector has {len(vector)} dimensions but release {record.name!r} holds {dim}-d text vectors; embed with its model")
        return SearchResult(record.name, "text", search_vectors(self.kb.store, record, [float(x) for x in vector], "text", k, source, rows))

    def metadata(self, hit: Hit) -> dict[str, Any]:
        """What a framework document carries about a hit: where it comes from, in which release, and its score."""
        return {
            "id": f"{hit.file_id}:{hit.chunk_index}",
            "file": hit.file,
            "heading": hit.heading,
            "source": hit.source,
            "release": hit.release,
            "environment": self.environment,
            "score": hit.score,
            "chunk_index": hit.chunk_index,
            "start": hit.start,
            "file_id": hit.file_id,
        }

    def close(self) -> None:
        if self._close_kb:
            self.kb.close()

    def __enter__(self) -> ReleaseReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_only(what: str) -> ReadOnlyRelease:
    """The error of every writing method of the integrations."""
    return ReadOnlyRelease(
        f"{what}: a kbrelease release is read-only; add or change the files of a source and run `kbrelease publish` "
        "(a new release is built, verified and switched live, and this reader follows it)"
    )
