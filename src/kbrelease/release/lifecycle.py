"""Switch, rollback, status and gc: everything that moves or reads the live pointer."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

from kbrelease.errors import ReleaseError
from kbrelease.release.registry import Pointer, Registry, ReleaseRecord, now_iso
from kbrelease.store.milvus import MilvusStore
from kbrelease.trust import faults
from kbrelease.trust.names import check_name


def missing_parts(store: MilvusStore, record: ReleaseRecord) -> list[str]:
    """The database and collections of ``record`` that are not in Milvus (empty when it is whole)."""
    if record.database not in store.databases():
        return [f"database {record.database}"]
    present = set(store.collections(record.database))
    return [f"collection {record.database}/{c.collection}" for c in record.sources.values() if c.collection not in present]


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
    """Make ``name`` live with one atomic write of the pointer. Only verified releases whose collections all exist.

    ``note`` (``by``, ``reason``, ``recall``, ``skip_quality``) goes into the history entry of the switch.

    Crash safety: the pointer upsert is the switch; ``went_live_at`` is written
    after it, and a release the pointer's history names counts as having gone
    live even when a kill -9 came in between (the next switch writes it).
    """
    check_name("release", name)
    record = registry.require(name)
    if record.state != "verified":
        raise ReleaseError(f"release {name!r} is {record.state}; only a verified release can go live (run `kbrelease verify {name}`)")
    missing = missing_parts(registry.store, record)
    if missing:
        raise ReleaseError(
            f"release {name!r} cannot go live: {', '.join(missing)} missing from Milvus (dropped, or lost with the store); "
            "build or import a new release instead"
        )
    pointer = registry.pointer()
    if pointer.live == name:
        _repair_went_live(registry, pointer)
        return pointer
    event = _event(pointer, name, action, note)
    pointer.previous, pointer.live = pointer.live, name
    pointer.switched_at = event["at"]
    pointer.history = [*pointer.history, event][-HISTORY_LIMIT:]
    registry.set_pointer(pointer)
    faults.point("after:switch.pointer")
    _repair_went_live(registry, pointer)
    return pointer


def _repair_went_live(registry: Registry, pointer: Pointer) -> None:
    """Write ``went_live_at`` of every release the pointer names but whose record lacks it."""
    at = {h.get("live"): h.get("at") for h in pointer.history}
    for record in registry.list():
        if not record.went_live_at and record.state != "dropped" and pointer.went_live(record.name):
            record.went_live_at = at.get(record.name) or pointer.switched_at or now_iso()
            registry.put(record)


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


@dataclass
class GcReport:
    """What gc dropped: releases past ``keep``, interrupted builds, and databases no record names."""

    dropped: list[str] = field(default_factory=list)
    interrupted: list[str] = field(default_factory=list)
    """Releases left ``building`` by a build whose process is gone (kill -9): dropped."""
    orphans: list[str] = field(default_factory=list)
    """Databases with this environment's release prefix that no release record names: dropped."""
    finished: list[str] = field(default_factory=list)
    """Releases a killed gc left ``dropping``: their drop was finished."""
    kept: dict[str, str] = field(default_factory=dict)
    """Releases gc left alone, each with why (live, previous, one of the newest N, being imported, a parallel build)."""

    def asdict(self) -> dict[str, Any]:
        return {"dropped": self.dropped, "interrupted": self.interrupted, "orphans": self.orphans, "finished": self.finished, "kept": self.kept}


def _drop(store: MilvusStore, registry: Registry, record: ReleaseRecord, why: str | None = None) -> None:
    """Mark ``dropping``, drop the database, mark ``dropped``: a kill in between is finished by :func:`repair`."""
    record.state = "dropping"
    if why:
        record.error = why
    registry.put(record)
    faults.point("after:gc.mark")
    store.drop_database(record.database)
    faults.point("after:gc.drop")
    record.state = "dropped"
    registry.put(record)


def repair(store: MilvusStore, registry: Registry) -> list[str]:
    """Finish what a killed command left half done; run under the environment lock by every locking command.

    Today: releases left ``dropping`` by a killed gc are dropped.
    """
    if not registry.exists():
        return []
    finished = []
    for record in registry.list():
        if record.state == "dropping":
            _drop(store, registry, record)
            finished.append(record.name)
    return finished


def _why_kept(record: ReleaseRecord, pointer: Pointer, keep: int, protected: set[str | None]) -> str:
    if record.name == pointer.live:
        return "live"
    if record.name == pointer.previous:
        return "previous (the rollback target)"
    if record.state == "building":
        return "a prepared parallel build"
    if record.state in ("registered", "importing"):
        return "being imported (rerun the import to finish it)"
    return f"one of the newest {keep} (--keep)"


def gc(
    store: MilvusStore,
    registry: Registry,
    keep: int,
    database_prefix: str = "",
    in_parallel_build: set[str] | None = None,
    foreign_prefixes: tuple[str, ...] = (),
) -> GcReport:
    """Drop the databases of all but the newest ``keep`` releases, of interrupted builds, and orphans.

    Never drops the live or the previous release, nor one being imported
    (rerun the import to finish it), nor a prepared parallel build
    (``in_parallel_build``). It runs under the environment lock, so a release
    still ``building`` belongs to a build that died: it is dropped
    (``interrupted``). With ``database_prefix`` (this environment's
    ``<db_prefix>[<env>_]``), databases with that prefix that no release
    record of any environment names are dropped too (``orphans``: a build
    killed before its record was written, an old gc's leftovers), except those
    with one of ``foreign_prefixes`` (other environments' databases).
    """
    if keep < 1:
        raise ReleaseError("gc --keep must be at least 1")
    report = GcReport(finished=repair(store, registry))
    pointer = registry.pointer()
    alive: list[ReleaseRecord] = [r for r in registry.list() if r.state != "dropped"]
    protected = {pointer.live, pointer.previous} | {r.name for r in alive[-keep:] if r.state != "building"}
    for record in alive:
        if record.state == "building" and record.name not in (in_parallel_build or set()) and record.name not in (pointer.live, pointer.previous):
            _drop(store, registry, record, "build interrupted (its process is gone); dropped by gc — build a new release")
            report.interrupted.append(record.name)
            continue
        if record.name in protected or record.state in ("building", "registered", "importing"):
            report.kept[record.name] = _why_kept(record, pointer, keep, protected)
            continue
        _drop(store, registry, record)
        report.dropped.append(record.name)
    if database_prefix:
        known = registry.known_databases() | {registry.db}
        pattern = re.compile(re.escape(database_prefix) + r"[A-Za-z0-9_]{1,48}")
        for db in sorted(store.databases()):
            if db not in known and pattern.fullmatch(db) and not db.startswith(foreign_prefixes):
                store.drop_database(db)
                report.orphans.append(db)
    return report
