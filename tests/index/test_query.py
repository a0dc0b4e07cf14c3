"""Queries over a data index with Arrow: filters, order, cursors, exact batches, lookups."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from kbrelease.errors import DataIndexError
from kbrelease.index.data_index import FileRecord, file_id_for, summarize_source, write_bundle, write_source_index
from kbrelease.index.query import MAX_BATCH, MAX_PAGE, FileFilter, IndexQuery, iso_times, parse_time

from data_workspace import day, make_workspace


@pytest.fixture
def query(tmp_path: Path) -> IndexQuery:
    cfg = make_workspace(tmp_path)
    return IndexQuery(cfg.workspace / "index")


def _paths(query: IndexQuery, flt: FileFilter) -> list[tuple[str, str]]:
    page = query.page(flt, limit=MAX_PAGE)
    return list(zip(page.records["source"].to_pylist(), page.records["relative_path"].to_pylist(), strict=True))


def test_records_come_sorted_by_source_then_path_with_every_field(query: IndexQuery) -> None:
    page = query.page(FileFilter(), limit=100)

    keys = list(zip(page.records["source"].to_pylist(), page.records["relative_path"].to_pylist(), strict=True))
    assert keys == sorted(keys)
    assert len(keys) == 20
    assert keys[0] == ("docs", "day-1/note-0.md")
    assert page.next_cursor is None
    first = page.to_dicts()[0]
    assert first["file_id"] == file_id_for("docs", "day-1/note-0.md")
    assert first["timestamp"] == day(1, 0)
    assert first["metadata"] == {"suffix": ".md"}
    assert set(first) == {"file_id", "source", "relative_path", "timestamp", "size_bytes", "checksum", "etag", "metadata"}


def test_filters_combine_source_time_range_and_path_prefix(query: IndexQuery) -> None:
    assert {s for s, _ in _paths(query, FileFilter(sources=("pictures",)))} == {"pictures"}
    on_day_2 = _paths(query, FileFilter(start_time=day(2), end_time=day(2, 59)))
    assert on_day_2 == sorted(on_day_2)
    assert [p for s, p in on_day_2 if s == "docs"] == [f"day-2/note-{i}.md" for i in range(5)] + ["ünï/cödé.md"]
    assert len([p for s, p in on_day_2 if s == "pictures"]) == 4
    # Both bounds are inclusive.
    assert _paths(query, FileFilter(("docs",), day(1, 4), day(1, 4))) == [("docs", "day-1/note-4.md")]
    assert _paths(query, FileFilter(prefix="day-3/")) == [("docs", f"day-3/note-{i}.md") for i in range(5)]
    assert _paths(query, FileFilter(prefix="ünï")) == [("docs", "ünï/cödé.md")]
    assert _paths(query, FileFilter(prefix="day-9")) == []


def test_cursor_pages_cover_every_record_exactly_once(query: IndexQuery) -> None:
    flt = FileFilter(start_time=day(1, 2))
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = query.page(flt, limit=3, cursor=cursor)
        seen += page.records["file_id"].to_pylist()
        pages += 1
        cursor = page.next_cursor
        if cursor is None:
            break
    everything = query.page(flt, limit=MAX_PAGE).records["file_id"].to_pylist()
    assert seen == everything
    assert len(seen) == 18  # day 1 from 10:02 (3), days 2-3 (11), pictures (4)
    assert pages == 6  # the last full page already knows nothing follows: no empty 7th page


def test_a_cursor_only_continues_its_own_query(query: IndexQuery) -> None:
    cursor = query.page(FileFilter(sources=("docs",)), limit=2).next_cursor

    with pytest.raises(DataIndexError, match="cursor belongs to another query"):
        query.page(FileFilter(sources=("pictures",)), limit=2, cursor=cursor)
    with pytest.raises(DataIndexError, match="cursor is not valid"):
        query.page(FileFilter(), limit=2, cursor="not-a-cursor")


def test_bad_arguments_name_the_problem(query: IndexQuery) -> None:
    with pytest.raises(DataIndexError, match="start_time 2025-06-03T00:00:00\\+00:00 is after end_time"):
        FileFilter(start_time=datetime(2025, 6, 3, tzinfo=UTC), end_time=datetime(2025, 6, 1, tzinfo=UTC))
    with pytest.raises(DataIndexError, match="unknown source 'videos' in this data index \\(sources: docs, pictures\\)"):
        query.page(FileFilter(sources=("videos",)))
    with pytest.raises(DataIndexError, match=f"limit 0 is out of range; ask for 1 to {MAX_PAGE}"):
        query.page(FileFilter(), limit=0)
    with pytest.raises(DataIndexError, match=f"batch_size 1000000000 is out of range; use 1 to {MAX_BATCH}"):
        query.batches(FileFilter(), 1_000_000_000)  # refused before any batch is asked for
    with pytest.raises(DataIndexError, match="is not an ISO 8601 time"):
        parse_time("yesterday", "start_time")
    assert parse_time("2025-06-01T00:00:00Z", "start_time") == datetime(2025, 6, 1, tzinfo=UTC)


def test_batches_have_the_asked_size_and_resume_from_their_cursor(query: IndexQuery) -> None:
    batches = list(query.batches(FileFilter(), batch_size=6))

    assert [b.num_rows for b, _ in batches] == [6, 6, 6, 2]
    resumed = list(query.batches(FileFilter(), batch_size=6, cursor=batches[1][1]))
    assert [b["file_id"].to_pylist() for b, _ in resumed] == [b["file_id"].to_pylist() for b, _ in batches[2:]]


def test_lookup_finds_ids_in_any_source(query: IndexQuery) -> None:
    wanted = [file_id_for("pictures", "cat-1.png"), file_id_for("docs", "ünï/cödé.md"), "0000"]

    found = query.lookup(wanted)

    assert set(found) == set(wanted[:2])
    assert found[wanted[0]]["source"] == "pictures"
    assert found[wanted[1]]["relative_path"] == "ünï/cödé.md"


def test_paging_a_large_index_reads_only_the_row_groups_it_needs(tmp_path: Path) -> None:
    """Sorted paths + small row groups: a deep cursor or a prefix still finds its rows."""
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    records = [FileRecord(file_id_for("big", f"f/{i:06d}"), f"f/{i:06d}", t0 + timedelta(seconds=i), i, "0" * 64) for i in range(50_000)]
    write_source_index(tmp_path / "big.parquet", records)
    write_bundle(tmp_path, [summarize_source("big", "text", "big", "", "/x", "big.parquet", records)])
    query = IndexQuery(tmp_path)

    page = query.page(FileFilter(prefix="f/0499"), limit=5)
    assert page.records["relative_path"].to_pylist() == [f"f/0499{i:02d}" for i in range(5)]
    after = query.page(FileFilter(prefix="f/0499"), limit=200, cursor=page.next_cursor)
    assert after.records.num_rows == 95
    assert after.next_cursor is None
    window = query.page(FileFilter(start_time=t0 + timedelta(seconds=40_000), end_time=t0 + timedelta(seconds=40_004, microseconds=1)))
    assert window.records["relative_path"].to_pylist() == [f"f/{i:06d}" for i in range(40_000, 40_005)]


def test_iso_times_match_isoformat_for_every_kind_of_timestamp() -> None:
    values = [
        datetime(2025, 6, 1, tzinfo=UTC),
        datetime(2025, 6, 1, 23, 59, 59, 999_999, tzinfo=UTC),
        datetime(2024, 2, 29, 12, 0, 0, 500, tzinfo=UTC),
        datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC),
    ]
    arr = pa.array(values, pa.timestamp("us", tz="UTC"))

    assert iso_times(arr).to_pylist() == [v.isoformat().replace("+00:00", "Z") for v in values]
    assert iso_times(arr[:3]).to_pylist() == [v.isoformat().replace("+00:00", "Z") for v in values[:3]]


@pytest.mark.parametrize("odd", ['say "hi"', "back\\slash", "tab\there", "new\nline", "ünïcödé ✓ 𝄞", "\u2028"])
def test_json_array_is_valid_json_for_any_path(tmp_path: Path, odd: str) -> None:
    import json

    from kbrelease.index.query import json_array, record_schema

    when = datetime(2025, 6, 1, 12, 30, 0, 250_000, tzinfo=UTC)
    rows = {"file_id": ["a1", "b2"], "source": ["docs", "docs"], "relative_path": [odd, "plain.md"], "timestamp": [when, when]}
    rows |= {"size_bytes": [1, 2], "checksum": ["c" * 64, "d" * 64], "etag": [None, 'e"1'], "metadata": ['{"k": [1, "v"]}', "{}"]}
    batch = pa.RecordBatch.from_pydict(rows, schema=record_schema())

    records = json.loads(json_array(batch))

    assert records[0] == {
        "file_id": "a1",
        "source": "docs",
        "relative_path": odd,
        "timestamp": "2025-06-01T12:30:00.250000Z",
        "size_bytes": 1,
        "checksum": "c" * 64,
        "etag": "",
        "metadata": {"k": [1, "v"]},
    }
    assert records[1]["etag"] == 'e"1'
