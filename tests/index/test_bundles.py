"""Bundle specs: `kbrelease index --bundle FILE` resolves a spec into a data index (seed 003 fields)."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from kbrelease.cli import app
from kbrelease.errors import NotInIndex
from kbrelease.index.data_index import read_source_index
from kbrelease.index.query import FileFilter

from data_workspace import SPEC, day, make_workspace, write_spec

runner = CliRunner()


def _index(tmp_path: Path, spec: Path, *args: str) -> object:
    return runner.invoke(app, ["-c", str(tmp_path / "kbrelease.yaml"), "index", "--bundle", str(spec), *args])


def test_a_spec_resolves_into_the_seed_manifest_and_filtered_parquet(tmp_path: Path) -> None:
    make_workspace(tmp_path)
    spec = write_spec(tmp_path, SPEC)

    result = _index(tmp_path, spec, "--json")

    assert result.exit_code == 0, result.output
    folder = tmp_path / "ws" / "bundles" / "weekly_docs" / "v1.0.0-2025.23"
    assert json.loads(result.stdout)["folder"] == str(folder)
    manifest = yaml.safe_load((folder / "bundle.yaml").read_text(encoding="utf-8"))
    meta = manifest["meta"]
    assert (meta["bundle_name"], meta["bundle_version"], meta["bundle_type"]) == ("weekly_docs", "v1.0.0-2025.23", "weekly")
    assert meta["total_files"] == 11 + 4
    assert meta["data_volume"].endswith("KB")
    assert meta["created_at"].endswith("+00:00")
    assert meta["spec_source"]["file"] == str(spec)
    assert meta["spec_source"]["commit"] is None  # not in git
    docs, pictures = manifest["data_manifest"]
    assert docs["channel"] == "docs"
    assert docs["version"] == "1.2.0"
    assert docs["data_range"] == {"start_time": "2025-06-02T00:00:00+00:00", "end_time": "2025-06-03T23:59:59+00:00"}
    assert docs["storage_path"] == str(tmp_path / "src" / "text")
    assert docs["index_file"] == "docs.parquet"
    assert docs["file_count"] == 11
    assert docs["checksum"].startswith("sha256:")
    records = read_source_index(folder / "docs.parquet")
    assert [r.relative_path for r in records] == sorted(r.relative_path for r in records)
    assert {r.relative_path.split("/")[0] for r in records} == {"day-2", "day-3", "ünï"}
    assert all(day(2) <= r.timestamp <= day(3, 59) for r in records)
    assert docs["total_size"] == sum(r.size_bytes for r in records)
    # No range: every file, and the data range is the files' own.
    assert pictures["file_count"] == 4
    assert pictures["data_range"]["start_time"] == day(2, 0).isoformat()
    assert (tmp_path / "ws" / "bundles" / "weekly_docs" / "LATEST").read_text().strip() == "v1.0.0-2025.23"


def test_the_spec_commit_is_recorded_when_the_spec_is_in_git(tmp_path: Path) -> None:
    make_workspace(tmp_path)
    spec = write_spec(tmp_path, SPEC)
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "bundles/weekly_docs.yaml"], check=True)
    subprocess.run([*git, "commit", "-qm", "spec"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()

    result = _index(tmp_path, spec, "--json")

    source = json.loads(result.stdout)["meta"]["spec_source"]
    digest = "sha256:" + hashlib.sha256(spec.read_bytes()).hexdigest()
    assert source == {"file": "bundles/weekly_docs.yaml", "repo": tmp_path.name, "commit": head, "dirty": False, "sha256": digest}


def test_the_same_bundle_content_gives_the_same_checksum_as_the_sync(tmp_path: Path) -> None:
    """A bundle with no time range names exactly the synced files: equal checksums."""
    make_workspace(tmp_path)
    spec = write_spec(tmp_path, "version: all\nsources:\n  - source: docs\n", name="everything")

    result = _index(tmp_path, spec, "--json")

    current = yaml.safe_load((tmp_path / "ws" / "index" / "bundle.yaml").read_text(encoding="utf-8"))
    assert json.loads(result.stdout)["data_manifest"][0]["checksum"] == current["data_manifest"][0]["checksum"]


def test_index_with_sync_picks_up_new_files_and_lists_bundles(tmp_path: Path) -> None:
    make_workspace(tmp_path)
    spec = write_spec(tmp_path, "version: '2'\nsources:\n  - source: docs\n", name="docs_only")
    (tmp_path / "src" / "text" / "late.md").write_text("# Late\n\nadded after the first sync\n", encoding="utf-8")

    assert json.loads(_index(tmp_path, spec, "--json").stdout)["meta"]["total_files"] == 16
    assert json.loads(_index(tmp_path, spec, "--sync", "--json").stdout)["meta"]["total_files"] == 17

    listed = runner.invoke(app, ["-c", str(tmp_path / "kbrelease.yaml"), "index"])
    assert listed.stdout.strip() == "docs_only: 2 (latest 2)"  # the numeric version label became text


BAD_SPECS = {
    "unknown source": ("version: v1\nsources:\n  - source: videos\n", "names unknown source 'videos' (configured: docs, pictures)"),
    "inverted range": (
        "version: v1\nsources:\n  - source: docs\n    start_time: 2025-06-03T00:00:00Z\n    end_time: 2025-06-01T00:00:00Z\n",
        "start_time 2025-06-03T00:00:00+00:00 is after end_time 2025-06-01T00:00:00+00:00 for source 'docs'; swap them",
    ),
    "malformed yaml": ("version: v1\nsources: [\n  - source: docs\n", "is not valid YAML at line"),
    "unknown key": ("version: v1\nsources:\n  - source: docs\n    strat_time: 2025-06-01\n", "sources.0.strat_time: unknown key"),
    "version mismatch": (
        "version: v1\nsources:\n  - source: docs\n    version: '9.9'\n",
        "wants source 'docs' version '9.9', but the source is configured as version '1.2.0'",
    ),
    "no sources": ("version: v1\nsources: []\n", "sources: List should have at least 1 item"),
    "listed twice": ("version: v1\nsources:\n  - source: docs\n  - channel: docs\n", "source 'docs' is listed twice"),
    "path in the version": ("version: ../../etc\nsources:\n  - source: docs\n", "version: String should match pattern"),
    "not a mapping": ("- docs\n- pictures\n", "must be a mapping with name, version and sources"),
}


@pytest.mark.parametrize("case", sorted(BAD_SPECS))
def test_a_bad_spec_is_a_cli_error_naming_the_problem_and_changes_nothing(tmp_path: Path, case: str) -> None:
    make_workspace(tmp_path)
    before = (tmp_path / "ws" / "index" / "bundle.yaml").read_bytes()
    text, expected = BAD_SPECS[case]
    spec = write_spec(tmp_path, text, name="bad")

    result = _index(tmp_path, spec)

    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ")
    assert expected in result.stderr
    assert str(spec) in result.stderr or case in ("unknown source", "version mismatch")
    assert not (tmp_path / "ws" / "bundles").exists()
    assert (tmp_path / "ws" / "index" / "bundle.yaml").read_bytes() == before


def test_a_missing_spec_file_and_an_unsynced_source_are_named(tmp_path: Path) -> None:
    make_workspace(tmp_path)

    missing = _index(tmp_path, tmp_path / "bundles" / "nope.yaml")
    assert missing.exit_code == 2
    assert "bundle spec" in missing.stderr and "nope.yaml not found" in missing.stderr

    cfg = tmp_path / "kbrelease.yaml"
    cfg.write_text(cfg.read_text() + f"  - name: later\n    path: {tmp_path / 'src' / 'text'}\n    modality: text\n", encoding="utf-8")
    spec = write_spec(tmp_path, "version: v1\nsources:\n  - source: later\n", name="later")
    unsynced = _index(tmp_path, spec)
    assert unsynced.exit_code == 2
    assert "source(s) later have not been synced yet; run `kbrelease sync --source later` first" in unsynced.stderr


def test_resolving_again_replaces_the_version_atomically(tmp_path: Path) -> None:
    make_workspace(tmp_path)
    spec = write_spec(tmp_path, SPEC)
    _index(tmp_path, spec)
    folder = tmp_path / "ws" / "bundles" / "weekly_docs" / "v1.0.0-2025.23"
    first = pq.read_table(folder / "docs.parquet").num_rows

    spec.write_text(SPEC.replace("2025-06-02T00:00:00Z", "2025-06-03T00:00:00Z"), encoding="utf-8")
    assert _index(tmp_path, spec).exit_code == 0

    assert pq.read_table(folder / "docs.parquet").num_rows == first - 6  # day 2 (5 notes + the unicode one) left
    leftovers = [p.name for p in folder.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_a_release_is_built_and_published_from_a_bundle(tmp_path: Path, isolated_milvus: dict[str, str], text_embedder: Any) -> None:
    from kbrelease import KbRelease

    cfg = make_workspace(tmp_path, overrides=isolated_milvus, pictures=False)
    spec = write_spec(tmp_path, "version: v1\nsources:\n  - source: docs\n    start_time: 2025-06-03T00:00:00Z\n", name="june3")
    with KbRelease(cfg, text_embedder=text_embedder) as kb:
        kb.index_bundle(spec)
        built = kb.build("from_bundle", bundle="june3")
        assert built.sources["docs"].files == 5  # day 3 only, not the 16 synced files
        kb.verify("from_bundle")

        published = kb.publish(bundle=spec)
        assert published.release.sources["docs"].files == 5
        assert kb.publish(bundle=spec).unchanged  # same bundle, same models: nothing to build
        live = kb.data_index("live")
        assert live.bundle.meta["bundle_name"] == "june3"
        assert {p.split("/")[0] for p in live.page(FileFilter()).records["relative_path"].to_pylist()} == {"day-3"}
        with pytest.raises(NotInIndex, match="no resolved bundle 'nope'"):
            kb.build(bundle="nope")


def test_files_lists_any_index_from_the_cli(tmp_path: Path) -> None:
    make_workspace(tmp_path)
    _index(tmp_path, write_spec(tmp_path, SPEC))
    cfg = ["-c", str(tmp_path / "kbrelease.yaml"), "files"]

    page = runner.invoke(app, [*cfg, "weekly_docs", "--source", "docs", "--prefix", "day-3/", "--limit", "2", "--json"])
    assert page.exit_code == 0, page.output
    data = json.loads(page.stdout)
    assert [f["relative_path"] for f in data["files"]] == ["day-3/note-0.md", "day-3/note-1.md"]
    rest = runner.invoke(app, [*cfg, "weekly_docs", "--source", "docs", "--prefix", "day-3/", "--cursor", data["next_cursor"]])
    assert [line.split()[1] for line in rest.stdout.splitlines()] == ["docs:day-3/note-2.md", "docs:day-3/note-3.md", "docs:day-3/note-4.md"]

    current = runner.invoke(app, [*cfg, "--start-time", "2025-06-01T10:03:00Z", "--end-time", "2025-06-01T10:04:00Z"])
    assert [line.split()[1] for line in current.stdout.splitlines()] == ["docs:day-1/note-3.md", "docs:day-1/note-4.md"]
    bad = runner.invoke(app, [*cfg, "--start-time", "soon"])
    assert bad.exit_code == 2
    assert bad.stderr.strip() == "error: --start-time 'soon' is not an ISO 8601 time; use e.g. 2025-06-01T00:00:00Z"
    unknown = runner.invoke(app, [*cfg, "nope"])
    assert unknown.exit_code == 1
    assert "no bundle or release named 'nope'" in unknown.stderr
