"""A release exported from one environment and imported into another answers every query the same."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import zstandard

from kbrelease import ReleaseError
from kbrelease.release.manifest import release_info_text

from .support import MakeTarget

QUERIES = ["how do I connect to the VPN from home", "what happens during the fire drill", "gym membership discount", "rotate my password"]


def _same_hits(a: Any, b: Any) -> None:
    assert [(h.file, h.chunk_index, h.source) for h in a] == [(h.file, h.chunk_index, h.source) for h in b]
    assert [h.score for h in a] == pytest.approx([h.score for h in b], abs=1e-5)


def test_export_then_import_gives_the_same_release_and_the_same_search_results(project: Any, make_target: MakeTarget, tmp_path: Path, corpus: Path) -> None:
    project.publish()
    package = tmp_path / "v1.tar"

    exported = project.package_export("v1", package)

    record = project.release("v1")
    assert exported.rows == sum(c.rows for c in record.sources.values())
    assert exported.sha256 == hashlib.sha256(package.read_bytes()).hexdigest()
    prod = make_target("prod")

    imported = prod.package_import(package)

    assert (imported.release, imported.environment, imported.state, imported.live) == ("v1", "prod", "verified", None)
    assert imported.rows == exported.rows
    assert prod.status()["live"] is None  # imported, not switched
    copy = prod.release("v1")
    assert copy.database == f"{prod.cfg.milvus.db_prefix}prod_v1"
    assert copy.origin is not None and copy.origin["package_sha256"] == exported.sha256
    assert (copy.origin["environment"], copy.origin["release"]) == (record.environment, "v1")
    assert copy.embedders == record.embedders and copy.data_index_checksum == record.data_index_checksum
    assert {n: c.rows for n, c in copy.sources.items()} == {n: c.rows for n, c in record.sources.items()}
    assert set(imported.phases) == {"check", "load", "seal", "verify"}
    assert f"imported from:   release v1 of environment default at {copy.origin['imported_at']}, package sha256 {exported.sha256}" in release_info_text(copy)

    prod.switch("v1")
    for query in QUERIES:
        _same_hits(project.search(query, k=5), prod.search(query, k=5))
    picture = sorted((corpus / "images" / "checkerboard").iterdir())[0]
    _same_hits(project.search_image(picture, k=4), prod.search_image(picture, k=4))


def test_the_archive_is_a_plain_tar_with_the_documented_layout(project: Any, tmp_path: Path) -> None:
    project.publish()
    package = tmp_path / "v1.tar.zst"

    project.package_export("v1", package, compress=True, part_mb=0.0625)

    raw = zstandard.ZstdDecompressor().stream_reader(package.open("rb")).read()
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        names = tar.getnames()
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    assert names[:3] == ["RELEASE_INFO.txt", "manifest.json", "index/bundle.yaml"]
    assert names[-1] == "SHA256SUMS"
    assert {"index/docs.parquet", "index/pictures.parquet"} <= set(names)
    parts = {n: pq.read_metadata(io.BytesIO(members[n])).num_rows for n in names if n.startswith("collections/")}
    assert {n.split("/")[1] for n in parts} == {"docs", "pictures"}
    assert sum(parts.values()) == sum(c.rows for c in project.release("v1").sources.values())
    for name, rows in parts.items():  # bounded: a part closes once its rows pass 64 KiB
        dim = 1280 if "pictures" in name else 384
        assert (rows - 1) * dim * 4 < 64 * 1024, name
    sums = dict(reversed(line.split("  ")) for line in members["SHA256SUMS"].decode().splitlines())
    assert set(sums) == set(names) - {"SHA256SUMS"}
    assert all(hashlib.sha256(members[n]).hexdigest() == digest for n, digest in sums.items())  # what `sha256sum -c` checks
    manifest = json.loads(members["manifest.json"])
    assert (manifest["format"], manifest["package_version"], manifest["manifest_schema_version"]) == ("kbrelease-release-package", 1, 3)
    assert manifest["collections"]["docs"]["dim"] == 384 and manifest["collections"]["pictures"]["dim"] == 1280
    info = members["RELEASE_INFO.txt"].decode()
    assert "release:         v1" in info and "all-MiniLM-L6-v2" in info and "SHA256SUMS" in info


def test_importing_the_same_package_again_loads_nothing(project: Any, make_target: MakeTarget, tmp_path: Path) -> None:
    project.publish()
    package = tmp_path / "v1.tar"
    project.package_export("v1", package)
    prod = make_target("prod")
    prod.package_import(package)

    again = prod.package_import(package, switch=True)

    assert again.already_imported and again.rows == 0
    assert again.live == "v1"


def test_a_release_name_taken_in_the_target_is_refused_unless_renamed(project: Any, make_target: MakeTarget, tmp_path: Path) -> None:
    project.publish()
    package = tmp_path / "v1.tar"
    project.package_export("v1", package)
    prod = make_target("prod")
    prod.publish()  # prod builds its own v1

    with pytest.raises(ReleaseError, match=r"release .v1. already exists in environment .prod. \(verified, built here\); import it under another name"):
        prod.package_import(package)

    info = prod.package_import(package, name="from_dev_v1", switch=True)
    assert (info.release, info.live) == ("from_dev_v1", "from_dev_v1")
    assert prod.search("how do I connect to the VPN from home", k=1)[0].release == "from_dev_v1"
