"""A verified release of any size without embedding anything: for import tests and the package bench.

Rows have the shape ``build`` writes (ids ``<file_id>:<chunk>``, n_chunks per
file) with random unit vectors, a frozen data index that lists exactly their
files, and a registry record stamped with the configured text model's identity,
so ``verify`` passes and the release exports and imports like a real one.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

import numpy as np

from kbrelease.index.data_index import FileRecord, file_id_for, summarize_source, write_bundle, write_source_index
from kbrelease.release.build import database_name
from kbrelease.release.manifest import write_manifest
from kbrelease.release.registry import ReleaseRecord, SourceCounts
from kbrelease.workspace import Workspace

WORDS = ["the", "release", "index", "vector", "milvus", "query", "model", "chunk", "source", "package", "verify", "switch", "live", "prod", "dev"]


def make_release(
    kb: Any, name: str = "v1", files: int = 100, chunks_per_file: int = 10, seed: int = 0, text_chars: int = 400, seal: bool = True
) -> ReleaseRecord:
    """Write release ``name`` of one text source ``docs`` with ``files * chunks_per_file`` rows into ``kb``'s environment.

    ``seal=False`` skips building the index (Milvus Lite: ~70 s per 100k rows); searches then scan.
    """
    rng = np.random.default_rng(seed)
    identity = kb.identity("text")
    db = database_name(kb.cfg, name)
    ws = Workspace.of(kb.cfg)
    now = datetime.now(UTC)
    records = []
    for f in range(files):
        rel = f"doc-{f:06d}.md"
        records.append(FileRecord(file_id_for("docs", rel), rel, now, 1000, hashlib.sha256(rel.encode()).hexdigest()))
    index_dir = ws.release_dir(name) / "index"
    write_source_index(index_dir / "docs.parquet", records)
    bundle = write_bundle(index_dir, [summarize_source("docs", "text", "docs", "", "synthetic://docs", "docs.parquet", records)])
    kb.store.ensure_database(db)
    kb.store.ensure_collection(db, "docs", identity.dim)
    batch: list[dict[str, Any]] = []
    for rec in records:
        vectors = rng.standard_normal((chunks_per_file, identity.dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        for c in range(chunks_per_file):
            words = rng.choice(WORDS, size=text_chars // 6)
            batch.append(
                {
                    "id": f"{rec.file_id}:{c}",
                    "vector": vectors[c],
                    "file_id": rec.file_id,
                    "file": rec.relative_path,
                    "chunk_index": c,
                    "n_chunks": chunks_per_file,
                    "start": c * text_chars,
                    "heading": f"Section {c}",
                    "text": " ".join(words),
                    "checksum": rec.checksum,
                    "metadata": {"source": "docs", "encoding": "utf-8"},
                }
            )
        if len(batch) >= 2048:
            kb.store.upsert(db, "docs", batch)
            batch = []
    kb.store.upsert(db, "docs", batch)
    if seal:
        kb.store.seal(db, "docs")
    rows = files * chunks_per_file
    record = ReleaseRecord(
        name=name,
        environment=kb.cfg.environment,
        database=db,
        state="built",
        data_index_checksum=bundle.checksum,
        sources={"docs": SourceCounts(collection="docs", modality="text", files=files, rows=rows, embedded=rows)},
        embedders={"text": vars(identity) | {"max_tokens": 254}},
        chunking={"target_tokens": kb.cfg.text.chunk_target_tokens},
        tool_version="synthetic",
    )
    kb.registry.put(record)
    write_manifest(ws.release_dir(name), record)
    return kb.verify(name)
