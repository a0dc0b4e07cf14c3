"""The data index: the exact input files of every source at sync time.

On disk (in the workspace, ``index/``)::

    index/
      <source>.parquet   file_id, relative_path, timestamp, size_bytes,
                         checksum (sha256 hex), etag, metadata (json)
      bundle.yaml        meta + data_manifest (one entry per source), written
                         last, so a half-written index is never read

The fields follow the data-index design of seed 003. ``checksum`` of a source
is a sha256 over its sorted ``(relative_path, checksum)`` pairs, so it names
the content, not the Parquet bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from kbrelease.atomic import atomic_write, temp_beside
from kbrelease.config import Modality
from kbrelease.errors import ReleaseError

if TYPE_CHECKING:
    from kbrelease.index.compat import VersionCheck

INDEX_SCHEMA_VERSION = 1
# Small row groups: their min/max statistics let a query over a path range or
# a cursor skip most of a large index instead of decoding all of it.
ROW_GROUP_ROWS = 16_384


def file_id_for(source: str, relative_path: str) -> str:
    """Stable id of a file: same source and path, same id, across syncs."""
    return hashlib.sha256(f"{source}\x00{relative_path}".encode()).hexdigest()[:20]


@dataclass(frozen=True)
class FileRecord:
    """One row of a source's index."""

    file_id: str
    relative_path: str
    timestamp: datetime
    size_bytes: int
    checksum: str
    etag: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class SourceIndex:
    """Bundle-level entry for one source (the seed's ``data_manifest`` item)."""

    channel: str
    modality: Modality
    collection: str
    version: str
    storage_path: str
    index_file: str
    file_count: int
    total_size: int
    checksum: str
    data_range: dict[str, str | None]


@dataclass
class Bundle:
    """The whole data index: what a release is built from."""

    meta: dict[str, Any]
    data_manifest: list[SourceIndex]
    access_config: dict[str, Any] | None = None
    """How clients reach this index over the API (the seed's ``access_config``): base_url, authentication, endpoints."""

    @property
    def checksum(self) -> str:
        h = hashlib.sha256()
        for s in sorted(self.data_manifest, key=lambda s: s.channel):
            h.update(f"{s.channel}:{s.checksum}\n".encode())
        return "sha256:" + h.hexdigest()

    def source(self, name: str) -> SourceIndex:
        for s in self.data_manifest:
            if s.channel == name:
                return s
        raise ReleaseError(f"source {name!r} is not in the data index; run `kbrelease sync` first")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"meta": self.meta, "data_manifest": [asdict(s) for s in self.data_manifest]}
        if self.access_config is not None:
            out["access_config"] = self.access_config
        return out


class _NoAliasDumper(yaml.SafeDumper):
    """Writes a shared object twice rather than as an anchor and alias (readers refuse aliases)."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


class _NoAliasLoader(yaml.SafeLoader):
    """Refuses YAML aliases: a few lines of anchors can stand for billions of nodes ("billion laughs")."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            raise yaml.YAMLError("a YAML alias (*name): a data index never uses aliases")
        return super().compose_node(parent, index)


def load_bundle_yaml(text: str | bytes) -> Any:
    """``bundle.yaml`` parsed without aliases (it may come from a package)."""
    return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1024 or unit == "TB":
            return f"{value:.1f}{unit}" if unit != "B" else f"{int(value)}B"
        value /= 1024
    return f"{size}B"  # pragma: no cover


SYSTEM_METADATA_KEYS = frozenset({"suffix"})
"""Keys of a record's ``metadata`` that kbrelease sets itself; every other key is the user's."""


def _user_line(metadata: Any) -> str:
    """The part of a checksum line for a file's user metadata: empty without any (so indexes without user metadata keep their checksums)."""
    user = {k: v for k, v in metadata.items() if k not in SYSTEM_METADATA_KEYS} if isinstance(metadata, dict) else {}
    return "\x00" + json.dumps(user, sort_keys=True, ensure_ascii=False, separators=(",", ":")) if user else ""


def index_checksum(records: Iterable[FileRecord]) -> str:
    """sha256 over the sorted (path, file checksum, user metadata) of a source: a metadata-only change is a new index too."""
    h = hashlib.sha256()
    for rec in sorted(records, key=lambda r: r.relative_path):
        h.update(f"{rec.relative_path}\x00{rec.checksum}{_user_line(rec.metadata)}\n".encode())
    return "sha256:" + h.hexdigest()


def table_checksum(table: Any) -> str:
    """:func:`index_checksum` of an Arrow table sorted by ``relative_path``, without a Python object per row (but one per distinct metadata)."""
    import pyarrow.compute as pc

    h = hashlib.sha256()
    parts: dict[str | None, str] = {}
    for batch in table.select(["relative_path", "checksum", "metadata"]).to_batches(max_chunksize=65_536):
        if not batch.num_rows:
            continue
        joined = pc.binary_join_element_wise(batch.column(0), batch.column(1), "\x00").to_pylist()
        metas = batch.column(2).to_pylist()
        for text in set(metas) - parts.keys():
            try:
                parts[text] = _user_line(json.loads(text or "{}"))
            except ValueError:
                parts[text] = ""
        h.update(("\n".join(j + parts[m] for j, m in zip(joined, metas, strict=True)) + "\n").encode())
    return "sha256:" + h.hexdigest()


def arrow_schema() -> Any:
    """Arrow schema of a source's index Parquet file (``metadata`` is JSON text)."""
    import pyarrow as pa

    return pa.schema(
        [
            ("file_id", pa.string()),
            ("relative_path", pa.string()),
            ("timestamp", pa.timestamp("us", tz="UTC")),
            ("size_bytes", pa.int64()),
            ("checksum", pa.string()),
            ("etag", pa.string()),
            ("metadata", pa.string()),
        ]
    )


def write_source_index(path: Path, records: list[FileRecord]) -> None:
    """Write one source's Parquet index atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    records = sorted(records, key=lambda r: r.relative_path)
    table = pa.table(
        {
            "file_id": [r.file_id for r in records],
            "relative_path": [r.relative_path for r in records],
            "timestamp": [r.timestamp for r in records],
            "size_bytes": [r.size_bytes for r in records],
            "checksum": [r.checksum for r in records],
            "etag": [r.etag for r in records],
            "metadata": [json.dumps(r.metadata, sort_keys=True) for r in records],
        },
        schema=arrow_schema(),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_beside(path)
    pq.write_table(table, tmp, compression="zstd", row_group_size=ROW_GROUP_ROWS)
    os.replace(tmp, path)


def read_source_index(path: Path, expected_rows: int | None = None, where: str | None = None) -> list[FileRecord]:
    """All records of one source's index, sorted by relative path; every field checked.

    The index is untrusted input (it comes in packages, and is read by the
    service): its size is checked from its metadata before it is decoded
    (:mod:`kbrelease.index.bounded`), and every row must have a file id of the
    id grammar, a safe relative path, a sha256 checksum and a size >= 0, or the
    whole index is refused with :class:`~kbrelease.errors.DataIndexError`.
    """
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from kbrelease.errors import DataIndexError
    from kbrelease.index.bounded import FILE_ID, MAX_INDEX_BYTES, MAX_INDEX_ROWS, MAX_METADATA_CHARS, bad_values, check_parquet, decoded_bytes, path_problems

    if not path.is_file():
        return []
    where = where or f"data index {path}"
    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:
        raise DataIndexError(f"{where} is not a readable Parquet file ({str(exc)[:200]}); sync again or replace it") from exc
    names = set(pf.schema_arrow.names)
    missing = [c for c in ("file_id", "relative_path", "timestamp", "size_bytes", "checksum", "etag", "metadata") if c not in names]
    if missing:
        raise DataIndexError(f"{where} has no column(s) {', '.join(missing)}; it is not a kbrelease data index")
    check_parquet(pf, where, MAX_INDEX_ROWS, MAX_INDEX_BYTES, expected_rows)
    strings = ["file_id", "relative_path", "checksum", "etag", "metadata"]
    try:
        table = pq.read_table(path, columns=["file_id", "relative_path", "timestamp", "size_bytes", *strings[2:]], read_dictionary=strings)
    except Exception as exc:
        raise DataIndexError(f"{where} cannot be decoded ({str(exc)[:200]}); sync again or replace it") from exc
    if decoded_bytes(table) > MAX_INDEX_BYTES:
        raise DataIndexError(f"{where} expands to more than {MAX_INDEX_BYTES} bytes; refusing it (a compressed bomb or a damaged file)")
    problems = [f"file_id {v} is not an id (letters, digits, '_' and '-')" for v in bad_values(table["file_id"], FILE_ID.pattern[1:-1])]
    problems += [f"relative_path {p}" for p in path_problems(table["relative_path"])]
    problems += [f"checksum {v} is not a sha256 hex digest" for v in bad_values(table["checksum"], "[0-9a-f]{64}")]
    sizes = table["size_bytes"]
    if sizes.null_count or (len(sizes) and pc.min(sizes).as_py() < 0):
        problems.append("a size_bytes is negative or missing")
    if table["timestamp"].null_count:
        problems.append("a timestamp is missing")
    meta = table["metadata"].combine_chunks()
    if len(meta) and meta.dictionary is not None and len(meta.dictionary) and pc.max(pc.utf8_length(meta.dictionary)).as_py() > MAX_METADATA_CHARS:
        problems.append(f"a metadata value is longer than {MAX_METADATA_CHARS} characters")
    if len(table) and len(pc.unique(table["file_id"].cast("string"))) != len(table):
        problems.append("a file_id appears twice")
    if problems:
        raise DataIndexError(f"{where} is invalid: {'; '.join(problems[:4])}; refusing the whole index (it was altered or damaged)")
    out = []
    for row in table.to_pylist():
        ts = row["timestamp"]
        try:
            metadata = json.loads(row["metadata"] or "{}")
        except ValueError:
            raise DataIndexError(f"{where}: the metadata of {row['relative_path']!r} is not JSON; refusing the index") from None
        out.append(
            FileRecord(
                file_id=row["file_id"],
                relative_path=row["relative_path"],
                timestamp=ts if ts.tzinfo else ts.replace(tzinfo=UTC),
                size_bytes=int(row["size_bytes"]),
                checksum=row["checksum"],
                etag=row["etag"] or "",
                metadata=metadata if isinstance(metadata, dict) else {},
            )
        )
    out.sort(key=lambda r: r.relative_path)
    return out


def summarize_source(
    name: str, modality: Modality, collection: str, version: str, storage_path: str, index_file: str, records: list[FileRecord]
) -> SourceIndex:
    times = [r.timestamp for r in records]
    return SourceIndex(
        channel=name,
        modality=modality,
        collection=collection,
        version=version,
        storage_path=storage_path,
        index_file=index_file,
        file_count=len(records),
        total_size=sum(r.size_bytes for r in records),
        checksum=index_checksum(records),
        data_range={
            "start_time": min(times).isoformat() if times else None,
            "end_time": max(times).isoformat() if times else None,
        },
    )


def access_config(name: str, base_url: str | None, token_required: bool) -> dict[str, Any]:
    """The seed's ``access_config`` of the index served as ``name``: where the API is, how to sign in, its endpoints."""
    from urllib.parse import quote

    base = f"/api/v1/bundles/{quote(name, safe='')}"
    return {
        "base_url": base_url.rstrip("/") if base_url else None,
        "authentication": "bearer_token" if token_required else "none",
        "endpoints": {"list_files": f"{base}/files", "download_batch": f"{base}/download", "streaming": f"{base}/stream"},
    }


def _kbrelease_version() -> str:
    from kbrelease import __version__

    return __version__


def write_bundle(
    index_dir: Path, sources: list[SourceIndex], name: str = "kbrelease", meta: dict[str, Any] | None = None, access: dict[str, Any] | None = None
) -> Bundle:
    """Write ``bundle.yaml`` last, after every source's Parquet file.

    ``meta`` adds keys to the bundle's ``meta`` (version, type, spec source);
    ``access`` is written as its ``access_config`` (see :func:`access_config`).
    """
    total = sum(s.total_size for s in sources)
    bundle = Bundle(
        meta={
            "bundle_name": name,
            **(meta or {}),
            "schema_version": INDEX_SCHEMA_VERSION,
            "kbrelease_version": _kbrelease_version(),
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "data_volume": _human(total),
            "total_size": total,
            "total_files": sum(s.file_count for s in sources),
        },
        data_manifest=sources,
        access_config=access,
    )
    bundle.meta["checksum"] = bundle.checksum
    index_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(index_dir / "bundle.yaml", yaml.dump(bundle.to_dict(), Dumper=_NoAliasDumper, sort_keys=False, allow_unicode=True).encode())
    return bundle


def read_bundle(index_dir: Path, versions: VersionCheck | None = None) -> Bundle:
    """The data index in ``index_dir``, checked against the compatibility matrix.

    ``versions``: the configured check (:meth:`VersionCheck.of(cfg) <kbrelease.index.compat.VersionCheck.of>`);
    default: the shipped matrix, refusing an incompatible index.
    """
    from kbrelease.index.compat import VersionCheck

    path = index_dir / "bundle.yaml"
    if not path.is_file():
        raise ReleaseError(f"no data index at {index_dir}; run `kbrelease sync` first")
    data = load_bundle_yaml(path.read_text(encoding="utf-8"))
    (versions or VersionCheck.default()).check(data["meta"], f"data index {path}")
    access = data.get("access_config")
    return Bundle(
        meta=data["meta"], data_manifest=[SourceIndex(**s) for s in data["data_manifest"]], access_config=access if isinstance(access, dict) else None
    )
