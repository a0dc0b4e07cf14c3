"""Reading Parquet from untrusted hands without letting it decide how much memory it takes.

A few kilobytes of compressed Parquet can decode into gigabytes: a long run
of one value, or a dictionary page whose one big string every row repeats.
Before anything is decoded, :func:`check_parquet` compares the file's own
metadata (row count, uncompressed size of every column chunk) with what the
caller expects and with hard caps; string columns are then read
dictionary-encoded, so a repeated value costs one copy, and
:func:`decoded_bytes` says what the table would cost as plain Python strings
before anyone asks for them.
"""

from __future__ import annotations

import re
from typing import Any

from kbrelease.errors import DataIndexError, KbReleaseError
from kbrelease.trust.paths import MAX_PATH_CHARS

MAX_INDEX_ROWS = 5_000_000
"""Most files one source's data index may list."""
MAX_INDEX_BYTES = 1 << 30
"""Most bytes a source's data index may decode to (about 200 bytes a file in practice)."""
MAX_METADATA_CHARS = 64 << 10
"""Longest ``metadata`` JSON of one index record."""
FILE_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
"""A file id: what :func:`kbrelease.index.data_index.file_id_for` makes (20 hex digits), never a path."""
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


def check_parquet(
    pf: Any,
    where: str,
    max_rows: int,
    max_bytes: int,
    expected_rows: int | None = None,
    error: type[KbReleaseError] = DataIndexError,
) -> None:
    """Refuse a Parquet file (``pyarrow.parquet.ParquetFile``) whose metadata says it is bigger than allowed or than expected."""
    meta = pf.metadata
    rows = meta.num_rows
    if rows < 0 or rows > max_rows:
        raise error(f"{where} claims {rows} rows, over the limit of {max_rows}; refusing it (a damaged or hostile file)")
    if expected_rows is not None and rows != expected_rows:
        raise error(f"{where} has {rows} rows, its manifest says {expected_rows}; refusing it (the counts were altered)")
    total = 0
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        sizes = [group.column(c).total_uncompressed_size for c in range(group.num_columns)]
        total += max(group.total_byte_size, sum(sizes))
        if total > max_bytes:
            raise error(f"{where} decodes to more than {max_bytes} bytes (row group {g}); refusing it (a compressed bomb or a damaged file)")


def decoded_bytes(table: Any) -> int:
    """Bytes ``table`` takes with every dictionary expanded (what ``to_pylist`` would materialise, about)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    total = 0
    for column in table.columns:
        for chunk in column.chunks if hasattr(column, "chunks") else [column]:
            if pa.types.is_dictionary(chunk.type) and len(chunk):
                lengths = pc.binary_length(chunk.dictionary)
                total += int(pc.sum(pc.take(lengths, chunk.indices)).as_py() or 0) + 8 * len(chunk)
            else:
                total += chunk.nbytes
    return total


def string_columns(pf: Any) -> list[str]:
    """Names of the string columns of a Parquet file (read dictionary-encoded)."""
    import pyarrow as pa

    return [f.name for f in pf.schema_arrow if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]


def bad_values(column: Any, pattern: str) -> list[str]:
    """Distinct values of a (dictionary or plain) string column that do not fully match ``pattern`` (up to three)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks else pa.array([], pa.string())
    values = column.dictionary if pa.types.is_dictionary(column.type) else pc.unique(column)
    if column.null_count:
        return ["None"]
    ok = pc.match_substring_regex(values, f"^(?:{pattern})$")
    wrong = pc.filter(values, pc.invert(ok))
    return [repr(v)[:120] for v in wrong.to_pylist()[:3]]


def path_problems(column: Any) -> list[str]:
    """Values of a string column that are not safe relative paths, each with its reason (up to three)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from kbrelease.trust.paths import path_problem

    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks else pa.array([], pa.string())
    values = column.dictionary if pa.types.is_dictionary(column.type) else pc.unique(column)
    if column.null_count:
        return ["a missing (null) path"]
    too_long = pc.greater(pc.utf8_length(values), MAX_PATH_CHARS)
    out = []
    for value, long in zip(values.to_pylist(), too_long.to_pylist(), strict=True):
        problem = f"is longer than {MAX_PATH_CHARS} characters" if long else path_problem(value)
        if problem:
            out.append(f"{repr(value)[:120]} {problem}")
            if len(out) == 3:
                break
    return out
