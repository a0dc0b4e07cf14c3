"""The one row schema of a release collection, shared by the store, the build and release packages.

Each field is named once here with its Milvus type and its Arrow type; the
store creates collections from it, packages write and check Parquet parts
against it, and the build's rows carry exactly these keys (tested).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

TEXT_MAX = 65535
"""Longest chunk text a row holds, in bytes (Milvus VARCHAR limit)."""
PATH_MAX = 2048
"""Longest relative path or heading path a row holds, in bytes."""
FILE_ID_MAX = 64

Kind = Literal["id", "vector", "string", "int", "json"]


@dataclass(frozen=True)
class RowField:
    name: str
    kind: Kind
    max_length: int | None = None
    description: str = ""


ROW_SCHEMA: tuple[RowField, ...] = (
    RowField("id", "id", 128, "<file_id>:<chunk_index>"),
    RowField("vector", "vector", None, "L2-normalized embedding (COSINE)"),
    RowField("file_id", "string", FILE_ID_MAX, "the file's id in the data index"),
    RowField("file", "string", PATH_MAX, "relative path of the file in its source"),
    RowField("chunk_index", "int", None, "position of the chunk in its file (0 for an image)"),
    RowField("n_chunks", "int", None, "chunks of the file (a file is complete when it has all of them)"),
    RowField("start", "int", None, "character offset of the chunk in the decoded text"),
    RowField("heading", "string", PATH_MAX, "heading path (Guide > Install > Linux)"),
    RowField("text", "string", TEXT_MAX, "the chunk's text ('' for an image)"),
    RowField("checksum", "string", 80, "sha256 of the file"),
    RowField("metadata", "json", None, "source, encoding, the file's time (epoch s) and its user metadata under 'user' (filters)"),
)
ROW_FIELDS: tuple[str, ...] = tuple(f.name for f in ROW_SCHEMA)

SPARSE_FIELD = "sparse"
"""The optional BM25 field of a hybrid source's collection: Milvus computes it from ``text`` (a BM25 function), so it is
never a row field: builds and packages write the same rows, and an import recreates it from the text."""
BM25_FUNCTION = "text_bm25"
SPARSE_MIN_VERSION = (2, 5)
"""Milvus servers before 2.5 have no BM25 function (2.3.5 even accepts the schema and drops the function)."""


def milvus_schema(dim: int, description: str = "", sparse: bool = False) -> Any:
    """The pymilvus ``CollectionSchema`` of a release collection with ``dim``-d vectors.

    With ``sparse``, ``text`` is analyzed and a BM25 function fills :data:`SPARSE_FIELD` from it (hybrid search).
    """
    from pymilvus import DataType, Function, FunctionType, MilvusClient

    types = {"id": DataType.VARCHAR, "vector": DataType.FLOAT_VECTOR, "string": DataType.VARCHAR, "int": DataType.INT64, "json": DataType.JSON}
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False, description=description)
    for f in ROW_SCHEMA:
        kwargs: dict[str, Any] = {}
        if f.kind == "id":
            kwargs["is_primary"] = True
        if f.kind == "vector":
            kwargs["dim"] = dim
        if f.max_length is not None:
            kwargs["max_length"] = f.max_length
        if sparse and f.name == "text":
            kwargs["enable_analyzer"] = True
        schema.add_field(f.name, types[f.kind], **kwargs)
    if sparse:
        schema.add_field(SPARSE_FIELD, DataType.SPARSE_FLOAT_VECTOR)
        schema.add_function(Function(name=BM25_FUNCTION, function_type=FunctionType.BM25, input_field_names=["text"], output_field_names=[SPARSE_FIELD]))
    return schema


def arrow_table(rows: list[dict[str, Any]], dim: int) -> Any:
    """Rows read from a collection as an Arrow table in the schema's column order (vectors as fixed-size float32 lists)."""
    import numpy as np
    import pyarrow as pa

    columns: dict[str, Any] = {}
    for f in ROW_SCHEMA:
        values = [r.get(f.name) for r in rows]
        if f.kind == "vector":
            flat = np.asarray(values, dtype=np.float32).reshape(-1)
            columns[f.name] = pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()), dim)
        elif f.kind == "int":
            columns[f.name] = pa.array([int(v or 0) for v in values], pa.int64())
        elif f.kind == "json":
            columns[f.name] = pa.array([json.dumps(v or {}, sort_keys=True, ensure_ascii=False) for v in values], pa.string())
        else:
            columns[f.name] = pa.array(values, pa.string())
    return pa.table(columns)
