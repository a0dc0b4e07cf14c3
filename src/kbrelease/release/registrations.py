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

from dataclasses import asdict, dataclass
from pathlib import PurePosixPath
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
        out = []
        for item in checked:
            file_id = file_id_for(item["source"], item["path"])
            old = self.registry.get_file(file_id)
            body = {**item, "file_id": file_id, "registered_at": old["registered_at"] if old else now_iso()}
            self.registry.put_file(file_id, body)
            out.append(self.status(file_id, body))
        return out

    def list(self) -> list[FileStatus]:
        return [self.status(b["file_id"], b) for b in sorted(self.registry.list_files(), key=lambda b: (b["source"], b["path"]))]

    def get(self, file_id: str) -> FileStatus:
        if not isinstance(file_id, str) or not FILE_ID.fullmatch(file_id):
            raise UnknownFile(f"{str(file_id)[:80]!r} is not a file id; take it from `kbrelease file register` or `kbrelease file status`")
        body = self.registry.get_file(file_id)
        if body is None:
            raise UnknownFile(f"file {file_id} is not registered; register it with `kbrelease file register SOURCE PATH`")
        return self.status(file_id, body)

    def _index_row(self, folder: Any, source: str, file_id: str) -> FileRecord | None:
        try:
            index_file = read_bundle(folder).source(source).index_file
            rows = read_source_index(folder / index_file, where=f"data index {folder}, source {source!r}")
        except (KbReleaseError, OSError, KeyError):
            return None
        return next((r for r in rows if r.file_id == file_id), None)

    def status(self, file_id: str, body: dict[str, Any]) -> FileStatus:
        source, path = str(body["source"]), str(body["path"])
        out = FileStatus(file_id, source, path, "registered", str(body.get("registered_at", "")), note=str(body.get("note", "")))
        current = self._index_row(self.ws.index_dir, source, file_id) if (self.ws.index_dir / "bundle.yaml").exists() else None
        if current is not None:
            out.status, out.checksum = "synced", current.checksum
        else:
            out.reason = "not in the data index yet; the next `kbrelease sync` (or publish) picks it up"
        live = self.registry.pointer().live
        for record in reversed(self.registry.list()):  # newest first
            found = self._in_release(record, live, source, path, file_id, current)
            if found is not None:
                status, reason = found
                out.status, out.reason, out.release = status, reason, record.name
                return out
        return out

    def _in_release(
        self, record: ReleaseRecord, live: str | None, source: str, path: str, file_id: str, current: FileRecord | None
    ) -> tuple[FileState, str | None] | None:
        counts = record.sources.get(source)
        if counts is None or record.state in ("dropping", "dropped", "registered", "importing"):
            return None
        refused = next((f for f in [*counts.failures, *counts.skips] if f.get("file") == path), None)
        if refused is not None:
            return "failed", str(refused.get("reason", ""))[:300] + f" (release {record.name}); fix the file and publish again"
        if record.name != live and record.state not in _BUILT:
            return None
        try:
            present, expected = self.store.file_rows(record.database, counts.collection, [file_id]).get(file_id, (0, 0))
        except KbReleaseError:
            return None
        if present == 0 or present < expected:
            return None
        frozen = self._index_row(self.ws.release_index(record.name), source, file_id)
        if current is not None and frozen is not None and frozen.checksum != current.checksum:
            return "synced", f"changed since release {record.name} was built; the next publish embeds the new version"
        return ("live" if record.name == live else "embedded"), None
