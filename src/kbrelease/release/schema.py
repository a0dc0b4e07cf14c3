"""Manifest schema versions: what each kbrelease reads, and migrations on read.

A release manifest (the registry row, ``manifest.json`` in the workspace and
in a package) carries ``schema_version``. This kbrelease reads every version
it ever wrote, migrating older ones on read, one step at a time, and refuses a
newer one with a message to upgrade. Add a version by appending to
:data:`MANIFEST_VERSIONS` and registering the step from the previous one in
:data:`_MIGRATIONS`; ``docs/usage.md`` shows the same table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kbrelease.errors import CompatibilityError


@dataclass(frozen=True)
class ManifestVersion:
    """One manifest schema version and what changed in it."""

    version: int
    written_by: str
    changes: str


MANIFEST_VERSIONS: tuple[ManifestVersion, ...] = (
    ManifestVersion(1, "kbrelease 0.1.0 before release packages", "first version: release record with states building/built/verified/failed/dropped"),
    ManifestVersion(
        2,
        "kbrelease 0.1.0 with release packages",
        "states registered/importing (package import); `origin` (the package a release was imported from)",
    ),
    ManifestVersion(3, "kbrelease 0.1.0 with hybrid search", "`sources.*.sparse`: the source's collection has a BM25 field (hybrid search)"),
)
MANIFEST_SCHEMA_VERSION = MANIFEST_VERSIONS[-1].version
"""The version this kbrelease writes; also the newest it reads."""
READS: tuple[int, ...] = tuple(v.version for v in MANIFEST_VERSIONS)
"""The compatibility table of this kbrelease: every manifest schema version it reads."""


def _v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    # v1 had no package import: nothing was imported, every state is still valid.
    data.setdefault("origin", None)
    return data


def _v2_to_v3(data: dict[str, Any]) -> dict[str, Any]:
    # v2 had no hybrid search: no collection has a BM25 field, every source is searched by its vectors.
    data["sources"] = {name: {**counts, "sparse": False} for name, counts in (data.get("sources") or {}).items()}
    return data


_MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _v1_to_v2, 2: _v2_to_v3}


def manifest_version(data: dict[str, Any], where: str) -> int:
    raw = data.get("schema_version", 1)  # every manifest ever written has one; 1 is the only safe guess
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 1:
        raise CompatibilityError(f"{where}: schema_version {raw!r} is not a manifest schema version; the manifest is damaged")
    return raw


def check_readable(version: int, where: str) -> None:
    """Refuse a manifest newer than this kbrelease."""
    from kbrelease import __version__

    if version > MANIFEST_SCHEMA_VERSION:
        raise CompatibilityError(
            f"{where} has manifest schema version {version}, newer than kbrelease {__version__} reads (versions "
            f"{', '.join(map(str, READS))}); upgrade kbrelease (pip install -U kbrelease) to read it"
        )


def migrate_manifest(data: dict[str, Any], where: str = "the manifest") -> dict[str, Any]:
    """``data`` in the current schema: migrated step by step from an older one, refused if newer."""
    version = manifest_version(data, where)
    check_readable(version, where)
    out = dict(data)
    while version < MANIFEST_SCHEMA_VERSION:
        out = _MIGRATIONS[version](out)
        version += 1
    out["schema_version"] = version
    return out
