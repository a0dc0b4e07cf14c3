"""`cache export` streams any size: a file of more than 16,384 rows and more files than one scan reads, random vectors put straight in the store."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from kbrelease.cache import file_packages
from kbrelease.cache.file_packages import export_packages
from kbrelease.index.data_index import file_id_for
from kbrelease.release.registry import ReleaseRecord, SourceCounts
from kbrelease.store.milvus import MilvusStore

pytestmark = pytest.mark.slow
DIM = 8
BIG_ROWS = 17_000  # more than the 16,384 rows one Milvus query may return


def test_export_streams_a_file_of_more_than_16384_rows_and_many_files(tmp_path: Path, isolated_milvus: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(file_packages, "FILES_PER_SCAN", 16)  # several scans, with a small corpus of small files
    store = MilvusStore(isolated_milvus["milvus.uri"])
    db = isolated_milvus["milvus.db_prefix"] + "v1"
    store.ensure_database(db)
    store.ensure_collection(db, "docs", DIM)
    rng = np.random.default_rng(7)
    files = {"big/manual.md": BIG_ROWS, **{f"small/page-{i:02d}.md": 2 for i in range(40)}}
    vectors: dict[tuple[str, int], list[float]] = {}
    rows = []
    for path, n in files.items():
        fid, checksum = file_id_for("docs", path), hashlib.sha256(path.encode()).hexdigest()
        for i in range(n):
            vec = rng.standard_normal(DIM).astype(np.float32)
            vectors[(fid, i)] = (vec / np.linalg.norm(vec)).tolist()
            rows.append(
                {"id": f"{fid}:{i}", "vector": vectors[(fid, i)], "file_id": fid, "file": path, "chunk_index": i, "n_chunks": n,
                 "start": i * 10, "heading": "", "text": f"chunk {i} of {path}", "checksum": checksum, "metadata": {}}
            )  # fmt: skip
    for start in range(0, len(rows), 5000):
        store.upsert(db, "docs", rows[start : start + 5000])
    store.seal(db, "docs")
    store.ensure_loaded(db, "docs")
    record = ReleaseRecord(name="v1", environment="default", database=db, state="verified", sources={"docs": SourceCounts(collection="docs", modality="text")})
    record.embedders = {"text": {"model": "random", "dim": DIM}}

    one = export_packages(store, record, tmp_path / "one", ["big/manual.md"])
    every = export_packages(store, record, tmp_path / "all")
    store.close()

    assert (one.files, one.vectors) == (1, BIG_ROWS)
    assert (every.files, every.vectors, every.refused) == (len(files), len(rows), 0)
    big = file_id_for("docs", "big/manual.md")
    (pkg,) = (tmp_path / "one" / "files" / big).iterdir()
    assert json.loads((pkg / "metadata.json").read_text(encoding="utf-8"))["chunks"] == BIG_ROWS
    table = pq.read_table(pkg / "chunks.parquet")
    assert table["chunk_index"].to_pylist() == list(range(BIG_ROWS))
    got = np.asarray(table["vector"].to_pylist(), dtype=np.float32)
    want = np.asarray([vectors[(big, i)] for i in range(BIG_ROWS)], dtype=np.float32)
    assert np.allclose(got, want, atol=1e-6)
    small = file_id_for("docs", "small/page-39.md")
    assert pq.read_table(next((tmp_path / "all" / "files" / small).iterdir()) / "chunks.parquet")["text"].to_pylist() == [
        "chunk 0 of small/page-39.md",
        "chunk 1 of small/page-39.md",
    ]
