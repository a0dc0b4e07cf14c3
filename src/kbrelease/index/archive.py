"""Batch download: files of a data index as one tar stream, built on the fly.

Nothing is copied or buffered: each member's header is made from the index,
its bytes are read from the workspace mirror in 1 MiB blocks, and the sha256
is checked as they pass. Every member carries PAX headers
``KBRELEASE.file_id`` and ``KBRELEASE.sha256`` so a client can verify what it
unpacks. The archive's exact length is known before the first byte, so an
interrupted stream is visible to the receiver; a file that changed since the
index was written aborts the stream rather than send wrong bytes.
"""

from __future__ import annotations

import hashlib
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from kbrelease.errors import DataIndexError, NotInIndex, UnsafePath
from kbrelease.index.bounded import FILE_ID
from kbrelease.index.query import IndexQuery
from kbrelease.trust.names import is_name
from kbrelease.trust.paths import contained, is_regular_file
from kbrelease.workspace import Workspace

MAX_FILES = 10_000
"""Most files one download request may name."""
_BLOCK = 1 << 20


@dataclass(frozen=True)
class Member:
    file_id: str
    source: str
    relative_path: str
    size: int
    checksum: str
    path: Path
    mtime: float

    @property
    def name(self) -> str:
        return f"{self.source}/{self.relative_path}"

    def header(self) -> bytes:
        info = tarfile.TarInfo(self.name)
        info.size = self.size
        info.mtime = int(self.mtime)
        info.mode = 0o644
        info.pax_headers = {"KBRELEASE.file_id": self.file_id, "KBRELEASE.sha256": self.checksum}
        return info.tobuf(tarfile.PAX_FORMAT, encoding="utf-8", errors="strict")


@dataclass
class Download:
    """A planned tar stream: its members and exact length."""

    members: list[Member]

    @property
    def content_length(self) -> int:
        return sum(len(m.header()) + m.size + (-m.size % 512) for m in self.members) + 1024

    def stream(self) -> Iterator[bytes]:
        for m in self.members:
            yield m.header()
            digest = hashlib.sha256()
            left = m.size
            with _open_regular(m.path, m.name) as fh:
                while left:
                    block = fh.read(min(_BLOCK, left))
                    if not block:
                        break
                    digest.update(block)
                    left -= len(block)
                    yield block
            if left or digest.hexdigest() != m.checksum:
                raise DataIndexError(f"{m.name} changed in the workspace mirror while it was sent; run `kbrelease sync` and download again")
            if m.size % 512:
                yield b"\0" * (-m.size % 512)
        yield b"\0" * 1024


def _open_regular(path: Path, name: str) -> IO[bytes]:
    """``path`` opened for reading only if it is still a regular file (not swapped for a link, FIFO or device since it was planned)."""
    import os
    import stat

    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise DataIndexError(f"{name} cannot be opened in the workspace mirror ({exc.strerror}); run `kbrelease sync` and download again") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise DataIndexError(f"{name} is no longer a regular file in the workspace mirror; run `kbrelease sync` and download again")
    return os.fdopen(fd, "rb")


def check_file_ids(file_ids: Sequence[str]) -> list[str]:
    """The ids, in order and without repeats; refuses anything that is not an id (paths, '..')."""
    if not file_ids:
        raise DataIndexError("no file ids given; pass the file_id values of /files records")
    if len(file_ids) > MAX_FILES:
        raise DataIndexError(f"{len(file_ids)} file ids in one request; ask for at most {MAX_FILES} per download")
    for fid in file_ids:
        if not isinstance(fid, str) or not FILE_ID.fullmatch(fid):
            shown = repr(fid)[:80]
            raise DataIndexError(f"invalid file id {shown}: ids are letters, digits, '_' and '-' (the file_id of a /files record), never paths")
    return list(dict.fromkeys(file_ids))


def mirror_file(ws: Workspace, source: str, relative_path: str, file_id: str) -> Path:
    """The mirror copy of an index record, resolved inside the real mirror of its source.

    ``source`` and ``relative_path`` come from a data index, which may have come
    in a package: the source must be a valid source name (so the mirror folder is
    ``<workspace>/mirror/<source>`` and nothing else), and the path must resolve
    inside that folder, links included (:func:`kbrelease.trust.paths.contained`).
    """
    if not is_name("source", source):
        raise DataIndexError(f"file {file_id} belongs to source {str(source)[:80]!r}, which is not a source name; the data index was altered — refusing it")
    try:
        return contained(ws.mirror(source), relative_path, f"file {file_id} of source {source!r}")
    except UnsafePath as exc:
        raise DataIndexError(f"{exc} (the data index was altered); refusing to send it") from None


def plan_download(ws: Workspace, query: IndexQuery, file_ids: Sequence[str]) -> Download:
    """Check every id is in the index and its file is in the mirror, unchanged in size, before anything is sent."""
    ids = check_file_ids(file_ids)
    found = query.lookup(ids)
    missing = [f for f in ids if f not in found]
    if missing:
        more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
        raise NotInIndex(f"file id(s) not in this data index: {', '.join(missing[:10])}{more}; list the bundle's files to get valid ids")
    members = []
    for fid in ids:
        rec = found[fid]
        path = mirror_file(ws, rec["source"], rec["relative_path"], fid)
        try:
            stat = path.stat()
        except OSError:
            stat = None
        if stat is None or not is_regular_file(path):
            raise NotInIndex(f"file {rec['source']}:{rec['relative_path']} is not in the workspace mirror; run `kbrelease sync`") from None
        if stat.st_size != rec["size_bytes"]:
            raise DataIndexError(
                f"file {rec['source']}:{rec['relative_path']} in the mirror differs from this index (size {stat.st_size} ≠ {rec['size_bytes']}); "
                "the mirror holds the last sync: download from a bundle resolved after it"
            )
        members.append(Member(fid, rec["source"], rec["relative_path"], rec["size_bytes"], rec["checksum"], path, stat.st_mtime))
    return Download(members)
