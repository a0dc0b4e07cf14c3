"""Search a release: the live one, or a pinned one (canary checks)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from kbrelease.embedding.base import EmbedderIdentity
from kbrelease.errors import ConfigError, ReleaseError
from kbrelease.release.registry import Registry, ReleaseRecord
from kbrelease.store.milvus import MilvusStore


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

    def asdict(self) -> dict[str, Any]:
        return asdict(self)


def resolve_release(registry: Registry, pinned: str | None) -> ReleaseRecord:
    if pinned:
        record = registry.require(pinned)
        if record.state in ("registered", "importing", "building", "dropped"):
            raise ReleaseError(f"release {pinned!r} is {record.state} and cannot be searched")
        return record
    live = registry.pointer().live
    if not live:
        raise ReleaseError(f"nothing is live in environment {registry.env!r}; run `kbrelease publish` (or pin one with --release)")
    return registry.require(live)


def check_compatible(record: ReleaseRecord, kind: str, identity: EmbedderIdentity) -> None:
    """Refuse to query a release with vectors from a different model."""
    built = record.embedders.get(kind)
    if not built:
        raise ReleaseError(f"release {record.name!r} has no {kind} sources")
    if built.get("model") != identity.model or int(built.get("dim", 0)) != identity.dim:
        raise ConfigError(
            f"release {record.name!r} was built with {kind} model {built.get('model')!r} ({built.get('dim')}-d) but the "
            f"configured model is {identity.model!r} ({identity.dim}-d); configure the same model or search a release built with it"
        )


def search_vectors(
    store: MilvusStore,
    record: ReleaseRecord,
    vector: list[float],
    modality: str,
    k: int,
    source: str | None = None,
) -> list[Hit]:
    names = [n for n, c in record.sources.items() if c.modality == modality and (source is None or n == source)]
    if source is not None and not names:
        known = ", ".join(n for n, c in record.sources.items() if c.modality == modality) or "none"
        raise ConfigError(f"release {record.name!r} has no {modality} source {source!r} (has: {known})")
    hits: list[Hit] = []
    for name in names:
        counts = record.sources[name]
        for raw in store.search(record.database, counts.collection, [vector], k=k)[0]:
            ent = raw.get("entity", raw)
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
                )
            )
    hits.sort(key=lambda h: h.score, reverse=True)
    return hits[:k]
