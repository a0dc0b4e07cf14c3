"""Sync from a local folder: mirror, incremental, deletions, the data index."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow.parquet as pq
import yaml

from kbrelease import load_config
from kbrelease.index.data_index import file_id_for, read_source_index
from kbrelease.sources.sync import sha256_file, sync


def _config(tmp_path: Path, src: Path) -> Path:
    path = tmp_path / "kbrelease.yaml"
    path.write_text(
        f"workspace: {tmp_path / 'ws'}\nsources:\n  - name: docs\n    path: {src}\n    modality: text\n    version: '1.2.0'\n    exclude: ['drafts/**']\n",
        encoding="utf-8",
    )
    return path


def test_sync_mirrors_and_writes_the_data_index(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub dir").mkdir(parents=True)
    (src / "drafts").mkdir()
    (src / "a.md").write_text("# A\n\nalpha\n", encoding="utf-8")
    (src / "sub dir" / "ünï cödé.txt").write_text("beta\n", encoding="utf-8")
    (src / "drafts" / "wip.md").write_text("excluded\n", encoding="utf-8")
    (src / "photo.jpg").write_bytes(b"not text, wrong modality")
    (src / ".hidden.md").write_text("hidden\n", encoding="utf-8")
    cfg = load_config(_config(tmp_path, src), env={})

    info, bundle = sync(cfg)

    ws = tmp_path / "ws"
    assert sorted(p.relative_to(ws / "mirror" / "docs").as_posix() for p in (ws / "mirror" / "docs").rglob("*") if p.is_file()) == [
        "a.md",
        "sub dir/ünï cödé.txt",
    ]
    table = pq.read_table(ws / "index" / "docs.parquet")
    assert table.column_names == ["file_id", "relative_path", "timestamp", "size_bytes", "checksum", "etag", "metadata"]
    records = read_source_index(ws / "index" / "docs.parquet")
    assert [r.relative_path for r in records] == ["a.md", "sub dir/ünï cödé.txt"]
    assert records[0].file_id == file_id_for("docs", "a.md")
    assert records[0].checksum == sha256_file(src / "a.md")
    assert records[0].size_bytes == (src / "a.md").stat().st_size
    manifest = yaml.safe_load((ws / "index" / "bundle.yaml").read_text(encoding="utf-8"))
    entry = manifest["data_manifest"][0]
    assert entry["channel"] == "docs"
    assert entry["version"] == "1.2.0"
    assert entry["file_count"] == 2
    assert entry["total_size"] == sum(r.size_bytes for r in records)
    assert entry["index_file"] == "docs.parquet"
    assert entry["checksum"].startswith("sha256:")
    assert entry["data_range"]["start_time"] <= entry["data_range"]["end_time"]
    assert manifest["meta"]["total_files"] == 2
    assert info.sources[0].downloaded == 2
    assert bundle.checksum == info.index_checksum


def test_sync_is_incremental(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in ["keep.txt", "change.txt", "delete.txt"]:
        (src / name).write_text(f"{name}\n", encoding="utf-8")
    cfg = load_config(_config(tmp_path, src), env={})
    first, bundle1 = sync(cfg)

    again, bundle2 = sync(cfg)
    assert (again.sources[0].downloaded, again.sources[0].unchanged) == (0, 3)
    assert bundle2.checksum == bundle1.checksum

    (src / "change.txt").write_text("changed content\n", encoding="utf-8")
    os.utime(src / "change.txt", (1_900_000_000, 1_900_000_000))
    (src / "delete.txt").unlink()
    (src / "new.txt").write_text("new\n", encoding="utf-8")
    third, bundle3 = sync(cfg)

    s = third.sources[0]
    assert (s.downloaded, s.unchanged, s.deleted, s.files) == (2, 1, 1, 3)
    mirror = tmp_path / "ws" / "mirror" / "docs"
    assert not (mirror / "delete.txt").exists()
    assert (mirror / "change.txt").read_text(encoding="utf-8") == "changed content\n"
    assert bundle3.checksum != bundle1.checksum
    assert first.sources[0].downloaded == 3
