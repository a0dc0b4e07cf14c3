"""Per-file content packages (seed 001's "file content package").

``export`` writes, for each source file of a release, a folder
``files/<file_id>/<checksum>/`` with ``metadata.json`` (source, path, size,
embedder identity, chunking), ``chunks.parquet`` (chunk index, text, heading,
start, vector), ``RELEASE_INFO.txt`` for people and ``SHA256SUMS``.
``import`` checks every checksum and the embedder identity against the
configured model, then loads the vectors into the embedding cache, so another
environment builds the same release without embedding anything.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kbrelease.cache.embeddings import EmbeddingCache, content_key, namespace
from kbrelease.embedding.base import EmbedderIdentity
from kbrelease.errors import ConfigError, ReleaseError
from kbrelease.release.registry import ReleaseRecord
from kbrelease.store.milvus import MilvusStore

PACKAGE_FORMAT = 1
_MEMBERS = ("metadata.json", "chunks.parquet")


@dataclass
class PackageInfo:
    files: int = 0
    vectors: int = 0
    refused: int = 0

    def asdict(self) -> dict[str, int]:
        return {"files": self.files, "vectors": self.vectors, "refused": self.refused}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def export_packages(store: MilvusStore, record: ReleaseRecord, out: Path, selectors: Iterable[str] | None = None) -> PackageInfo:
    """Write one package per file of ``record`` (``selectors``: file ids or relative paths; None = all)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    wanted = set(selectors) if selectors is not None else None
    info = PackageInfo()
    for source, counts in record.sources.items():
        identity = record.embedders.get(counts.modality, {})
        rows = store.client(record.database).query(
            counts.collection,
            filter="",
            output_fields=["file_id", "file", "checksum", "chunk_index", "text", "heading", "start", "vector"],
            limit=16384,
        )
        by_file: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            if wanted is None or row["file_id"] in wanted or row["file"] in wanted:
                by_file.setdefault(row["file_id"], []).append(row)
        if len(rows) >= 16384:
            raise ReleaseError(f"{source}: more than 16384 rows; export a file at a time with --file (streaming export is not built yet)")
        for file_id, chunks in by_file.items():
            chunks.sort(key=lambda r: r["chunk_index"])
            first = chunks[0]
            folder = out / "files" / file_id / first["checksum"]
            tmp = folder.with_name(folder.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            meta = {
                "format": PACKAGE_FORMAT,
                "file_id": file_id,
                "source": source,
                "modality": counts.modality,
                "relative_path": first["file"],
                "checksum": first["checksum"],
                "release": record.name,
                "embedder": identity,
                "chunking": record.chunking,
                "chunks": len(chunks),
            }
            (tmp / "metadata.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
            table = pa.table(
                {
                    "chunk_index": [int(c["chunk_index"]) for c in chunks],
                    "text": [c["text"] for c in chunks],
                    "heading": [c["heading"] for c in chunks],
                    "start": [int(c["start"]) for c in chunks],
                    "vector": [list(map(float, c["vector"])) for c in chunks],
                }
            )
            pq.write_table(table, tmp / "chunks.parquet", compression="zstd")
            (tmp / "RELEASE_INFO.txt").write_text(
                f"file:      {first['file']}\nsource:    {source} ({counts.modality})\nchecksum:  {first['checksum']}\n"
                f"release:   {record.name}\nmodel:     {identity.get('model')} ({identity.get('dim')}-d)\nchunks:    {len(chunks)}\n",
                encoding="utf-8",
            )
            sums = "".join(f"{_sha256(tmp / m)}  {m}\n" for m in _MEMBERS)
            (tmp / "SHA256SUMS").write_text(sums, encoding="utf-8")  # written last: a package without it is incomplete
            shutil.rmtree(folder, ignore_errors=True)
            os.replace(tmp, folder)
            info.files += 1
            info.vectors += len(chunks)
    if wanted is not None and info.files == 0:
        raise ReleaseError(f"no file of release {record.name!r} matches {sorted(wanted)}; give file ids or relative paths")
    return info


def import_packages(cache: EmbeddingCache, folder: Path, identities: dict[str, EmbedderIdentity]) -> PackageInfo:
    """Load every package under ``folder`` into the cache after checking it."""
    import pyarrow.parquet as pq

    info = PackageInfo()
    packages = sorted(p.parent for p in folder.glob("files/*/*/SHA256SUMS"))
    if not packages:
        raise ConfigError(f"{folder} holds no packages (expected files/<file_id>/<checksum>/SHA256SUMS); check the path")
    for pkg in packages:
        for line in (pkg / "SHA256SUMS").read_text(encoding="utf-8").splitlines():
            digest, name = line.split(maxsplit=1)
            if not (pkg / name).is_file() or _sha256(pkg / name) != digest:
                raise ReleaseError(f"package {pkg}: {name} does not match its checksum; the package is corrupt — export it again")
        meta = json.loads((pkg / "metadata.json").read_text(encoding="utf-8"))
        current = identities.get(meta["modality"])
        built = meta.get("embedder") or {}
        if current is None or not current.matches(built):
            raise ConfigError(
                f"package {pkg}: made with {meta['modality']} model {built.get('model')!r} ({built.get('dim')}-d, rev {built.get('revision')}) "
                f"but this environment is configured for {current.model if current else 'none'!r}; configure the same model to import it"
            )
        table = pq.read_table(pkg / "chunks.parquet").to_pylist()
        ns = namespace(current)
        if meta["modality"] == "image":
            items = [(meta["checksum"], np.asarray(r["vector"], dtype=np.float32)) for r in table]
        else:
            items = [(content_key(r["text"]), np.asarray(r["vector"], dtype=np.float32)) for r in table]
        cache.put_many(ns, items)
        info.files += 1
        info.vectors += len(items)
    return info
