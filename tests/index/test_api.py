"""The data-index HTTP API on a real uvicorn: files, download, stream, auth, and every bad request."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pytest

from kbrelease.index.data_index import file_id_for
from kbrelease.sources.sync import sha256_file

from data_workspace import SPEC, data_app, make_workspace, write_spec
from local_http import UvicornServer

TOKEN = "s3cr3t-token"


@pytest.fixture
def api(tmp_path: Path) -> Iterator[httpx.Client]:
    """The router served by uvicorn over a synced workspace with bundle weekly_docs resolved; bearer auth on."""
    from kbrelease import KbRelease

    cfg = make_workspace(tmp_path, env={"KBRELEASE_API_TOKEN": TOKEN})
    KbRelease(cfg).index_bundle(write_spec(tmp_path, SPEC))
    with UvicornServer(data_app(cfg)) as server, httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        yield client


def _files(api: httpx.Client, **params: Any) -> dict[str, Any]:
    response = api.get("/api/v1/bundles/weekly_docs/files", params=params)
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_files_are_filtered_sorted_and_paginated(api: httpx.Client) -> None:
    first = _files(api, limit=4)
    assert first["count"] == 4
    assert [f["relative_path"] for f in first["files"]] == ["day-2/note-0.md", "day-2/note-1.md", "day-2/note-2.md", "day-2/note-3.md"]
    record = first["files"][0]
    assert record == {
        "file_id": file_id_for("docs", "day-2/note-0.md"),
        "source": "docs",
        "relative_path": "day-2/note-0.md",
        "timestamp": "2025-06-02T10:00:00Z",
        "size_bytes": record["size_bytes"],
        "checksum": record["checksum"],
        "etag": "",
        "metadata": {"suffix": ".md"},
    }
    rest = _files(api, limit=100, cursor=first["next_cursor"])
    assert rest["next_cursor"] is None
    assert first["count"] + rest["count"] == 15

    by_channel = _files(api, channel="pictures", start_time="2025-06-02T10:01:00Z", end_time="2025-06-02T10:02:00Z")
    assert [f["relative_path"] for f in by_channel["files"]] == ["cat-1.png", "cat-2.png"]
    assert [f["relative_path"] for f in _files(api, source="docs", prefix="ünï/")["files"]] == ["ünï/cödé.md"]


def test_the_manifest_and_the_bundle_list(api: httpx.Client) -> None:
    manifest = api.get("/api/v1/bundles/weekly_docs").json()
    assert manifest["meta"]["bundle_version"] == "v1.0.0-2025.23"
    assert [s["channel"] for s in manifest["data_manifest"]] == ["docs", "pictures"]
    assert manifest["access_config"]["authentication"] == "bearer_token"
    assert manifest["access_config"]["endpoints"]["streaming"] == "/api/v1/bundles/weekly_docs/stream"
    assert api.get("/api/v1/bundles").json() == {"bundles": [{"name": "weekly_docs", "versions": ["v1.0.0-2025.23"], "latest": "v1.0.0-2025.23"}]}
    # The last sync's index is served as 'current'.
    assert api.get("/api/v1/bundles/current/files", params={"limit": 1000}).json()["count"] == 20


def test_a_token_is_required_when_configured(api: httpx.Client) -> None:
    url = "/api/v1/bundles/weekly_docs/files"
    for headers in ({}, {"Authorization": f"Basic {TOKEN}"}):  # no bearer token at all
        response = httpx.get(str(api.base_url) + url, headers=headers)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert TOKEN not in response.text
    wrong = httpx.get(str(api.base_url) + url, headers={"Authorization": "Bearer wrong"})
    assert wrong.status_code == 403
    assert TOKEN not in wrong.text
    assert api.get(url).status_code == 200


BAD_REQUESTS = [
    ("files", {"start_time": "2025-06-03T00:00:00Z", "end_time": "2025-06-01T00:00:00Z"}, 400, "is after end_time"),
    ("files", {"source": "videos"}, 400, "unknown source 'videos'"),
    ("files", {"cursor": "garbage"}, 400, "cursor is not valid"),
    ("files", {"limit": 1_000_000}, 400, "limit 1000000 is out of range; ask for 1 to 10000"),
    ("files", {"start_time": "tomorrow"}, 422, '"loc":["query","start_time"]'),
    ("files", {"version": "v9"}, 404, "bundle 'weekly_docs' has no version 'v9'"),
    ("stream", {"batch_size": 10_000_000}, 400, "batch_size 10000000 is out of range; use 1 to 100000"),
    ("stream", {"batch_size": 0}, 400, "batch_size 0 is out of range"),
    ("stream", {"format": "xml"}, 400, "format 'xml' is not known"),
]


@pytest.mark.parametrize(("endpoint", "params", "status", "message"), BAD_REQUESTS)
def test_bad_queries_are_4xx_naming_the_problem(api: httpx.Client, endpoint: str, params: dict[str, Any], status: int, message: str) -> None:
    response = api.get(f"/api/v1/bundles/weekly_docs/{endpoint}", params=params)

    assert response.status_code == status, response.text
    assert message in response.text
    assert _files(api, limit=1)["count"] == 1  # the service is unaffected


@pytest.mark.parametrize("name", ["nope", "..", "%2E%2E%2F%2E%2E%2Fetc", "a%2Fb"])
def test_unknown_or_malformed_bundle_names_are_refused(api: httpx.Client, name: str) -> None:
    response = api.get(f"/api/v1/bundles/{name}/files")

    assert response.status_code in (400, 404), response.text
    assert response.json()["error"]["code"] in ("not_found", "not_in_index", "bad_index_query")  # refused, nothing read
    assert "root:" not in response.text


def test_download_streams_one_tar_with_checksums(api: httpx.Client, tmp_path: Path) -> None:
    ids = [file_id_for("docs", "ünï/cödé.md"), file_id_for("pictures", "cat-3.png"), file_id_for("docs", "day-2/note-0.md")]

    response = api.post("/api/v1/bundles/weekly_docs/download", json={"file_ids": [*ids, ids[0]]})

    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/x-tar"
    assert int(response.headers["content-length"]) == len(response.content)
    with tarfile.open(fileobj=io.BytesIO(response.content)) as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == ["docs/ünï/cödé.md", "pictures/cat-3.png", "docs/day-2/note-0.md"]  # asked order, once each
        for member, fid in zip(members, ids, strict=True):
            source, rel = member.name.split("/", 1)
            original = tmp_path / "src" / ("text" if source == "docs" else "images") / rel
            data = tar.extractfile(member).read()  # type: ignore[union-attr]
            assert data == original.read_bytes()
            assert member.pax_headers["KBRELEASE.file_id"] == fid
            assert member.pax_headers["KBRELEASE.sha256"] == sha256_file(original)


def test_download_refuses_ids_outside_the_bundle_and_paths(api: httpx.Client, tmp_path: Path) -> None:
    outside = file_id_for("docs", "day-1/note-0.md")  # synced, but before the bundle's time range
    url = "/api/v1/bundles/weekly_docs/download"

    not_in = api.post(url, json={"file_ids": [file_id_for("docs", "day-2/note-0.md"), outside]})
    assert not_in.status_code == 404
    assert f"file id(s) not in this data index: {outside}" in not_in.json()["error"]["message"]
    for bad in ["../../etc/passwd", "/etc/passwd", "docs/day-2/note-0.md", "%2e%2e", ""]:
        refused = api.post(url, json={"file_ids": [bad]})
        assert refused.status_code == 400, bad
        assert "invalid file id" in refused.json()["error"]["message"]
    assert "no file ids given" in api.post(url, json={"file_ids": []}).json()["error"]["message"]
    assert api.post(url, json={"file_ids": ["a"] * 10_001}).status_code == 400
    assert api.post(url, json={"ids": ["a"]}).status_code == 422
    assert _files(api, limit=1)["count"] == 1
    assert not list((tmp_path / "ws").rglob("*.tar"))  # nothing staged on disk


def test_download_refuses_a_file_changed_since_the_index(api: httpx.Client, tmp_path: Path) -> None:
    (tmp_path / "ws" / "mirror" / "docs" / "day-2" / "note-1.md").write_text("grown since the bundle was resolved\n" * 3, encoding="utf-8")

    response = api.post("/api/v1/bundles/weekly_docs/download", json={"file_ids": [file_id_for("docs", "day-2/note-1.md")]})

    assert response.status_code == 400
    assert "differs from this index" in response.json()["error"]["message"]


def test_stream_sends_ndjson_batches_and_an_end_marker(api: httpx.Client) -> None:
    with api.stream("GET", "/api/v1/bundles/weekly_docs/stream", params={"batch_size": 4}) as response:
        assert response.headers["content-type"] == "application/x-ndjson"
        lines = [json.loads(line) for line in response.iter_lines() if line]

    *batches, end = lines
    assert [b["count"] for b in batches] == [4, 4, 4, 3]
    assert [b["batch"] for b in batches] == [0, 1, 2, 3]
    assert end == {"done": True, "batches": 4, "records": 15}
    paths = [(r["source"], r["relative_path"]) for b in batches for r in b["records"]]
    assert paths == sorted(paths)
    resumed = api.get("/api/v1/bundles/weekly_docs/stream", params={"batch_size": 4, "cursor": batches[2]["cursor"]}).text.splitlines()
    assert json.loads(resumed[0])["records"] == batches[3]["records"]


def test_stream_sends_arrow_ipc_when_asked(api: httpx.Client) -> None:
    arrow = {"Accept": "application/vnd.apache.arrow.stream"}
    response = api.get("/api/v1/bundles/weekly_docs/stream", params={"batch_size": 10, "source": "docs"}, headers=arrow)

    assert response.headers["content-type"] == "application/vnd.apache.arrow.stream"
    reader = pa.ipc.open_stream(response.content)
    first, meta = reader.read_next_batch_with_custom_metadata()
    table = pa.Table.from_batches([first, *reader])
    assert table.column_names == ["file_id", "source", "relative_path", "timestamp", "size_bytes", "checksum", "etag", "metadata"]
    assert table.num_rows == 11
    assert first.num_rows == 10
    assert meta[b"cursor"]
    assert table["relative_path"].to_pylist()[-1] == "ünï/cödé.md"


@pytest.mark.parametrize(
    "params",
    [
        {"start_time": "9999-12-31T23:59:59-05:00"},
        {"end_time": "0001-01-01T00:00:00+05:00"},
        {"prefix": "\x00\uffff"},
        {"cursor": "eyJ2IjoxfQ"},  # valid base64 JSON, fields missing
        {"source": ""},
    ],
)
def test_edge_values_never_cause_a_server_error(api: httpx.Client, params: dict[str, Any]) -> None:
    for endpoint in ("files", "stream"):
        response = api.get(f"/api/v1/bundles/weekly_docs/{endpoint}", params=params)
        assert response.status_code < 500, response.text
