"""Switch, rollback, status and gc: everything that moves or reads the live pointer."""

from __future__ import annotations

from typing import Any

from kbrelease.errors import ReleaseError
from kbrelease.release.registry import Pointer, Registry, ReleaseRecord, now_iso
from kbrelease.store.milvus import MilvusStore


def switch(registry: Registry, name: str) -> Pointer:
    """Make ``name`` live with one atomic write of the pointer. Only verified releases."""
    record = registry.require(name)
    if record.state != "verified":
        raise ReleaseError(f"release {name!r} is {record.state}; only a verified release can go live (run `kbrelease verify {name}`)")
    pointer = registry.pointer()
    if pointer.live == name:
        return pointer
    pointer.previous, pointer.live = pointer.live, name
    pointer.switched_at = now_iso()
    pointer.history = ([*pointer.history, {"live": name, "at": pointer.switched_at}])[-50:]
    registry.set_pointer(pointer)
    if not record.went_live_at:
        record.went_live_at = pointer.switched_at
        registry.put(record)
    return pointer


def rollback(registry: Registry) -> Pointer:
    """Switch back to the previous live release."""
    pointer = registry.pointer()
    if not pointer.previous:
        raise ReleaseError(f"environment {registry.env!r} has no previous live release to roll back to")
    return switch(registry, pointer.previous)


def status(registry: Registry) -> dict[str, Any]:
    """``{"environment", "live", "previous", "releases": [...]}`` for --json and the API."""
    pointer = registry.pointer()
    releases = []
    for r in registry.list():
        releases.append(
            {
                "name": r.name,
                "state": r.display_state(pointer),
                "database": r.database,
                "created_at": r.created_at,
                "data_index_checksum": r.data_index_checksum,
                "sources": {n: {k: v for k, v in vars(c).items() if k not in ("failures", "skips")} for n, c in r.sources.items()},
                "error": r.error,
            }
        )
    return {
        "environment": registry.env,
        "live": pointer.live,
        "previous": pointer.previous,
        "switched_at": pointer.switched_at,
        "releases": releases,
    }


def gc(store: MilvusStore, registry: Registry, keep: int) -> list[str]:
    """Drop the databases of all but the newest ``keep`` releases.

    Never drops the live or the previous release, nor one that is building or
    being imported (rerun the build or the import to finish it).
    """
    if keep < 1:
        raise ReleaseError("gc --keep must be at least 1")
    pointer = registry.pointer()
    alive: list[ReleaseRecord] = [r for r in registry.list() if r.state != "dropped"]
    protected = {pointer.live, pointer.previous} | {r.name for r in alive[-keep:]}
    dropped = []
    for record in alive:
        if record.name in protected or record.state in ("building", "registered", "importing"):
            continue
        store.drop_database(record.database)
        record.state = "dropped"
        registry.put(record)
        dropped.append(record.name)
    return dropped
