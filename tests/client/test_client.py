"""The Python client against a real uvicorn: typed results, lazy streams, downloads, retries, errors."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from kbrelease.errors import AuthenticationError, DataIndexError, NotInIndex, ServiceUnavailable
from kbrelease.index.client import DataIndexClient, Dataset, FileInfo
from kbrelease.index.data_index import file_id_for

from data_workspace import SPEC, data_app, day, make_workspace, write_spec
from local_http import UvicornServer
from servers import free_port

TOKEN = "client-test-token"


@dataclass
class Faults:
    """ASGI middleware injecting faults: 503 answers, or a response body cut off mid-way."""

    app: Any
    fail_next: int = 0
    cut_next: int = 0
    cut_after: int = 700
    requests: list[tuple[str, str, str]] = field(default_factory=list)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        self.requests.append((scope["method"], scope["path"], scope["query_string"].decode()))
        if self.fail_next:
            self.fail_next -= 1
            await send({"type": "http.response.start", "status": 503, "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": b'{"detail": "injected: busy"}'})
            return None
        if self.cut_next and scope["path"].endswith(("/stream", "/download")):
            self.cut_next -= 1
            sent = 0

            async def cutting(message: dict[str, Any]) -> None:
                nonlocal sent
                if message["type"] == "http.response.body":
                    body = message.get("body", b"")
                    if sent + len(body) > self.cut_after:
                        await send({"type": "http.response.body", "body": body[: self.cut_after - sent], "more_body": True})
                        raise ConnectionAbortedError("injected: connection cut")
                    sent += len(body)
                await send(message)

            return await self.app(scope, receive, cutting)
        return await self.app(scope, receive, send)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Faults]]:
    from kbrelease import KbRelease

    cfg = make_workspace(tmp_path, env={"KBRELEASE_API_TOKEN": TOKEN})
    KbRelease(cfg).index_bundle(write_spec(tmp_path, SPEC))
    faults = Faults(data_app(cfg))
    with UvicornServer(faults) as server:
        yield server.url, faults


@pytest.fixture
def client(served: tuple[str, Faults]) -> Iterator[DataIndexClient]:
    with DataIndexClient(served[0], token=TOKEN, backoff=0.01) as c:
        yield c


def test_get_dataset_is_typed(client: DataIndexClient) -> None:
    dataset = client.get_dataset("weekly_docs", "v1.0.0-2025.23")

    assert isinstance(dataset, Dataset)
    assert (dataset.name, dataset.version, dataset.total_files) == ("weekly_docs", "v1.0.0-2025.23", 15)
    assert [(c.channel, c.version, c.file_count) for c in dataset.channels] == [("docs", "1.2.0", 11), ("pictures", "", 4)]
    assert dataset.checksum.startswith("sha256:")
    assert client.get_dataset("weekly_docs").version == "v1.0.0-2025.23"  # latest by default


def test_list_files_with_channel_and_time_range(client: DataIndexClient) -> None:
    files = client.list_files("weekly_docs", channel="docs", start_time="2025-06-03T00:00:00Z", end_time=day(3, 2))

    assert [f.relative_path for f in files] == ["day-3/note-0.md", "day-3/note-1.md", "day-3/note-2.md"]
    first = files[0]
    assert isinstance(first, FileInfo)
    assert (first.channel, first.timestamp, first.metadata) == ("docs", day(3, 0), {"suffix": ".md"})
    assert first.file_id == file_id_for("docs", "day-3/note-0.md")
    # Pages are followed: a small page size gives the same list.
    assert list(client.iter_files("weekly_docs", page_size=4)) == client.list_files("weekly_docs")
    assert len(client.list_files("weekly_docs", max_files=5)) == 5


def test_stream_data_is_lazy_and_batched(client: DataIndexClient, served: tuple[str, Faults]) -> None:
    faults = served[1]
    stream = client.stream_data("weekly_docs", batch_size=4)
    assert faults.requests == []  # nothing fetched before the first batch is asked for

    batches = list(stream)

    assert [len(b) for b in batches] == [4, 4, 4, 3]
    assert all(isinstance(f, FileInfo) for b in batches for f in b)
    assert len(faults.requests) == 1


def test_stream_arrow_gives_record_batches(client: DataIndexClient) -> None:
    batches = list(client.stream_arrow("weekly_docs", batch_size=10, channel="pictures"))

    table = pa.Table.from_batches(batches)
    assert table.num_rows == 4
    assert table["source"].unique().to_pylist() == ["pictures"]


def test_download_writes_verified_files(client: DataIndexClient, tmp_path: Path) -> None:
    ids = [file_id_for("docs", "ünï/cödé.md"), file_id_for("pictures", "cat-0.png")]

    result = client.download("weekly_docs", ids, tmp_path / "out")

    assert result.files == [tmp_path / "out" / "docs" / "ünï" / "cödé.md", tmp_path / "out" / "pictures" / "cat-0.png"]
    assert result.files[0].read_bytes() == (tmp_path / "src" / "text" / "ünï" / "cödé.md").read_bytes()
    assert result.files[1].read_bytes() == (tmp_path / "src" / "images" / "cat-0.png").read_bytes()
    assert result.bytes == sum(p.stat().st_size for p in result.files)


def test_errors_are_kbrelease_errors_with_the_services_message(client: DataIndexClient, served: tuple[str, Faults], tmp_path: Path) -> None:
    with pytest.raises(NotInIndex, match="no bundle or release named 'nope'"):
        client.get_dataset("nope")
    with pytest.raises(DataIndexError, match="is after end_time"):
        client.list_files("weekly_docs", start_time="2025-06-03T00:00:00Z", end_time="2025-06-01T00:00:00Z")
    with pytest.raises(DataIndexError, match="batch_size 1000000 is out of range"):
        next(client.stream_data("weekly_docs", batch_size=1_000_000))
    with pytest.raises(NotInIndex, match=file_id_for("docs", "day-1/note-0.md")):
        client.download("weekly_docs", [file_id_for("docs", "day-1/note-0.md")], tmp_path / "none")
    assert not list((tmp_path / "none").rglob("*"))
    with pytest.raises(DataIndexError, match="invalid file id"):
        client.download("weekly_docs", ["../../etc/passwd"], tmp_path / "none")
    with DataIndexClient(served[0], token="wrong") as intruder, pytest.raises(AuthenticationError, match="HTTP 403"):
        intruder.get_dataset("weekly_docs")


def test_transient_failures_are_retried(client: DataIndexClient, served: tuple[str, Faults]) -> None:
    faults = served[1]
    faults.fail_next = 2

    assert client.get_dataset("weekly_docs").total_files == 15
    assert len(faults.requests) == 3

    faults.fail_next = 10
    with pytest.raises(ServiceUnavailable, match="HTTP 503: injected: busy"):
        client.get_dataset("weekly_docs")
    assert len(faults.requests) == 3 + 1 + client.retries


def test_an_unreachable_service_is_service_unavailable() -> None:
    with DataIndexClient(f"http://127.0.0.1:{free_port()}", retries=1, backoff=0.01) as c, pytest.raises(ServiceUnavailable, match="cannot reach"):
        c.list_files("weekly_docs")


def test_a_broken_stream_resumes_after_its_last_batch(client: DataIndexClient, served: tuple[str, Faults]) -> None:
    faults = served[1]
    expected = [f.file_id for b in client.stream_data("weekly_docs", batch_size=2) for f in b]
    faults.requests.clear()
    faults.cut_next = 1

    got = [f.file_id for b in client.stream_data("weekly_docs", batch_size=2) for f in b]

    assert got == expected  # every record once: no gap, no repeat
    assert len(faults.requests) == 2
    assert "cursor=" in faults.requests[1][2]


def test_a_broken_arrow_stream_resumes_too(client: DataIndexClient, served: tuple[str, Faults]) -> None:
    faults = served[1]
    faults.cut_after = 3000
    faults.cut_next = 1

    table = pa.Table.from_batches(list(client.stream_arrow("weekly_docs", batch_size=3)))

    assert table["file_id"].to_pylist() == [f.file_id for f in client.list_files("weekly_docs")]
    assert len(faults.requests) == 3  # cut, resumed, then the list


def test_a_broken_download_asks_again_for_what_is_missing(client: DataIndexClient, served: tuple[str, Faults], tmp_path: Path) -> None:
    faults = served[1]
    faults.cut_after = 2500  # inside the second file
    faults.cut_next = 1
    ids = [file_id_for("docs", f"day-2/note-{i}.md") for i in range(5)]

    result = client.download("weekly_docs", ids, tmp_path / "out")

    assert sorted(p.name for p in result.files) == [f"note-{i}.md" for i in range(5)]
    assert len(faults.requests) == 2
    assert not [p for p in (tmp_path / "out").rglob(".*")]  # no partial files left
