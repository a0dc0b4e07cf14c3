"""``sync``: mirror every source into the workspace and write the data index.

Incremental: a file whose size and etag (S3) or modification time (folders)
match the previous index is not fetched again; files gone from the source are
deleted from the mirror. Downloads run concurrently and land via a temporary
file + rename, so a killed sync never leaves a half-written file in place.

``index_only`` hashes the files where they are (streamed) and writes the data
index without a mirror: for CI jobs that only publish the index. Syncs of
different sources may run at once (the parallel sync steps of the Argo
workflow): each writes its own files, and the shared ``bundle.yaml`` is
updated under a lock file.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kbrelease.atomic import atomic_write_json
from kbrelease.config import Config, SourceConfig
from kbrelease.errors import KbReleaseError, UnsafePath
from kbrelease.index.data_index import (
    Bundle,
    FileRecord,
    SourceIndex,
    file_id_for,
    read_source_index,
    summarize_source,
    write_bundle,
    write_source_index,
)
from kbrelease.progress import Quiet, Reporter
from kbrelease.sources.metadata import MetadataError
from kbrelease.sources.source import RemoteFile, Source, shown
from kbrelease.trust.paths import contained
from kbrelease.workspace import Workspace


@dataclass
class SourceSyncInfo:
    source: str
    files: int = 0
    downloaded: int = 0
    unchanged: int = 0
    deleted: int = 0
    bytes_downloaded: int = 0
    skipped: int = 0
    skips: list[dict[str, str]] = field(default_factory=list)
    """The first :data:`MAX_REPORTED` skipped keys, ``{"file", "reason"}`` (``skipped`` is the exact count)."""


@dataclass
class SyncInfo:
    """What one sync did, per source."""

    sources: list[SourceSyncInfo] = field(default_factory=list)
    index_checksum: str = ""
    seconds: float = 0.0

    def asdict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        lines = [f"synced {len(self.sources)} source(s) in {self.seconds:.1f}s, data index {self.index_checksum[:19]}"]
        for s in self.sources:
            lines.append(f"  {s.source}: {s.files} files ({s.downloaded} fetched, {s.unchanged} unchanged, {s.deleted} deleted)")
            if s.skipped:
                lines.append(f"    {s.skipped} skipped:")
                lines += [f"      {k['file']}: {k['reason']}" for k in s.skips[:10]]
                if s.skipped > 10:
                    lines.append(f"      ... and {s.skipped - 10} more (see --json)")
        return "\n".join(lines)


SYNC_STATE = "sync.json"
MAX_REPORTED = 200  # skipped keys named per source; the count is exact


def _read_state_file(ws: Workspace) -> dict[str, Any]:
    try:
        data = json.loads((ws.state_dir / SYNC_STATE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def record_sync(ws: Workspace, sources: list[str], when: datetime | None = None) -> None:
    """Note that ``sources`` finished a successful sync (read by the monitor's sync-delay check)."""
    stamp = (when or datetime.now(UTC)).isoformat(timespec="seconds")
    with _state_lock(ws):
        data = _read_state_file(ws)
        state = read_sync_state(ws)
        state.update(dict.fromkeys(sources, stamp))
        failures = {k: v for k, v in (data.get("last_failure") or {}).items() if k not in sources}
        atomic_write_json(ws.state_dir / SYNC_STATE, {"last_success": state, "last_failure": failures}, mkdir=True, sort_keys=True)


def record_sync_failure(ws: Workspace, sources: list[str], error: str, when: datetime | None = None) -> None:
    """Note that a sync of ``sources`` failed (the monitor alerts at once). Never raises: the sync's own error matters more."""
    from kbrelease.trust.redact import redact

    stamp = (when or datetime.now(UTC)).isoformat(timespec="seconds")
    try:
        with _state_lock(ws):
            data = _read_state_file(ws)
            failures = dict(data.get("last_failure") or {})
            failures.update({name: {"at": stamp, "error": redact(error)[:500]} for name in sources})
            atomic_write_json(ws.state_dir / SYNC_STATE, {"last_success": read_sync_state(ws), "last_failure": failures}, mkdir=True, sort_keys=True)
    except OSError:
        pass


@contextlib.contextmanager
def _state_lock(ws: Workspace) -> Iterator[None]:
    ws.state_dir.mkdir(parents=True, exist_ok=True)
    with open(ws.state_dir / f"{SYNC_STATE}.lock", "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def read_sync_state(ws: Workspace) -> dict[str, str]:
    """Source name → ISO time of its last successful sync (empty when never synced)."""
    try:
        return {str(k): str(v) for k, v in (_read_state_file(ws).get("last_success") or {}).items()}
    except AttributeError:
        return {}


def read_sync_failures(ws: Workspace) -> dict[str, dict[str, str]]:
    """Source name → ``{"at": ISO time, "error": message}`` of a failed sync not followed by a successful one."""
    raw = _read_state_file(ws).get("last_failure") or {}
    if not isinstance(raw, dict):
        return {}
    return {str(k): {"at": str(v.get("at", "")), "error": str(v.get("error", ""))} for k, v in raw.items() if isinstance(v, dict)}


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _unchanged(prev: FileRecord | None, remote: RemoteFile, local: Path) -> bool:
    if prev is None or prev.size_bytes != remote.size_bytes:
        return False
    if not local.is_file() or local.stat().st_size != remote.size_bytes:
        return False
    if remote.etag or prev.etag:
        return prev.etag == remote.etag
    return prev.timestamp == remote.timestamp


def _same_listing(prev: FileRecord | None, remote: RemoteFile) -> bool:
    """Index-only mode: unchanged when the listing says so (there is no mirror to check)."""
    if prev is None or prev.size_bytes != remote.size_bytes:
        return False
    if remote.etag or prev.etag:
        return prev.etag == remote.etag
    return prev.timestamp == remote.timestamp


def _record(src_name: str, rf: RemoteFile, checksum: str, size: int, user: dict[str, Any] | None = None) -> FileRecord:
    """The index row of a listed file whose bytes hashed to ``checksum``, with its user metadata."""
    return FileRecord(
        file_id=file_id_for(src_name, rf.relative_path),
        relative_path=rf.relative_path,
        timestamp=rf.timestamp,
        size_bytes=size,
        checksum=checksum,
        etag=rf.etag,
        metadata={**(user or {}), "suffix": Path(rf.relative_path).suffix.lower()},
    )


def _user_metadata(source: Source, s3_meta: bool, rf: RemoteFile, sidecar: str | None, local: Path | None) -> dict[str, Any]:
    """S3 metadata/tags, then front matter, then the sidecar (a later one wins per key); MetadataError names the file."""
    from kbrelease.sources.metadata import FRONT_MATTER_BYTES, MAX_SIDECAR_BYTES, front_matter, is_markdown, parse_sidecar

    rel = rf.relative_path
    where = f"file {shown(rel)!r} of source {source.cfg.name!r}"
    out: dict[str, Any] = source.user_metadata(rel) if s3_meta else {}
    if is_markdown(rel):
        if local is not None:
            with local.open("rb") as fh:
                head = fh.read(FRONT_MATTER_BYTES)
        else:
            head = source.read_head(rel, FRONT_MATTER_BYTES)
        out.update(front_matter(head.decode("utf-8", errors="replace"), where)[0])
    if sidecar is not None:
        data = source.read_head(sidecar, MAX_SIDECAR_BYTES + 1)
        out.update(parse_sidecar(sidecar, data, f"sidecar {shown(sidecar)!r} of source {source.cfg.name!r}"))
    return out


def _prune(mirror: Path, keep: set[str]) -> int:
    """Delete files of the mirror that are not in ``keep``, and empty folders; never follows a link. Returns the files deleted."""
    deleted = 0
    if not mirror.is_dir():
        return 0
    for folder, dirs, names in os.walk(mirror, topdown=False, followlinks=False):
        base = Path(folder)
        for name in names + [d for d in dirs if (base / d).is_symlink()]:
            path = base / name
            if path.is_symlink() or path.relative_to(mirror).as_posix() not in keep:
                path.unlink()  # a link in a mirror is never ours: it goes, its target stays
                deleted += 1
        if base != mirror:
            with contextlib.suppress(OSError):
                base.rmdir()  # only when empty
    return deleted


def _sync_source(src_cfg: SourceConfig, cfg: Config, ws: Workspace, reporter: Reporter, index_only: bool = False) -> tuple[SourceSyncInfo, SourceIndex]:
    source = Source(src_cfg, cfg.s3)
    mirror = ws.mirror(src_cfg.name)
    index_path = ws.index_dir / f"{src_cfg.name}.parquet"
    previous = {r.relative_path: r for r in read_source_index(index_path)}
    listing = source.scan()
    remote = listing.files
    info = SourceSyncInfo(source=src_cfg.name)
    skips = list(listing.skipped)
    label = f"{'index' if index_only else 'sync'} {src_cfg.name}"
    reporter.start(label, len(remote), "files")
    tmp_dir = mirror.parent / f".tmp-{src_cfg.name}"
    if not index_only:
        mirror.mkdir(parents=True, exist_ok=True)
        tmp_dir.mkdir(parents=True, exist_ok=True)
        # Stale files go first, so a file that became a folder (or the reverse) has room.
        info.deleted = _prune(mirror, {rf.relative_path for rf in remote})

    s3_meta = cfg.s3.object_metadata and source.protocol == "s3"

    def one(rf: RemoteFile) -> tuple[FileRecord | None, bool, str]:
        """The file's record (None when skipped), whether it was fetched (or hashed), and why it was skipped."""
        try:
            return (*fetch_one(rf), "")
        except (UnsafePath, MetadataError) as exc:
            reporter.advance(label)
            return None, False, str(exc)

    def user(rf: RemoteFile, local: Path | None) -> dict[str, Any]:
        return _user_metadata(source, s3_meta, rf, listing.sidecars.get(rf.relative_path), local)

    def fetch_one(rf: RemoteFile) -> tuple[FileRecord, bool]:
        prev = previous.get(rf.relative_path)
        sidecar = rf.relative_path in listing.sidecars
        if index_only:
            if prev is not None and _same_listing(prev, rf):
                reporter.advance(label)
                # Unchanged bytes, unchanged front matter; a sidecar or S3 tags may have changed on their own.
                fresh = _record(src_cfg.name, rf, prev.checksum, prev.size_bytes, user(rf, None)) if (sidecar or s3_meta) else prev
                return replace(prev, metadata=fresh.metadata), False
            checksum, size = source.sha256(rf.relative_path)
            reporter.advance(label)
            return _record(src_cfg.name, rf, checksum, size, user(rf, None)), True
        local = contained(mirror, rf.relative_path, f"file of source {src_cfg.name!r}")
        if prev is not None and _unchanged(prev, rf, local):
            reporter.advance(label)
            # The metadata is read again (a local read): a sidecar changes without its file.
            return replace(prev, metadata=_record(src_cfg.name, rf, prev.checksum, prev.size_bytes, user(rf, local)).metadata), False
        tmp = tmp_dir / uuid.uuid4().hex
        try:
            source.fetch(rf.relative_path, tmp)
            local.parent.mkdir(parents=True, exist_ok=True)
            local = contained(mirror, rf.relative_path, f"file of source {src_cfg.name!r}")  # again: nothing swapped a folder for a link meanwhile
            checksum = sha256_file(tmp)
            size = tmp.stat().st_size
            meta = user(rf, tmp)
            os.replace(tmp, local)
        finally:
            tmp.unlink(missing_ok=True)
        reporter.advance(label)
        return _record(src_cfg.name, rf, checksum, size, meta), True

    workers = (
        cfg.s3.concurrency if source.protocol == "s3" else 1 if source.protocol == "ftp" else min(8, (os.cpu_count() or 2) * 2)
    )  # one FTP control connection
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(one, remote))
    records = [rec for rec, _, _ in results if rec is not None]
    for rf, (rec, _, why) in zip(remote, results, strict=True):
        if rec is None:
            skips.append({"file": shown(rf.relative_path), "reason": why})
            if not index_only:
                with contextlib.suppress(OSError, UnsafePath):
                    contained(mirror, rf.relative_path).unlink(missing_ok=True)
    info.files = len(records)
    info.downloaded = sum(1 for rec, fetched, _ in results if rec is not None and fetched)
    info.unchanged = len(records) - info.downloaded
    info.bytes_downloaded = sum(rec.size_bytes for rec, fetched, _ in results if rec is not None and fetched)
    info.skipped = len(skips)
    info.skips = skips[:MAX_REPORTED]
    reporter.finish(label)
    write_source_index(index_path, records)
    summary = summarize_source(
        src_cfg.name,
        src_cfg.modality,
        src_cfg.collection_name,
        src_cfg.version,
        src_cfg.path,
        f"{src_cfg.name}.parquet",
        records,
    )
    return info, summary


@contextlib.contextmanager
def bundle_lock(index_dir: Path) -> Iterator[None]:
    """Serialize read-modify-write of ``bundle.yaml`` between processes (fcntl locks work on NFSv4 and CephFS)."""
    import fcntl

    index_dir.mkdir(parents=True, exist_ok=True)
    with (index_dir / ".bundle.lock").open("a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def sync(
    cfg: Config,
    reporter: Reporter | None = None,
    sources: list[str] | None = None,
    index_only: bool = False,
) -> tuple[SyncInfo, Bundle]:
    """Mirror the configured sources and write the data index.

    ``sources`` limits the sync to those names; the bundle keeps the other
    sources' last index entries. ``index_only`` writes the data index without
    a mirror (files are hashed where they are).
    """
    from kbrelease.errors import ConfigError
    from kbrelease.index.compat import VersionCheck
    from kbrelease.index.data_index import read_bundle

    if not cfg.sources:
        raise ConfigError("no sources configured; add 'sources:' to kbrelease.yaml (see `kbrelease init`) or set S3_PATH_TEXT / S3_PATH_IMAGE")
    reporter = reporter or Quiet()
    ws = Workspace.of(cfg)
    started = time.monotonic()
    wanted = [cfg.source(n) for n in sources] if sources else cfg.sources
    info = SyncInfo()
    fresh: dict[str, SourceIndex] = {}
    for src_cfg in wanted:
        try:
            s_info, s_index = _sync_source(src_cfg, cfg, ws, reporter, index_only)
        except (KbReleaseError, OSError) as exc:
            record_sync_failure(ws, [src_cfg.name], f"{type(exc).__name__}: {exc}")
            raise
        info.sources.append(s_info)
        fresh[src_cfg.name] = s_index
    try:
        with bundle_lock(ws.index_dir):
            summaries: dict[str, SourceIndex] = {}
            if sources and (ws.index_dir / "bundle.yaml").is_file():
                summaries = {s.channel: s for s in read_bundle(ws.index_dir, VersionCheck.of(cfg)).data_manifest}
            summaries.update(fresh)
            configured = [s.name for s in cfg.sources]
            bundle = write_bundle(ws.index_dir, [summaries[n] for n in configured if n in summaries])
    except (KbReleaseError, OSError) as exc:
        record_sync_failure(ws, [s.name for s in wanted], f"writing the data index: {type(exc).__name__}: {exc}")
        raise
    info.index_checksum = bundle.checksum
    record_sync(ws, [s.name for s in wanted])
    info.seconds = time.monotonic() - started
    return info, bundle
