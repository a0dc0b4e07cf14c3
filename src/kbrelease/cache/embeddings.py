"""The embedding cache: vectors by (embedder identity, content checksum).

A new release re-embeds only chunk texts and images whose vector is not
cached; everything else is copied. The key is the sha256 of the chunk text
(or the image file) within a namespace per embedder identity (model, dim,
revision, preprocessing), so a model change misses everything it affects and
chunking changes miss exactly the chunks whose text changed. Vectors do not
depend on chunking parameters, only on the text.

Storage is one SQLite file in WAL mode: every write is a transaction, so a
build killed with SIGKILL leaves no half-written entry, and two builds can
write at once (one waits for the other's short transaction). WAL needs shared
memory between the processes, so a cache on a network volume used by several
machines (the parallel steps of an Argo workflow) uses the rollback journal
(``journal="delete"``), which only needs file locks.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kbrelease.embedding.base import EmbedderIdentity, Vectors

_SCHEMA = """
CREATE TABLE IF NOT EXISTS vectors (
    ns TEXT NOT NULL,
    key TEXT NOT NULL,
    dim INTEGER NOT NULL,
    vec BLOB NOT NULL,
    created REAL NOT NULL,
    last_build INTEGER NOT NULL,
    PRIMARY KEY (ns, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS builds (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    release TEXT NOT NULL,
    started REAL NOT NULL,
    hits INTEGER NOT NULL DEFAULT 0,
    misses INTEGER NOT NULL DEFAULT 0
);
"""


def content_key(data: str | bytes) -> str:
    return hashlib.sha256(data.encode("utf-8") if isinstance(data, str) else data).hexdigest()


def namespace(identity: EmbedderIdentity) -> str:
    return hashlib.sha256(identity.key().encode()).hexdigest()[:16]


@dataclass
class CacheStats:
    """What ``kbrelease cache stats`` shows."""

    path: str
    entries: int
    size_bytes: int
    namespaces: int
    last_build: str | None
    last_hits: int
    last_misses: int

    @property
    def hit_rate(self) -> float | None:
        total = self.last_hits + self.last_misses
        return self.last_hits / total if total else None

    def asdict(self) -> dict[str, Any]:
        return asdict(self) | {"hit_rate": self.hit_rate}


class EmbeddingCache:
    """Thread-safe access to one cache file; one build registers itself with :meth:`begin_build`."""

    def __init__(self, path: Path, journal: str = "wal") -> None:
        self.path = path
        self.journal = journal
        path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._build_seq = 0
        with self._conn() as conn:
            conn.executescript(_SCHEMA)

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL" if self.journal == "wal" else "PRAGMA journal_mode=DELETE")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        return conn

    def begin_build(self, release: str) -> None:
        """Count this build's hits and misses under ``release``.

        The parallel shard steps of one release (and a resumed build) share
        one entry, so ``prune --keep N`` counts releases, not processes.
        """
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            row = conn.execute("SELECT seq FROM builds WHERE release = ? ORDER BY seq DESC LIMIT 1", (release,)).fetchone()
            last = conn.execute("SELECT MAX(seq) FROM builds").fetchone()
            if row is not None and row[0] == last[0]:
                self._build_seq = int(row[0])
            else:
                cur = conn.execute("INSERT INTO builds (release, started) VALUES (?, ?)", (release, time.time()))
                self._build_seq = int(cur.lastrowid or 0)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def get_many(self, ns: str, keys: Sequence[str]) -> dict[str, Vectors]:
        """Cached vectors of ``keys`` (missing keys are absent); marks them used by this build."""
        found: dict[str, Vectors] = {}
        conn = self._conn()
        unique = list(dict.fromkeys(keys))
        for i in range(0, len(unique), 500):
            part = unique[i : i + 500]
            marks = ",".join("?" * len(part))
            rows = conn.execute(f"SELECT key, dim, vec FROM vectors WHERE ns = ? AND key IN ({marks})", (ns, *part)).fetchall()  # noqa: S608
            for key, dim, blob in rows:
                vec = np.frombuffer(blob, dtype=np.float32)
                if vec.shape == (dim,):  # a torn value cannot pass this; SQLite transactions make it unreachable anyway
                    found[key] = vec
            if rows and self._build_seq:
                hit_marks = ",".join("?" * len(rows))
                conn.execute(
                    f"UPDATE vectors SET last_build = ? WHERE ns = ? AND key IN ({hit_marks})",  # noqa: S608
                    (self._build_seq, ns, *[r[0] for r in rows]),
                )
        return found

    def put_many(self, ns: str, items: Iterable[tuple[str, Vectors]]) -> None:
        now = time.time()
        rows = [(ns, key, int(vec.shape[0]), np.asarray(vec, dtype=np.float32).tobytes(), now, self._build_seq) for key, vec in items]
        if not rows:
            return
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany("INSERT OR REPLACE INTO vectors (ns, key, dim, vec, created, last_build) VALUES (?, ?, ?, ?, ?, ?)", rows)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def record(self, hits: int, misses: int) -> None:
        """Count reused and newly embedded vectors for this build's hit rate."""
        if self._build_seq and (hits or misses):
            self._conn().execute("UPDATE builds SET hits = hits + ?, misses = misses + ? WHERE seq = ?", (hits, misses, self._build_seq))

    def stats(self) -> CacheStats:
        conn = self._conn()
        entries, namespaces = conn.execute("SELECT COUNT(*), COUNT(DISTINCT ns) FROM vectors").fetchone()
        last = conn.execute("SELECT release, hits, misses FROM builds ORDER BY seq DESC LIMIT 1").fetchone()
        size = sum(p.stat().st_size for p in self.path.parent.glob(self.path.name + "*") if p.is_file())
        return CacheStats(
            path=str(self.path),
            entries=int(entries),
            size_bytes=size,
            namespaces=int(namespaces),
            last_build=last[0] if last else None,
            last_hits=int(last[1]) if last else 0,
            last_misses=int(last[2]) if last else 0,
        )

    def prune(self, keep_builds: int) -> int:
        """Drop entries that none of the last ``keep_builds`` builds used; returns how many."""
        conn = self._conn()
        row = conn.execute("SELECT seq FROM builds ORDER BY seq DESC LIMIT 1 OFFSET ?", (max(keep_builds, 1) - 1,)).fetchone()
        if row is None:
            return 0
        cur = conn.execute("DELETE FROM vectors WHERE last_build < ?", (int(row[0]),))
        conn.execute("VACUUM")
        return int(cur.rowcount)

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
