"""Search a release: the live one, or a pinned one (canary checks).

A search resolves its release ONCE (:func:`resolve_release`, or a
:class:`~kbrelease.release.follow.LiveFollower` in the service) and then uses
that record's database and collection names for all its work, so a switch in
the middle of a request can never mix two releases.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from kbrelease.config import Modality
from kbrelease.embedding.base import EmbedderIdentity, RecordedEmbedder
from kbrelease.errors import CompatibilityError, NoLiveRelease, QueryError, ReleaseError
from kbrelease.release.registry import Registry, ReleaseRecord
from kbrelease.store.milvus import MilvusStore
from kbrelease.trust.names import check_name

SEARCHABLE_STATES = ("verified",)
"""Only verified releases (live and retired ones are verified too) may be searched or pinned: pinning one that
is building, failed or dropped would let any reader load half-written or unchecked collections into memory."""


@dataclass
class Hit:
    """One search result."""

    score: float
    file: str
    source: str
    release: str
    chunk_index: int
    heading: str
    text: str
    start: int
    file_id: str
    page: int | None = None
    """1-based page of a PDF hit (None for other formats and images)."""

    def asdict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SearchResult:
    """The hits of one search, the release that answered it, and where the time went."""

    release: str
    modality: Modality
    hits: list[Hit] = field(default_factory=list)
    embed_seconds: float = 0.0
    search_seconds: float = 0.0

    def asdict(self) -> dict[str, Any]:
        return {
            "release": self.release,
            "modality": self.modality,
            "hits": [h.asdict() for h in self.hits],
            "embed_ms": round(self.embed_seconds * 1000, 3),
            "search_ms": round(self.search_seconds * 1000, 3),
        }


def check_searchable(record: ReleaseRecord) -> ReleaseRecord:
    """Refuse a release that is not verified (building, failed, being dropped or gone)."""
    if record.state not in SEARCHABLE_STATES:
        raise ReleaseError(f"release {record.name!r} is {record.state} and cannot be searched; pick a verified, live or retired release (see `kbrelease list`)")
    return record


def resolve_release(registry: Registry, pinned: str | None) -> ReleaseRecord:
    """The pinned release (its name checked first), or the live one; read from the registry now (no cache)."""
    if pinned:
        return check_searchable(registry.require(check_name("release", pinned, "release=")))
    live = registry.pointer().live
    if not live:
        raise NoLiveRelease(no_live_message(registry))
    return registry.require(live)


def no_live_message(registry: Registry) -> str:
    """Why nothing answers, and the command that fixes it: a switch when a verified release waits (after a promote), else a publish."""
    env = "" if registry.env == "default" else f"--env {registry.env} "
    waiting = [r.name for r in registry.list() if r.state == "verified"] if registry.exists() else []
    if waiting:
        name = waiting[-1]
        return (
            f"nothing is live in environment {registry.env!r} yet; release {name!r} is verified: "
            f"run `kbrelease {env}switch {name}` (or pin it with --release {name})"
        )
    return f"nothing is live in environment {registry.env!r}; run `kbrelease {env}publish` (or pin a release with --release)"


def check_compatible(record: ReleaseRecord, kind: str, identity: EmbedderIdentity) -> None:
    """Refuse to query a release with vectors from a different model."""
    if not record.embedders.get(kind):
        raise QueryError(f"release {record.name!r} has no {kind} sources; search it by {'image' if kind == 'text' else 'text'}, or pick another release")
    built = RecordedEmbedder.from_record(record.embedders[kind])
    if built.compare(identity) == "different":  # "compatible" (another runtime or revision of the same model) answers
        raise CompatibilityError(
            f"release {record.name!r} was built with {kind} model {built.model!r} ({built.dim}-d) but the "
            f"configured model is {identity.model!r} ({identity.dim}-d); configure the same model or search a release built with it"
        )


def check_k(k: int) -> int:
    if k < 1:
        raise QueryError(f"k must be at least 1 (got {k})")
    return k


def check_query(query: str, k: int) -> str:
    """The query without surrounding blanks; refuses an empty query and k < 1."""
    text = query.strip()
    if not text:
        raise QueryError("the query is empty; type some words to search for")
    check_k(k)
    return text


def source_names(record: ReleaseRecord, modality: Modality, source: str | None = None) -> list[str]:
    """The sources of ``record`` a search of ``modality`` covers (all of them, or the one asked for)."""
    names = [n for n, c in record.sources.items() if c.modality == modality and (source is None or n == source)]
    if source is not None and not names:
        known = ", ".join(n for n, c in record.sources.items() if c.modality == modality) or "none"
        raise QueryError(f"release {record.name!r} has no {modality} source {source!r} (has: {known}); pick one of those")
    return names


@dataclass(frozen=True)
class RowFilter:
    """What a search keeps: a metadata ``where`` filter and a time range on the files' timestamps (inclusive)."""

    where: str | None = None
    after: datetime | None = None
    before: datetime | None = None

    def expr(self) -> str:
        """The Milvus expression (``""``: none). The filter text is parsed by :mod:`kbrelease.trust.where`; nothing of it is pasted."""
        from kbrelease.trust.where import parse_where

        parts = []
        parsed = parse_where(self.where)
        if parsed is not None:
            parts.append(parsed.milvus("metadata", ("user",)))
        after, before = _epoch(self.after, "after"), _epoch(self.before, "before")
        if after is not None and before is not None and after > before:
            raise QueryError(f"after ({self.after}) is later than before ({self.before}); swap them")
        if after is not None:
            parts.append(f'(metadata["time"] >= {after})')
        if before is not None:
            parts.append(f'(metadata["time"] <= {before})')
        return " and ".join(parts)


def _epoch(when: datetime | None, name: str) -> int | None:
    if when is None:
        return None
    if not isinstance(when, datetime):
        raise QueryError(f"{name} must be a time")
    aware = when if when.tzinfo else when.replace(tzinfo=UTC)
    return math.floor(aware.timestamp())  # rows hold whole seconds (floored) too


def parse_when(value: str | datetime | None, name: str) -> datetime | None:
    """A CLI/HTTP time: ISO 8601 date or time (UTC when no zone), or None; QueryError naming ``name`` otherwise."""
    if value is None or isinstance(value, datetime):
        return value
    text = value.strip()
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise QueryError(f"{name} {value[:60]!r} is not an ISO 8601 date or time; use e.g. 2026-01-01 or 2026-01-01T12:00:00Z") from None


def search_vectors(
    store: MilvusStore,
    record: ReleaseRecord,
    vector: list[float],
    modality: Modality,
    k: int,
    source: str | None = None,
    rows: RowFilter | None = None,
) -> list[Hit]:
    hits: list[Hit] = []
    expr = rows.expr() if rows is not None else ""
    for name in source_names(record, modality, source):
        counts = record.sources[name]
        for raw in store.search(record.database, counts.collection, [vector], k=k, expr=expr)[0]:
            ent = raw.get("entity", raw)
            page = (ent.get("metadata") or {}).get("page")
            hits.append(
                Hit(
                    score=round(float(raw["distance"]), 6),
                    file=ent.get("file", ""),
                    source=name,
                    release=record.name,
                    chunk_index=int(ent.get("chunk_index", 0)),
                    heading=ent.get("heading", ""),
                    text=ent.get("text", ""),
                    start=int(ent.get("start", 0)),
                    file_id=ent.get("file_id", ""),
                    page=page if isinstance(page, int) else None,
                )
            )
    hits.sort(key=lambda h: h.score, reverse=True)
    return hits[:k]


def run_search(
    store: MilvusStore,
    record: ReleaseRecord,
    modality: Modality,
    identity: EmbedderIdentity,
    embed: Callable[[], list[float]],
    k: int,
    source: str | None = None,
    rows: RowFilter | None = None,
) -> SearchResult:
    """Check the model matches the release, embed the query once, search; timed per step."""
    check_compatible(record, modality, identity)
    source_names(record, modality, source)  # an unknown source fails before the model runs
    if rows is not None:
        rows.expr()  # a bad filter fails before the model runs too
    started = time.perf_counter()
    vector = embed()
    embedded = time.perf_counter()
    hits = search_vectors(store, record, vector, modality, k, source, rows)
    return SearchResult(record.name, modality, hits, embedded - started, time.perf_counter() - embedded)
