"""``store migrate``: move every release of an environment to another store engine, as packages.

Each built or verified release (live, previous, and the others gc keeps) is
exported from the current engine and imported into the new one through a pipe
(:func:`kbrelease.package.promote.promote`): rows, vectors and the frozen data
index travel as they are, nothing is re-embedded, and every import is checked
and verified like any package. Then the new engine's pointer gets the same
live and previous release and the old history, plus one ``migrate`` event.
The old engine is left as it was (its releases can be dropped with ``gc``
there, or it can be deleted); a rerun imports only what is missing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kbrelease.errors import ReleaseError
from kbrelease.package.export import EXPORTABLE
from kbrelease.package.importer import ImportTarget
from kbrelease.package.promote import promote
from kbrelease.release.lifecycle import HISTORY_LIMIT, who
from kbrelease.release.registry import Pointer, Registry, now_iso
from kbrelease.store.milvus import MilvusStore


@dataclass
class MigrateInfo:
    """What ``store migrate`` moved, and the pointer it wrote on the new engine."""

    environment: str
    from_engine: str
    to_engine: str
    moved: list[dict[str, Any]] = field(default_factory=list)
    """name, rows, state and whether it was already there (a rerun), oldest first."""
    skipped: list[dict[str, str]] = field(default_factory=list)
    """Releases that were not moved (building, failed, dropped) and why."""
    live: str | None = None
    previous: str | None = None
    seconds: float = 0.0

    def asdict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        lines = [f"environment {self.environment}: {self.from_engine} → {self.to_engine}, {len(self.moved)} release(s) in {self.seconds:.1f}s"]
        for item in self.moved:
            note = " (already there)" if item["already_there"] else ""
            lines.append(f"  {item['name']}: {item['rows']:,} rows, {item['state']}{note}")
        for item in self.skipped:
            lines.append(f"  {item['name']}: not moved ({item['why']})")
        lines.append(f"live: {self.live or '-'} (previous: {self.previous or '-'})")
        return "\n".join(lines)


def migrate(
    store: MilvusStore,
    registry: Registry,
    release_dir: Callable[[str], Path],
    target: ImportTarget,
    from_engine: str,
    to_engine: str,
) -> MigrateInfo:
    """Copy every exportable release of ``registry`` into ``target`` (same names), then its pointer."""
    started = time.monotonic()
    pointer = registry.pointer()
    info = MigrateInfo(registry.env, from_engine, to_engine, live=pointer.live, previous=pointer.previous)
    for record in sorted(registry.list(), key=lambda r: r.created_at):
        if record.state not in EXPORTABLE:
            info.skipped.append({"name": record.name, "why": f"{record.state}; only built or verified releases move"})
            continue
        done = promote(store, record, release_dir(record.name), target, name=record.name)
        moved = target.registry.require(record.name)
        if record.went_live_at and not moved.went_live_at:
            moved.went_live_at = record.went_live_at
            target.registry.put(moved)
        info.moved.append(
            {"name": record.name, "rows": sum(c.rows for c in moved.sources.values()), "state": moved.state, "already_there": done.already_imported}
        )
    names = {m["name"] for m in info.moved}
    for role, name in (("live", pointer.live), ("previous", pointer.previous)):
        if name and name not in names:
            raise ReleaseError(f"the {role} release {name!r} could not be moved to {to_engine} (see above); nothing was switched there, rerun after fixing it")
    history = list(pointer.history)
    if pointer.live:
        history.append(
            {
                "live": pointer.live,
                "at": now_iso(),
                "action": "migrate",
                "from": pointer.live,
                "to": pointer.live,
                "by": who(),
                "reason": f"store {from_engine} → {to_engine}",
            }
        )
    target.registry.set_pointer(
        Pointer(
            environment=target.registry.env, live=pointer.live, previous=pointer.previous, switched_at=pointer.switched_at, history=history[-HISTORY_LIMIT:]
        )
    )
    info.seconds = time.monotonic() - started
    return info
