"""Switch, rollback, status and gc: everything that moves or reads the live pointer."""

from __future__ import annotations

import os
from typing import Any

from kbrelease.errors import ReleaseError
from kbrelease.release.registry import Pointer, Registry, ReleaseRecord, now_iso
from kbrelease.store.milvus import MilvusStore

HISTORY_LIMIT = 500
"""Events kept in the pointer's history (switches, rollbacks, refused gates)."""


def who() -> str:
    """``user@host`` of this process, for the history."""
    import getpass
    import socket

    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (a container with a random uid)
        user = f"uid{os.getuid()}"
    return f"{user}@{socket.gethostname()}"


def _event(pointer: Pointer, to: str, action: str, note: dict[str, Any] | None) -> dict[str, Any]:
    return {"live": to, "at": now_iso(), "action": action, "from": pointer.live, "to": to, "by": who(), **(note or {})}


def record_event(registry: Registry, to: str, action: str, note: dict[str, Any] | None = None) -> None:
    """Append an event that moved nothing (a refused quality gate) to the history; live stays as it is."""
    pointer = registry.pointer()
    pointer.history = [*pointer.history, _event(pointer, to, action, note)][-HISTORY_LIMIT:]
    registry.set_pointer(pointer)


def switch(registry: Registry, name: str, note: dict[str, Any] | None = None, action: str = "switch") -> Pointer:
    """Make ``name`` live with one atomic write of the pointer. Only verified releases.

    ``note`` (``by``, ``reason``, ``recall``, ``skip_quality``) goes into the history entry of the switch.
    """
    record = registry.require(name)
    if record.state != "verified":
        raise ReleaseError(f"release {name!r} is {record.state}; only a verified release can go live (run `kbrelease verify {name}`)")
    pointer = registry.pointer()
    if pointer.live == name:
        return pointer
    event = _event(pointer, name, action, note)
    pointer.previous, pointer.live = pointer.live, name
    pointer.switched_at = event["at"]
    pointer.history = [*pointer.history, event][-HISTORY_LIMIT:]
    registry.set_pointer(pointer)
    if not record.went_live_at:
        record.went_live_at = pointer.switched_at
        registry.put(record)
    return pointer


def rollback(registry: Registry, note: dict[str, Any] | None = None) -> Pointer:
    """Switch back to the previous live release."""
    pointer = registry.pointer()
    if not pointer.previous:
        raise ReleaseError(f"environment {registry.env!r} has no previous live release to roll back to")
    return switch(registry, pointer.previous, note, action="rollback")


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
                "quality": _quality_summary(r.verification.get("quality")),
            }
        )
    return {
        "environment": registry.env,
        "live": pointer.live,
        "previous": pointer.previous,
        "switched_at": pointer.switched_at,
        "releases": releases,
    }


def _quality_summary(quality: dict[str, Any] | None) -> dict[str, Any] | None:
    """recall@k, MRR and the gate's verdict of a release, for status and the web page."""
    if not quality:
        return None
    cand = quality.get("candidate") or {}
    return {"k": cand.get("k"), "recall": cand.get("recall"), "mrr": cand.get("mrr"), "gate_passed": (quality.get("gate") or {}).get("passed")}


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
