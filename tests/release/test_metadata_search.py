"""User metadata in every vector row and search filters (issue 15): --where, --after, --before in the library, CLI and HTTP."""

from __future__ import annotations

import io
import json
import os
import tarfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from kbrelease import KbRelease, load_config
from kbrelease.errors import QueryError

from helpers import write_config

BODY = "# VPN\n\nTo reach the office network from home, run fernlink up and sign in with your badge.\n"
DOCS: dict[str, tuple[str, datetime]] = {
    "a.md": ("---\ntitle: VPN guide\nteam: infra\nlevel: 2\n---\n" + BODY, datetime(2025, 6, 1, tzinfo=UTC)),
    "b.md": (BODY.replace("badge", "token"), datetime(2026, 2, 1, tzinfo=UTC)),
    "c.md": (BODY.replace("badge", "phone"), datetime(2026, 3, 1, tzinfo=UTC)),
}


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory, lite_server: str, text_embedder: Any) -> Iterator[KbRelease]:
    """Three text files: a.md with front matter, b.md with a YAML sidecar, c.md with nothing; published once for the module."""
    folder = tmp_path_factory.mktemp("metasearch")
    text = folder / "corpus" / "text"
    text.mkdir(parents=True)
    (folder / "corpus" / "images").mkdir()
    for name, (body, when) in DOCS.items():
        (text / name).write_text(body, encoding="utf-8")
        os.utime(text / name, (when.timestamp(), when.timestamp()))
    (text / "b.md.meta.yaml").write_text("team: hr\nlevel: 5\ntags: [remote, onboarding]\n", encoding="utf-8")
    config = write_config(folder, folder / "corpus")
    config.write_text(config.read_text(encoding="utf-8").split("  - name: pictures")[0], encoding="utf-8")  # text only
    cfg = load_config(config, env={}, overrides={"milvus.uri": lite_server, "milvus.db_prefix": "meta_", "milvus.registry_db": "meta_registry"})
    with KbRelease(cfg, text_embedder=text_embedder) as kb:
        kb.publish(skip_quality=True)
        yield kb


def _files(hits: list[Any]) -> list[str]:
    return sorted({h.file for h in hits})


def test_rows_carry_the_files_metadata_and_front_matter_is_not_text(published: KbRelease) -> None:
    record = published.resolve(None)
    counts = record.sources["docs"]
    rows = published.store.client(record.database).query(counts.collection, filter='file != ""', output_fields=["file", "text", "metadata"])
    by_file = {r["file"]: r for r in rows}
    assert set(by_file) == {"a.md", "b.md", "c.md"}  # the sidecar is no document
    assert by_file["a.md"]["metadata"]["user"] == {"title": "VPN guide", "team": "infra", "level": 2}
    assert by_file["b.md"]["metadata"]["user"] == {"team": "hr", "level": 5, "tags": ["remote", "onboarding"]}
    assert by_file["c.md"]["metadata"]["user"] == {}
    assert by_file["a.md"]["metadata"]["time"] == int(DOCS["a.md"][1].timestamp())
    assert all("team:" not in r["text"] and "---" not in r["text"] for r in rows)


def test_search_filters_by_metadata_and_time(published: KbRelease) -> None:
    assert _files(published.search("vpn from home", k=10)) == ["a.md", "b.md", "c.md"]
    assert _files(published.search("vpn from home", k=10, where='team == "infra"')) == ["a.md"]
    assert _files(published.search("vpn from home", k=10, where='team in ["infra", "hr"] and level > 2')) == ["b.md"]
    assert _files(published.search("vpn from home", k=10, where='"remote" in tags')) == ["b.md"]
    assert _files(published.search("vpn from home", k=10, where='not team == "infra"')) == ["b.md"]  # c.md has no team: unknown, not a match
    assert _files(published.search("vpn from home", k=10, after="2026-01-01")) == ["b.md", "c.md"]
    assert _files(published.search("vpn from home", k=10, before="2026-02-01T00:00:00Z")) == ["a.md", "b.md"]
    assert _files(published.search("vpn from home", k=10, after="2026-01-01", before="2026-02-15", where="level >= 5")) == ["b.md"]
    assert published.search("vpn from home", k=10, where='team == "nobody"') == []
    with pytest.raises(QueryError, match="later than before"):
        published.search("vpn", after="2026-02-01", before="2026-01-01")
    with pytest.raises(QueryError, match="not an ISO 8601"):
        published.search("vpn", after="last tuesday")


def test_cli_search_where_and_bad_filter_exit_2(published: KbRelease, tmp_path: Path) -> None:
    from kbrelease.cli import app

    cfg = published.cfg
    config = tmp_path / "kbrelease.yaml"
    config.write_text(
        json.dumps(
            {
                "workspace": str(cfg.workspace),
                "milvus": {"uri": cfg.milvus.uri, "db_prefix": cfg.milvus.db_prefix, "registry_db": cfg.milvus.registry_db},
                "sources": [{"name": s.name, "path": s.path, "modality": s.modality} for s in cfg.sources],
            }
        ),
        encoding="utf-8",
    )
    runner = CliRunner()
    for bad, named in [
        ('team == "infra" or __import__("os")', "call is not allowed"),
        ('team == "x") or (1 == 1', "not valid"),
        ("team = 'infra'", "not valid"),
    ]:
        result = runner.invoke(app, ["-c", str(config), "search", "vpn", "--where", bad])
        assert result.exit_code == 2, result.output
        assert named in result.output
    late = runner.invoke(app, ["-c", str(config), "search", "vpn", "--after", "tomorrow"])
    assert late.exit_code == 2 and "--after" not in late.output and "ISO 8601" in late.output


def test_http_search_where_after_before(published: KbRelease) -> None:
    from fastapi.testclient import TestClient

    from kbrelease.service.app import create_app

    with TestClient(create_app(published.cfg, kb=published)) as client:
        deadline = time.monotonic() + 60
        while client.get("/readyz").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        ok = client.get("/api/v1/search", params={"q": "vpn from home", "k": 10, "where": 'team == "hr"'})
        assert ok.status_code == 200, ok.text
        assert sorted({h["file"] for h in ok.json()["hits"]}) == ["b.md"]
        dated = client.post("/api/v1/search", json={"q": "vpn from home", "k": 10, "after": "2026-01-01", "before": "2026-02-15"})
        assert sorted({h["file"] for h in dated.json()["hits"]}) == ["b.md"]
        for bad in ['team == "hr" or 1 == 1', "team.__class__ == 1", 'team == "a" and exec("x")']:
            answer = client.get("/api/v1/search", params={"q": "vpn", "where": bad})
            assert answer.status_code == 400, answer.text
            assert answer.json()["error"]["code"] == "bad_query"
        assert client.get("/api/v1/search", params={"q": "vpn", "before": "soon"}).status_code == 400


def test_packages_carry_the_metadata(published: KbRelease, tmp_path: Path) -> None:
    release = published.resolve(None).name
    package = tmp_path / "release.kbpkg"
    published.package_export(release, package)
    with tarfile.open(package) as tar:
        member = next(m for m in tar.getmembers() if m.name.startswith("collections/docs/") and m.name.endswith(".parquet"))
        data = tar.extractfile(member).read()  # type: ignore[union-attr]
    rows = pq.read_table(io.BytesIO(data), columns=["file", "metadata"]).to_pylist()
    assert {r["file"]: json.loads(r["metadata"])["user"].get("team") for r in rows} == {"a.md": "infra", "b.md": "hr", "c.md": None}
