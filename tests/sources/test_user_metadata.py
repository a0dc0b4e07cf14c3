"""User metadata at sync (issue 15): sidecars, Markdown front matter, S3 object metadata and tags; checked at the entry."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from kbrelease import load_config
from kbrelease.index.bundles import load_spec, resolve
from kbrelease.index.data_index import FileRecord, index_checksum, read_source_index
from kbrelease.sources.metadata import MAX_METADATA_BYTES, MetadataError, check_metadata, front_matter, parse_sidecar
from kbrelease.sources.sync import sync

from servers import S3Server


def _config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "kbrelease.yaml"
    path.write_text(
        f"workspace: {tmp_path / 'ws'}\nsources:\n  - name: docs\n    path: {tmp_path / 'src'}\n    modality: text\n{extra}",
        encoding="utf-8",
    )
    return path


def _metadata(tmp_path: Path) -> dict[str, dict[str, Any]]:
    return {r.relative_path: r.metadata for r in read_source_index(tmp_path / "ws" / "index" / "docs.parquet")}


@pytest.mark.parametrize("index_only", [False, True])
def test_sidecars_and_front_matter_reach_the_index(tmp_path: Path, index_only: bool) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.md").write_text("---\ntitle: Alpha\nteam: infra\nreviewed: 2025-06-01\n---\n# Alpha\n", encoding="utf-8")
    (src / "a.md.meta.json").write_text(json.dumps({"team": "platform", "camera_id": "front"}), encoding="utf-8")  # the sidecar wins
    (src / "b.txt").write_text("plain", encoding="utf-8")
    (src / "b.txt.meta.yaml").write_text("tags: [x, y]\nscore: 0.5\nok: true\nnothing: null\n", encoding="utf-8")
    (src / "orphan.md.meta.json").write_text("{}", encoding="utf-8")  # describes no file: ignored
    (src / "bad.md").write_text("# Bad\n", encoding="utf-8")
    (src / "bad.md.meta.json").write_text('{"nested": {"a": 1}}', encoding="utf-8")
    (src / "c.md").write_text("---\n: [\n---\nbody\n", encoding="utf-8")
    cfg = load_config(_config(tmp_path), env={})

    info, _ = sync(cfg, index_only=index_only)

    meta = _metadata(tmp_path)
    assert set(meta) == {"a.md", "b.txt"}  # sidecars are never documents; the two bad files are skipped
    assert meta["a.md"] == {"suffix": ".md", "title": "Alpha", "team": "platform", "camera_id": "front", "reviewed": "2025-06-01"}
    assert meta["b.txt"] == {"suffix": ".txt", "tags": ["x", "y"], "score": 0.5, "ok": True, "nothing": None}
    skips = {s["file"]: s["reason"] for s in info.sources[0].skips}
    assert set(skips) == {"bad.md", "c.md"}
    assert "sidecar 'bad.md.meta.json'" in skips["bad.md"] and "'nested'" in skips["bad.md"]
    assert "c.md" in skips["c.md"] and "front matter" in skips["c.md"] and "not valid YAML" in skips["c.md"]

    # A sidecar changes on its own: the next sync picks it up though its file is unchanged,
    # and the data index's checksum changes, so publish builds a release with the new metadata.
    (src / "b.txt.meta.yaml").write_text("tags: [z]\n", encoding="utf-8")
    (src / "bad.md.meta.json").unlink()
    again, bundle = sync(cfg, index_only=index_only)
    meta = _metadata(tmp_path)
    assert meta["b.txt"] == {"suffix": ".txt", "tags": ["z"]}
    assert meta["bad.md"] == {"suffix": ".md"}
    assert again.sources[0].skipped == 1
    assert again.index_checksum != info.index_checksum
    # A bundle resolved from it (Arrow's checksum) agrees with the sync's (Python's).
    spec = tmp_path / "all.yaml"
    spec.write_text("version: v1\nsources:\n  - source: docs\n", encoding="utf-8")
    resolved = resolve(cfg, load_spec(spec))
    assert resolved.bundle.data_manifest[0].checksum == bundle.data_manifest[0].checksum


def test_cli_files_filters_by_metadata_and_prints_the_seeds_checksum_form(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from kbrelease.cli import app

    src = tmp_path / "src"
    src.mkdir()
    for name, team in [("a.md", "infra"), ("b.md", "hr")]:
        (src / name).write_text(f"---\nteam: {team}\n---\n# {name}\n", encoding="utf-8")
    config = _config(tmp_path)
    sync(load_config(config, env={}))
    runner = CliRunner()

    shown = runner.invoke(app, ["-c", str(config), "files", "--where", 'team == "infra"'])
    assert shown.exit_code == 0, shown.output
    record = read_source_index(tmp_path / "ws" / "index" / "docs.parquet")[0]
    assert shown.output.splitlines() == [
        f'{record.file_id}  docs:a.md  {record.size_bytes} B  {record.timestamp.isoformat()}  sha256:{record.checksum}  {{"team": "infra"}}'
    ]
    bad = runner.invoke(app, ["-c", str(config), "files", "--where", "team == infra"])
    assert bad.exit_code == 2 and "a comparison needs one metadata key and one literal" in bad.output


def test_indexes_without_user_metadata_keep_their_checksum() -> None:
    """The checksum formula of an index with no user metadata is the one before issue 15 (no needless rebuild after an upgrade)."""
    import hashlib

    records = [FileRecord(f"id{i}", f"p{i}.md", datetime(2025, 1, 1, tzinfo=UTC), 1, f"{i:064x}", metadata={"suffix": ".md"}) for i in range(3)]
    before = "sha256:" + hashlib.sha256("".join(f"p{i}.md\x00{i:064x}\n" for i in range(3)).encode()).hexdigest()
    assert index_checksum(records) == before
    tagged = [*records[:2], FileRecord("id2", "p2.md", records[2].timestamp, 1, records[2].checksum, metadata={"suffix": ".md", "a": 1})]
    assert index_checksum(tagged) != before


@pytest.mark.parametrize(
    ("data", "named"),
    [
        ({"camera id": 1}, "is not a name"),
        ({"suffix": ".exe"}, "reserved"),
        ({"k": {"a": 1}}, "dict values are not allowed"),
        ({"k": [[1]]}, "no nested lists"),
        ({"k": "x" * 2000}, "over 1024 characters"),
        ({f"k{i}": i for i in range(65)}, "over 64"),
        ({f"k{i}": "x" * 1000 for i in range(20)}, f"over {MAX_METADATA_BYTES} bytes"),
        ({"k": float("nan")}, "float values are not allowed"),
        ({"k": 2**70}, "int values are not allowed"),
        (["a", "b"], "must be a mapping"),
    ],
)
def test_bad_metadata_is_refused_naming_the_file(data: Any, named: str) -> None:
    with pytest.raises(MetadataError, match=named) as info:
        check_metadata(data, "file 'x.md' of source 'docs'")
    assert "x.md" in str(info.value)


def test_sidecar_and_front_matter_parsing_limits() -> None:
    with pytest.raises(MetadataError, match="over 65536 bytes"):
        parse_sidecar("a.meta.json", b"{" + b" " * 70_000 + b"}", "sidecar a")
    with pytest.raises(MetadataError, match="not UTF-8"):
        parse_sidecar("a.meta.json", b"\xff\xfe", "sidecar a")
    with pytest.raises(MetadataError, match="alias"):
        parse_sidecar("a.meta.yaml", b"a: &x [1]\nb: *x\n", "sidecar a")
    with pytest.raises(MetadataError, match="not valid JSON"):
        parse_sidecar("a.meta.json", b"{'a': 1}", "sidecar a")
    assert front_matter("no front matter\n---\nx: 1\n---\n", "f") == ({}, 0)
    assert front_matter("---\nunclosed: 1\n", "f") == ({}, 0)  # no closing line: text, not metadata
    meta, offset = front_matter("---\r\nx: 1\r\n---\r\nBody", "f")
    assert meta == {"x": 1} and "---\r\nx: 1\r\n---\r\nBody"[offset:] == "Body"


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with S3Server() as server:
        yield server


def test_s3_object_metadata_tags_and_sidecars(s3: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s3.reset()
    for key, value in s3.env().items():
        monkeypatch.setenv(key, value)
    s3.make_bucket("kb-meta")
    client = s3.client()
    client.put_object(Bucket="kb-meta", Key="docs/a.md", Body=b"# A\n", Metadata={"camera-id": "front", "team": "s3"}, Tagging="weather=sunny&team=tagged")
    client.put_object(Bucket="kb-meta", Key="docs/b.md", Body=b"---\nteam: fm\n---\n# B\n", Metadata={"team": "s3"})
    client.put_object(Bucket="kb-meta", Key="docs/b.md.meta.json", Body=b'{"owner": "ops"}')
    client.put_object(Bucket="kb-meta", Key="docs/bad.md", Body=b"# Bad\n", Metadata={"suffix": "reserved"})
    path = tmp_path / "kbrelease.yaml"
    path.write_text(
        f"workspace: {tmp_path / 'ws'}\ns3:\n  object_metadata: true\nsources:\n  - name: docs\n    path: s3://kb-meta/docs\n    modality: text\n",
        encoding="utf-8",
    )
    cfg = load_config(path)

    info, _ = sync(cfg)

    meta = _metadata(tmp_path)
    assert meta["a.md"] == {"suffix": ".md", "camera_id": "front", "team": "tagged", "weather": "sunny"}  # tags win over metadata
    assert meta["b.md"] == {"suffix": ".md", "team": "fm", "owner": "ops"}  # front matter and sidecar win over S3 metadata
    assert [s["file"] for s in info.sources[0].skips] == ["bad.md"]
    assert "reserved" in info.sources[0].skips[0]["reason"]

    # Off (the default): no extra requests, only front matter and sidecars.
    monkeypatch.setenv("KBRELEASE_S3_OBJECT_METADATA", "false")
    sync(load_config(path))
    assert _metadata(tmp_path)["a.md"] == {"suffix": ".md"}
