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
from typing import Any, Literal, get_args

from kbrelease.config import Modality
from kbrelease.embedding.base import EmbedderIdentity, RecordedEmbedder
from kbrelease.errors import CompatibilityError, NoLiveRelease, QueryError, ReleaseError
from kbrelease.release.registry import Registry, ReleaseRecord
from kbrelease.store.milvus import MilvusStore
from kbrelease.trust.names import check_name

SearchMode = Literal["dense", "hybrid", "sparse"]
"""``dense``: vectors only; ``sparse``: BM25 keyword search only; ``hybrid``: both, fused by reciprocal rank fusion.
No mode (None): hybrid on the sources a release built with ``hybrid: true``, dense on the others."""
SEARCH_MODES: tuple[str, ...] = get_args(SearchMode)
RRF_K = 60
"""The constant of reciprocal rank fusion: a hit at rank r (1-based) of a retriever's list scores 1 / (RRF_K + r)."""
RRF_CANDIDATES = 20
"""Each retriever's list is at least this long before fusion (a hit ranked 7th by both beats one ranked 1st by one)."""

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
    retrievers: list[str] = field(default_factory=lambda: ["dense"])
    """Which retrievers found the hit: ``dense`` (vectors), ``sparse`` (BM25), or both. In a dense search ``score`` is
    the cosine similarity; when a sparse list took part it is the reciprocal rank fusion score (sum of 1/(60 + rank))."""

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
    mode: SearchMode = "dense"
    """What answered: ``dense`` (no source searched by keywords), ``sparse`` or ``hybrid``."""

    def asdict(self) -> dict[str, Any]:
        return {
            "release": self.release,
            "modality": self.modality,
            "mode": self.mode,
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


def check_mode(mode: str | None) -> SearchMode | None:
    """``mode`` if it is one of :data:`SEARCH_MODES` (or None), else QueryError naming them."""
    if mode is None or mode in SEARCH_MODES:
        return mode  # type: ignore[return-value]
    raise QueryError(f"unknown search mode {mode!r}; use one of {', '.join(SEARCH_MODES)} (or none: hybrid where the release has a keyword index)")


def plan_retrievers(record: ReleaseRecord, modality: Modality, mode: SearchMode | None, source: str | None = None) -> dict[str, tuple[bool, bool]]:
    """``source -> (dense, sparse)``: which retrievers search each source of ``record`` for ``mode``.

    A source built without the BM25 field (``hybrid: false``, or any release from before hybrid search) is
    searched dense; ``sparse`` skips it. ``hybrid``/``sparse`` with no such source at all is a QueryError.
    """
    names = source_names(record, modality, source)
    if mode in ("hybrid", "sparse"):
        if modality != "text":
            raise QueryError(f"{mode} search matches words of text chunks; {modality} sources are searched by vectors only (mode dense)")
        if not any(record.sources[n].sparse for n in names):
            which = f"source {source!r} has" if source else f"none of its {modality} sources has"
            raise QueryError(
                f"release {record.name!r}: {which} no keyword (BM25) index, so it cannot be searched in {mode} mode; "
                "search it with mode dense, or build a release with `hybrid: true` on the source"
            )
    plan: dict[str, tuple[bool, bool]] = {}
    for n in names:
        sparse = modality == "text" and record.sources[n].sparse and mode != "dense"
        if mode == "sparse" and not sparse:
            continue
        plan[n] = (mode != "sparse", sparse)
    return plan


def _hit(raw: dict[str, Any], name: str, record: ReleaseRecord, score: float, retrievers: list[str]) -> Hit:
    ent = raw.get("entity", raw)
    page = (ent.get("metadata") or {}).get("page")
    return Hit(
        score=round(score, 6),
        file=ent.get("file", ""),
        source=name,
        release=record.name,
        chunk_index=int(ent.get("chunk_index", 0)),
        heading=ent.get("heading", ""),
        text=ent.get("text", ""),
        start=int(ent.get("start", 0)),
        file_id=ent.get("file_id", ""),
        page=page if isinstance(page, int) else None,
        retrievers=retrievers,
    )


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
            hits.append(_hit(raw, name, record, float(raw["distance"]), ["dense"]))
    hits.sort(key=lambda h: h.score, reverse=True)
    return hits[:k]


def fuse(lists: list[tuple[str, list[tuple[str, Any]]]], k: int, rrf_k: int = RRF_K) -> list[tuple[str, float, list[str], Any]]:
    """Reciprocal rank fusion of ranked lists ``(retriever, [(key, payload), ...])``, best first.

    Returns ``(key, score, retrievers that found it, payload of its first sighting)`` for the best ``k``; ties keep the
    order of first sighting, so the result is deterministic.
    """
    scores: dict[str, float] = {}
    found: dict[str, list[str]] = {}
    payloads: dict[str, Any] = {}
    for retriever, ranked in lists:
        for rank, (key, payload) in enumerate(ranked, start=1):
            scores[key] = scores.get(key, 0.0) + 1.0 / (rrf_k + rank)
            found.setdefault(key, [])
            if retriever not in found[key]:
                found[key].append(retriever)
            payloads.setdefault(key, payload)
    order = sorted(scores, key=lambda key: scores[key], reverse=True)  # sorted() is stable: ties stay in sighting order
    return [(key, scores[key], sorted(found[key]), payloads[key]) for key in order[:k]]


def search_fused(
    store: MilvusStore,
    record: ReleaseRecord,
    vector: list[float] | None,
    query: str,
    plan: dict[str, tuple[bool, bool]],
    k: int,
    rows: RowFilter | None = None,
) -> list[Hit]:
    """Dense and BM25 lists of every planned source, fused by reciprocal rank fusion (RRF) into one ranking.

    Fused here rather than by Milvus's ``hybrid_search``/``RRFRanker`` so each hit can say which retrievers found it,
    and so that sources built without the BM25 field join the same ranking with their dense list.
    """
    depth = max(k, RRF_CANDIDATES)
    expr = rows.expr() if rows is not None else ""
    lists: list[tuple[str, list[tuple[str, Any]]]] = []
    for name, (dense, sparse) in plan.items():
        collection = record.sources[name].collection
        if dense and vector is not None:
            raw = store.search(record.database, collection, [vector], k=depth, expr=expr)[0]
            lists.append(("dense", [(f"{name}\0{r['id']}", (name, r)) for r in raw]))
        if sparse:
            raw = store.search_text(record.database, collection, query, k=depth, expr=expr)
            lists.append(("sparse", [(f"{name}\0{r['id']}", (name, r)) for r in raw]))
    return [_hit(payload[1], payload[0], record, score, found) for _, score, found, payload in fuse(lists, k)]


def run_search(
    store: MilvusStore,
    record: ReleaseRecord,
    modality: Modality,
    identity: EmbedderIdentity,
    embed: Callable[[], list[float]],
    k: int,
    source: str | None = None,
    rows: RowFilter | None = None,
    query: str | None = None,
    mode: SearchMode | None = None,
) -> SearchResult:
    """Check the model matches the release, embed the query once, search; timed per step.

    ``rows`` filters by metadata and time (both retrievers); ``query`` is the text of a text query (what a BM25 list
    matches); ``mode`` see :data:`SearchMode`.
    """
    mode = check_mode(mode)
    if query is None and mode in ("hybrid", "sparse"):
        raise QueryError(f"{mode} search needs a text query; an image is searched by vectors only (mode dense)")
    if query is None or mode == "dense":
        check_compatible(record, modality, identity)
        source_names(record, modality, source)  # an unknown source fails before the model runs
        plan = {}
    else:
        if mode != "sparse":
            check_compatible(record, modality, identity)
        plan = plan_retrievers(record, modality, mode, source)  # an unknown source fails before the model runs
    if rows is not None:
        rows.expr()  # a bad filter fails before the model runs too
    started = time.perf_counter()
    if not any(sparse for _, sparse in plan.values()):
        vector = embed()
        embedded = time.perf_counter()
        hits = search_vectors(store, record, vector, modality, k, source, rows)
        return SearchResult(record.name, modality, hits, embedded - started, time.perf_counter() - embedded)
    dense_vector = embed() if any(dense for dense, _ in plan.values()) else None  # sparse alone needs no model
    embedded = time.perf_counter()
    assert query is not None
    hits = search_fused(store, record, dense_vector, query, plan, k, rows)
    used: SearchMode = "sparse" if dense_vector is None else "hybrid"
    return SearchResult(record.name, modality, hits, embedded - started, time.perf_counter() - embedded, mode=used)
