"""Manifest schema versions: every older one is read (migrated), a newer one is refused, the docs show the table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kbrelease.errors import CompatibilityError
from kbrelease.release.registry import ReleaseRecord
from kbrelease.release.schema import MANIFEST_SCHEMA_VERSION, MANIFEST_VERSIONS, READS, migrate_manifest

REPO = Path(__file__).resolve().parents[2]
V1 = REPO / "tests" / "package" / "fixtures" / "manifest_v1.json"  # written by kbrelease before release packages


def test_a_v1_manifest_written_by_the_older_kbrelease_is_read_and_migrated() -> None:
    raw = json.loads(V1.read_text(encoding="utf-8"))
    assert raw["schema_version"] == 1 and "origin" not in raw

    record = ReleaseRecord.from_dict(raw)

    assert record.schema_version == MANIFEST_SCHEMA_VERSION == 3
    assert record.origin is None
    assert (record.name, record.state, record.database) == ("v1", "verified", "kb_v1")
    assert record.sources["docs"].rows == raw["sources"]["docs"]["rows"]
    assert record.embedders == raw["embedders"]
    migrated = record.asdict()
    assert all(counts.sparse is False for counts in record.sources.values())  # v3: no release before it has a BM25 field
    raw["sources"] = {name: {**counts, "sparse": False} for name, counts in raw["sources"].items()}
    assert {k: v for k, v in migrated.items() if k not in ("schema_version", "origin")} == {k: v for k, v in raw.items() if k != "schema_version"}


def test_a_newer_manifest_is_refused_with_a_message_to_upgrade() -> None:
    raw = json.loads(V1.read_text(encoding="utf-8")) | {"schema_version": MANIFEST_SCHEMA_VERSION + 1}

    with pytest.raises(CompatibilityError, match=r"release 'v1' has manifest schema version 4, newer than kbrelease .* reads \(versions 1, 2, 3\); upgrade"):
        ReleaseRecord.from_dict(raw)


@pytest.mark.parametrize("bad", [0, "2", None, True])
def test_a_damaged_schema_version_is_named(bad: object) -> None:
    with pytest.raises(CompatibilityError, match=r"schema_version .* is not a manifest schema version; the manifest is damaged"):
        migrate_manifest({"name": "v1", "schema_version": bad}, "release 'v1'")


def test_the_versions_table_reads_every_version_and_is_in_the_docs() -> None:
    assert tuple(range(1, MANIFEST_SCHEMA_VERSION + 1)) == READS
    assert [v.version for v in MANIFEST_VERSIONS] == list(READS)
    usage = (REPO / "docs" / "usage.md").read_text(encoding="utf-8")
    for v in MANIFEST_VERSIONS:
        assert f"| {v.version} | {v.written_by} | {v.changes} |" in usage
