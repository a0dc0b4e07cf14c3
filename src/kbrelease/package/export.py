"""``package export``: a release → one streamed archive, without holding it in memory.

Rows are read with a server-side cursor and written as Parquet parts of at
most ``part_bytes``; a part is the only thing held in memory (tar needs a
member's size before its bytes). Output goes to any writable stream, so the
same code writes a file, stdout, or the pipe of ``promote``.
"""

from __future__ import annotations

import hashlib
import io
import math
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from kbrelease.errors import PackageError, ReleaseError
from kbrelease.index.data_index import read_bundle
from kbrelease.package.format import (
    INFO,
    MANIFEST,
    METRIC,
    PACKAGE_FORMAT,
    PACKAGE_VERSION,
    ROW_FIELDS,
    SIGNATURE,
    SUMS,
    dumps,
    format_sums,
    part_name,
    sha256_hex,
)
from kbrelease.progress import Quiet, Reporter
from kbrelease.release.manifest import release_info_text
from kbrelease.release.registry import ReleaseRecord, now_iso
from kbrelease.store.milvus import MilvusStore
from kbrelease.store.schema import arrow_table
from kbrelease.trust.signing import SigningKey

DEFAULT_PART_BYTES = 64 << 20
EXPORTABLE = ("built", "verified")


@dataclass
class ExportInfo:
    """What ``package export`` wrote."""

    release: str
    environment: str
    output: str
    rows: int = 0
    parts: int = 0
    bytes: int = 0
    sha256: str = ""
    compression: str = "none"
    signer: str | None = None
    """Fingerprint of the key that signed the package (``--sign``), if any."""
    seconds: float = 0.0

    def asdict(self) -> dict[str, Any]:
        return dict(vars(self))

    def __str__(self) -> str:
        rate = self.rows / self.seconds if self.seconds else 0.0
        return (
            f"exported release {self.release} ({self.environment}) to {self.output}: {self.rows} rows in {self.parts} parts, "
            f"{self.bytes / 1e6:.1f} MB ({self.compression}), {self.seconds:.1f}s ({rate:,.0f} rows/s)\nsha256 {self.sha256}"
            + (f"\nsigned by {self.signer}" if self.signer else "")
        )


class _Counting(io.RawIOBase):
    """A write-only stream that counts and hashes what passes through (the archive's sha256)."""

    def __init__(self, inner: IO[bytes]) -> None:
        self._inner = inner
        self.bytes = 0
        self.hash = hashlib.sha256()

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        data = bytes(b)
        self._inner.write(data)
        self.bytes += len(data)
        self.hash.update(data)
        return len(data)

    def flush(self) -> None:
        self._inner.flush()


def _parquet_bytes(table: Any) -> bytes:
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    # Vectors do not compress or dictionary-encode; ids, paths and checksums repeat.
    pq.write_table(table, buf, compression="zstd", use_dictionary=["file_id", "file", "checksum", "heading"], row_group_size=8192)
    return buf.getvalue()


def iter_parts(store: MilvusStore, db: str, collection: str, dim: int, part_bytes: int) -> Iterator[tuple[bytes, int]]:
    """``(parquet bytes, rows)`` per part of a collection; each part holds about ``part_bytes`` of Arrow data.

    Each page of the cursor becomes Arrow columns at once (a vector is 4 bytes a
    float there, ~30 as Python floats), so memory is about one part, not one
    part's rows as Python objects.
    """
    import pyarrow as pa

    per_row_guess = dim * 4 + 800
    page = max(16, min(4096, part_bytes // per_row_guess))
    held: list[Any] = []
    size = 0.0
    for batch in store.iter_rows(db, collection, ROW_FIELDS, batch_size=page):
        table = arrow_table(batch, dim)
        per_row = table.nbytes / max(1, table.num_rows)
        while table.num_rows:
            take = max(1, min(table.num_rows, math.ceil((part_bytes - size) / per_row)))
            held.append(table.slice(0, take))
            table = table.slice(take)
            size += take * per_row
            if size >= part_bytes:
                part = pa.concat_tables(held)
                yield _parquet_bytes(part), part.num_rows
                held, size = [], 0.0
    if held:
        part = pa.concat_tables(held)
        yield _parquet_bytes(part), part.num_rows


def _package_manifest(record: ReleaseRecord, dims: dict[str, int], index_members: list[str], part_bytes: int) -> dict[str, Any]:
    from kbrelease import __version__

    return {
        "format": PACKAGE_FORMAT,
        "package_version": PACKAGE_VERSION,
        "manifest_schema_version": record.schema_version,
        "kbrelease_version": __version__,
        "exported_at": now_iso(),
        "environment": record.environment,
        "release": record.asdict(),
        "data_index": {"checksum": record.data_index_checksum, "members": index_members},
        "collections": {
            source: {
                "collection": c.collection,
                "modality": c.modality,
                "dim": dims[source],
                "rows": c.rows,
                "metric": METRIC,
                "fields": list(ROW_FIELDS),
                "sparse": c.sparse,  # a BM25 field, computed by Milvus from "text": recreated on import, not in the parts
            }
            for source, c in record.sources.items()
        },
        "part_bytes": part_bytes,
    }


def _info_text(record: ReleaseRecord, manifest: dict[str, Any]) -> str:
    lines = [
        release_info_text(record).rstrip("\n"),
        "",
        f"package:         {PACKAGE_FORMAT} {PACKAGE_VERSION}, exported {manifest['exported_at']} by kbrelease {manifest['kbrelease_version']}",
        f"from:            environment {record.environment}, database {record.database}",
        "collections:",
    ]
    for source, col in manifest["collections"].items():
        hybrid = ", +BM25" if col.get("sparse") else ""
        lines.append(f"  {source} -> {col['collection']} [{col['modality']}, {col['dim']}-d, {col['metric']}{hybrid}]: {col['rows']} rows")
    lines.append("checksums:       SHA256SUMS (last member); `sha256sum -c SHA256SUMS` in an extracted copy")
    return "\n".join(lines) + "\n"


def write_package(
    store: MilvusStore,
    record: ReleaseRecord,
    release_dir: Path,
    out: IO[bytes],
    compress: bool = False,
    part_bytes: int = DEFAULT_PART_BYTES,
    reporter: Reporter | None = None,
    output_name: str = "-",
    signer: SigningKey | None = None,
) -> ExportInfo:
    """Write the package of ``record`` to ``out`` (a stream; nothing is seeked or read back).

    With ``signer``, a ``SIGNATURE`` member (Ed25519 over ``SHA256SUMS``) follows the checksums.
    """
    reporter = reporter or Quiet()
    if record.state not in EXPORTABLE:
        raise ReleaseError(f"release {record.name!r} is {record.state}; only a built or verified release can be exported")
    if part_bytes < 1 << 16:
        raise PackageError(f"part size {part_bytes} bytes is too small; use at least 64 KiB")
    index_dir = release_dir / "index"
    try:
        bundle = read_bundle(index_dir)
    except ReleaseError:
        raise ReleaseError(
            f"the frozen data index of release {record.name!r} is not in this workspace ({index_dir}); export from the workspace that built or imported it"
        ) from None
    if bundle.checksum != record.data_index_checksum:
        raise ReleaseError(f"the frozen data index in {index_dir} does not match release {record.name!r}'s manifest; the workspace was altered")
    started = time.monotonic()
    dims = {source: store.vector_dim(record.database, c.collection) for source, c in record.sources.items()}
    index_files = ["bundle.yaml", *(s.index_file for s in bundle.data_manifest)]
    manifest = _package_manifest(record, dims, [f"index/{f}" for f in index_files], part_bytes)
    info = ExportInfo(record.name, record.environment, output_name, compression="zstd" if compress else "none")
    counting = _Counting(out)
    compressor: Any = None
    sink: IO[bytes] = counting  # type: ignore[assignment]
    if compress:
        import zstandard

        compressor = zstandard.ZstdCompressor(level=3, write_checksum=True).stream_writer(counting, closefd=False)  # type: ignore[arg-type]
        sink = compressor
    sums: list[tuple[str, str]] = []
    mtime = int(time.time())
    tar = tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT)  # noqa: SIM115 - closed below, after the last member

    def add(name: str, data: bytes) -> None:
        member = tarfile.TarInfo(name)
        member.size, member.mtime, member.mode = len(data), mtime, 0o644
        tar.addfile(member, io.BytesIO(data))
        if name not in (SUMS, SIGNATURE):
            sums.append((name, sha256_hex(data)))

    add(INFO, _info_text(record, manifest).encode())
    add(MANIFEST, dumps(manifest))
    for name in index_files:
        add(f"index/{name}", (index_dir / name).read_bytes())
    total = sum(c.rows for c in record.sources.values())
    label = f"export {record.name}"
    reporter.start(label, total, "rows")
    for source, counts in record.sources.items():
        rows = 0
        for n, (data, n_rows) in enumerate(iter_parts(store, record.database, counts.collection, dims[source], part_bytes)):
            add(part_name(source, n), data)
            rows += n_rows
            info.parts += 1
            reporter.advance(label, n_rows)
        if rows != counts.rows:
            raise ReleaseError(
                f"release {record.name!r}: collection {counts.collection} has {rows} rows, its manifest says {counts.rows}; "
                f"run `kbrelease verify {record.name}`"
            )
        info.rows += rows
    sums_bytes = format_sums(sums)
    add(SUMS, sums_bytes)
    if signer is not None:
        add(SIGNATURE, signer.sign(sums_bytes).to_bytes())
        info.signer = signer.fingerprint
    tar.close()
    if compressor is not None:
        compressor.close()  # ends the frame; closefd=False leaves ``out`` open
    counting.flush()
    reporter.finish(label)
    info.bytes = counting.bytes
    info.sha256 = counting.hash.hexdigest()
    info.seconds = round(time.monotonic() - started, 3)
    return info


def export_to_file(
    store: MilvusStore,
    record: ReleaseRecord,
    release_dir: Path,
    path: Path,
    compress: bool = False,
    part_bytes: int = DEFAULT_PART_BYTES,
    reporter: Reporter | None = None,
    signer: SigningKey | None = None,
) -> ExportInfo:
    """Write the package to ``path`` atomically: a half-written file never has the final name."""
    import os

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        with tmp.open("wb") as fh:
            info = write_package(store, record, release_dir, fh, compress, part_bytes, reporter, str(path), signer)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return info
