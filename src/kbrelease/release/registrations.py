"""Files registered for the next release, and where each one stands (seed 001: ``POST /api/v1/files/register``).

A registration is one row of the registry (kind ``file``), keyed by the
file's stable id (:func:`~kbrelease.index.data_index.file_id_for` of its
source and path), so every replica and CLI sees the same registrations. Like
``live`` for releases, a file's status is never stored: it is derived each
time from what really happened to it, so it cannot disagree with a publish:

- ``registered``: not in the workspace's data index yet (no sync has seen it);
- ``synced``: in the data index, not in any built release (or changed since);
- ``embedded``: its vectors are in a built release that is not live;
- ``live``: its vectors are in the live release;
- ``failed``: the newest build that had it refused it; ``reason`` says why.
"""

from __future__ import annotations

import builtins
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from kbrelease.config import Config
from kbrelease.errors import ConfigError, KbReleaseError, QueryError, UnknownFile
from kbrelease.index.bounded import FILE_ID
from kbrelease.index.data_index import FileRecord, file_id_for, read_bundle, read_source_index
from kbrelease.release.registry import Registry, ReleaseRecord, now_iso
from kbrelease.store.milvus import MilvusStore
from kbrelease.trust.names import check_name
from kbrelease.trust.paths import safe_relpath
from kbrelease.workspace import Workspace

FileState = Literal["registered", "synced", "embedded", "live", "failed"]
MAX_REGISTER = 1000
"""Files one registration call may carry."""
MAX_NOTE = 500
_BUILT = ("built", "verified")


@dataclass
class FileStatus:
    """One registered file and where it stands."""

    file_id: str
    source: str
    path: str
    status: FileState
    registered_at: str
    reason: str | None = None
    """Why it failed, or what it waits for."""
    release: str | None = None
    """The release that holds it (embedded, live) or refused it (failed)."""
    checksum: str | None = None
    """sha256 of the file as the data index has it (None before a sync)."""
    note: str = ""

    def asdict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        where = f" ({self.release})" if self.release else ""
        why = f": {self.reason}" if self.reason else ""
        return f"{self.file_id}  {self.status:<10} {self.source}/{self.path}{where}{why}"


def check_registration(cfg: Config, item: Any) -> dict[str, str]:
    """One ``{"source", "path", "note"?}`` item, validated: a configured source, a plain relative path of its modality."""
    if not isinstance(item, dict) or set(item) - {"source", "path", "note"}:
        raise QueryError("each file to register is {source, path, note?}; nothing was registered")
    source = check_name("source", item.get("source"), "file registration")
    try:
        src = cfg.source(source)
    except ConfigError as exc:
        raise QueryError(str(exc)) from None
    path = safe_relpath(item.get("path"), f"file registration for source {source!r}")
    if PurePosixPath(path).suffix.lower() not in src.suffixes:
        raise QueryError(
            f"{source}/{path[:200]}: source {source!r} holds {src.modality} files ({', '.join(src.suffixes)}); register it under a source of its kind"
        )
    note = item.get("note") or ""
    if not isinstance(note, str) or len(note) > MAX_NOTE or not note.isprintable():
        raise QueryError(f"{source}/{path[:200]}: note must be printable text of at most {MAX_NOTE} characters")
    return {"source": source, "path": path, "note": note}


class FileRegistry:
    """Register files and derive their status from the data index, the releases and their collections."""

    def __init__(self, cfg: Config, registry: Registry, store: MilvusStore) -> None:
        self.cfg = cfg
        self.registry = registry
        self.store = store
        self.ws = Workspace.of(cfg)

    def register(self, items: list[Any]) -> list[FileStatus]:
        """Register ``items`` (all validated before the first is written); registering a file again keeps its first date."""
        if not isinstance(items, list) or not 1 <= len(items) <= MAX_REGISTER:
            raise QueryError(f"register 1 to {MAX_REGISTER} files at a time")
        checked = [check_registration(self.cfg, item) for item in items]
        bodies = []
        for item in checked:
            file_id = file_id_for(item["source"], item["path"])
            old = self.registry.get_file(file_id)
            body = {**item, "file_id": file_id, "registered_at": old["registered_at"] if old else now_iso()}
            self.registry.put_file(file_id, body)
            bodies.append(body)
        return self._statuses(bodies)

    def list(self) -> list[FileStatus]:
        """Every registered file, by source and path."""
        return self._statuses(sorted(self.registry.list_files(), key=lambda b: (b["source"], b["path"])))

    def get(self, file_id: str) -> FileStatus:
        if not isinstance(file_id, str) or not FILE_ID.fullmatch(file_id):
            raise UnknownFile(f"{str(file_id)[:80]!r} is not a file id; take it from `kbrelease file register` or `kbrelease file status`")
        body = self.registry.get_file(file_id)
        if body is None:
            raise UnknownFile(f"file {file_id} is not registered; register it with `kbrelease file register SOURCE PATH`")
        return self._statuses([body])[0]

    def _statuses(self, bodies: builtins.list[dict[str, Any]]) -> builtins.list[FileStatus]:
        """The status of each registration, reading each index, release list and collection once for all of them."""
        view = _View(self.store, self.ws, self.registry.pointer().live, list(reversed(self.registry.list())), bodies)
        return [view.status(body) for body in bodies]


class _View:
    """What the statuses are derived from, read once per call: the data index, the releases (newest first) and their rows."""

    def __init__(self, store: MilvusStore, ws: Workspace, live: str | None, releases: list[ReleaseRecord], bodies: list[dict[str, Any]]) -> None:
        self.store, self.ws, self.live, self.releases = store, ws, live, releases
        self.wanted: dict[str, set[str]] = {}
        for body in bodies:
            self.wanted.setdefault(str(body["source"]), set()).add(str(body["file_id"]))
        self._indexes: dict[tuple[str, str], dict[str, FileRecord]] = {}
        self._rows: dict[tuple[str, str], dict[str, tuple[int, int]] | None] = {}

    def index(self, folder: Path, source: str) -> dict[str, FileRecord]:
        """``file_id -> FileRecord`` of the registered files of ``source`` in a data index (empty when there is none)."""
        key = (str(folder), source)
        if key not in self._indexes:
            found: dict[str, FileRecord] = {}
            if (folder / "bundle.yaml").exists():
                try:
                    index_file = read_bundle(folder).source(source).index_file
                    rows = read_source_index(folder / index_file, where=f"data index {folder}, source {source!r}")
                    found = {r.file_id: r for r in rows if r.file_id in self.wanted.get(source, set())}
                except (KbReleaseError, OSError, KeyError):
                    found = {}
            self._indexes[key] = found
        return self._indexes[key]

    def rows(self, record: ReleaseRecord, source: str) -> dict[str, tuple[int, int]] | None:
        """``file_id -> (rows present, chunks expected)`` of the registered files in a release's collection (None: unreadable)."""
        key = (record.name, source)
        if key not in self._rows:
            try:
                self._rows[key] = self.store.file_rows(record.database, record.sources[source].collection, sorted(self.wanted.get(source, set())))
            except KbReleaseError:
                self._rows[key] = None
        return self._rows[key]

    def status(self, body: dict[str, Any]) -> FileStatus:
        file_id, source, path = str(body["file_id"]), str(body["source"]), str(body["path"])
        out = FileStatus(file_id, source, path, "registered", str(body.get("registered_at", "")), note=str(body.get("note", "")))
        current = self.index(self.ws.index_dir, source).get(file_id)
        if current is not None:
            out.status, out.checksum = "synced", current.checksum
        else:
            out.reason = "not in the data index yet; the next `kbrelease sync` (or publish) picks it up"
        for record in self.releases:
            found = self._in_release(record, source, path, file_id, current)
            if found is not None:
                out.status, out.reason, out.release = found[0], found[1], record.name
                break
        return out

    def _in_release(self, record: ReleaseRecord, source: str, path: str, file_id: str, current: FileRecord | None) -> tuple[FileState, str | None] | None:
        counts = record.sources.get(source)
        if counts is None or record.state in ("dropping", "dropped", "registered", "importing"):
            return None
        refused = next((f for f in [*counts.failures, *counts.skips] if f.get("file") == path), None)
        if refused is not None:
            return "failed", str(refused.get("reason", ""))[:300] + f" (release {record.name}); fix the file and publish again"
        if record.name != self.live and record.state not in _BUILT:
            return None
        present, expected = (self.rows(record, source) or {}).get(file_id, (0, 0))
        if present == 0 or present < expected:
            return None
        frozen = self.index(self.ws.release_index(record.name), source).get(file_id)
        if current is not None and frozen is not None and frozen.checksum != current.checksum:
            return "synced", f"changed since release {record.name} was built; the next publish embeds the new version"
        return ("live" if record.name == self.live else "embedded"), None
