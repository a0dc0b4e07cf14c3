"""The input files of a release, as the workspace holds them (for thumbnails and downloads).

A release freezes its data index in ``releases/<name>/index``; the files
themselves live in the workspace mirror, which a later sync may change. So a
file is handed out only while its bytes still have the checksum the release
recorded; otherwise :class:`FileChanged` says so (the HTTP service answers 410).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from kbrelease.errors import DataIndexError, FileChanged, UnknownFile, UnsafePath
from kbrelease.index.data_index import FileRecord, read_bundle, read_source_index
from kbrelease.release.registry import ReleaseRecord
from kbrelease.trust.names import is_name
from kbrelease.trust.paths import contained, is_regular_file
from kbrelease.workspace import Workspace

_BLOCK = 1 << 20


def bounded_sha256(path: Path, size: int) -> str | None:
    """sha256 of a regular file that is exactly ``size`` bytes long; None when it is not.

    Reads at most ``size + 1`` bytes, from a descriptor opened without following
    a final link and checked to be a regular file, so an index naming
    ``/dev/zero`` or a FIFO never keeps a thread reading.
    """
    import hashlib
    import os
    import stat as st

    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as fh:
        if not st.S_ISREG(os.fstat(fd).st_mode):
            return None
        digest = hashlib.sha256()
        left = size + 1
        while left > 0:
            block = fh.read(min(_BLOCK, left))
            if not block:
                break
            digest.update(block)
            left -= len(block)
        return digest.hexdigest() if left == 1 else None


@dataclass(frozen=True)
class ReleaseFile:
    """One input file of a release, checked against the release's data index."""

    release: str
    source: str
    record: FileRecord
    path: Path


class ReleaseFiles:
    """Find and check the input files of releases; thread-safe, with small caches.

    The frozen index of a release never changes, so it is read once per
    (release, source). A file's checksum is computed once per (path, size,
    mtime), so a thumbnail does not hash a large image on every request.
    """

    def __init__(self, workspace: Path, max_indexes: int = 16, max_checksums: int = 4096) -> None:
        self.ws = Workspace(workspace)
        self._lock = threading.Lock()
        self._indexes: OrderedDict[tuple[str, str], dict[str, FileRecord]] = OrderedDict()
        self._checksums: OrderedDict[tuple[str, int, int], str] = OrderedDict()
        self._max_indexes = max_indexes
        self._max_checksums = max_checksums

    def index(self, record: ReleaseRecord, source: str) -> dict[str, FileRecord]:
        """``file_id -> FileRecord`` of one source of a release."""
        if source not in record.sources:
            known = ", ".join(record.sources) or "none"
            raise UnknownFile(f"release {record.name!r} has no source {source!r} (has: {known}); pick one of those")
        key = (record.name, source)
        with self._lock:
            found = self._indexes.get(key)
            if found is not None:
                self._indexes.move_to_end(key)
                return found
        folder = self.ws.release_index(record.name)
        if not is_name("source", source):  # a release record from a package names its sources
            raise UnknownFile(f"release {record.name!r} names source {source[:80]!r}, which is not a valid source name; it was altered")
        try:
            index_file = read_bundle(folder).source(source).index_file
        except Exception as exc:  # a missing or foreign workspace, whatever the parse error: one clear message
            raise UnknownFile(f"the data index of release {record.name!r} is not in this workspace ({folder}); serve from the workspace that built it") from exc
        if index_file != f"{source}.parquet":
            raise DataIndexError(f"the data index of release {record.name!r} gives source {source!r} index file {index_file[:80]!r}; it was altered")
        rows = {r.file_id: r for r in read_source_index(folder / index_file, where=f"data index of release {record.name!r}, source {source!r}")}
        with self._lock:
            self._indexes[key] = rows
            while len(self._indexes) > self._max_indexes:
                self._indexes.popitem(last=False)
        return rows

    def get(self, record: ReleaseRecord, source: str, file_id: str) -> ReleaseFile:
        """The file, if it is in the release and its workspace copy still has the recorded checksum."""
        row = self.index(record, source).get(file_id)
        if row is None:
            raise UnknownFile(f"release {record.name!r} has no file {file_id!r} in source {source!r}; take file ids from search results")
        try:
            path = contained(self.ws.mirror(source), row.relative_path, f"file {file_id} of release {record.name!r}")
        except UnsafePath as exc:
            raise DataIndexError(f"{exc} (the release's data index was altered)") from None
        gone = FileChanged(
            f"{source}/{row.relative_path} of release {record.name!r} is no longer in the workspace (removed by a later sync); "
            "search the live release for current files"
        )
        try:
            stat = path.stat()
        except OSError:
            raise gone from None
        if not is_regular_file(path):
            raise gone
        if stat.st_size != row.size_bytes:
            raise FileChanged(
                f"{source}/{row.relative_path} changed after release {record.name!r} was built (size differs); search the live release for the current version"
            )
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        with self._lock:
            checksum = self._checksums.get(key)
        if checksum is None:
            checksum = bounded_sha256(path, row.size_bytes) or ""
            with self._lock:
                self._checksums[key] = checksum
                while len(self._checksums) > self._max_checksums:
                    self._checksums.popitem(last=False)
        if checksum != row.checksum:
            raise FileChanged(
                f"{source}/{row.relative_path} changed after release {record.name!r} was built (checksum differs); "
                "search the live release for the current version"
            )
        return ReleaseFile(record.name, source, row, path)
