"""`kbrelease sync --index-only` (the CI job's data index) and syncs of several sources at once (the workflow's sync steps)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from typer.testing import CliRunner

from kbrelease import load_config
from kbrelease.index.data_index import read_bundle, read_source_index
from kbrelease.sources.sync import sync

from helpers import write_config


def test_index_only_writes_the_same_index_as_a_sync_and_keeps_no_mirror(tmp_path: Path, corpus: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    mirrored = load_config(write_config(tmp_path / "a", corpus), env={})
    index_only = load_config(write_config(tmp_path / "b", corpus), env={})

    full, _ = sync(mirrored)
    info, bundle = sync(index_only, index_only=True)

    assert info.index_checksum == full.index_checksum == bundle.checksum
    assert not (index_only.workspace / "mirror").exists()
    for source in ("docs", "pictures"):
        a = read_source_index(mirrored.workspace / "index" / f"{source}.parquet")
        b = read_source_index(index_only.workspace / "index" / f"{source}.parquet")
        assert [(r.file_id, r.relative_path, r.checksum, r.size_bytes) for r in a] == [(r.file_id, r.relative_path, r.checksum, r.size_bytes) for r in b]


def test_index_only_hashes_only_changed_files(tmp_path: Path, corpus: Path) -> None:
    from kbrelease.cli import app

    cfg = str(write_config(tmp_path, corpus))
    runner = CliRunner()
    runner.invoke(app, ["-c", cfg, "sync", "--index-only"])
    (corpus / "text" / "it" / "vpn-setup.md").write_text("# VPN\n\nNew instructions.\n", encoding="utf-8")

    result = runner.invoke(app, ["-c", cfg, "sync", "--index-only", "--json"])

    assert result.exit_code == 0, result.output
    docs = next(s for s in json.loads(result.stdout)["sources"] if s["source"] == "docs")
    assert (docs["files"], docs["downloaded"], docs["unchanged"]) == (4, 1, 3)


def test_syncs_of_different_sources_at_once_leave_a_complete_bundle(tmp_path: Path, corpus: Path) -> None:
    cfg = load_config(write_config(tmp_path, corpus), env={})
    errors: list[BaseException] = []

    def one(name: str) -> None:
        try:
            sync(cfg, sources=[name])
        except BaseException as exc:
            errors.append(exc)

    for _ in range(3):
        threads = [threading.Thread(target=one, args=(n,)) for n in ("pictures", "docs")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        bundle = read_bundle(cfg.workspace / "index")
        assert [s.channel for s in bundle.data_manifest] == ["docs", "pictures"]
        assert [s.file_count for s in bundle.data_manifest] == [4, 6]
    full, _ = sync(cfg)
    assert full.index_checksum == read_bundle(cfg.workspace / "index").checksum
