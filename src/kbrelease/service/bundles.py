"""The data-index API (seed 003): list, download and stream the files of a bundle or release.

``{name}`` is a resolved bundle (``?version=`` or its latest), ``current``
(the last sync), ``live`` (the live release's index) or a release name.

- ``GET  /api/v1/bundles`` — resolved bundles
- ``GET  /api/v1/bundles/{name}`` — the bundle manifest (meta + data_manifest)
- ``GET  /api/v1/bundles/{name}/files`` — filtered, sorted, cursor-paginated records
- ``POST /api/v1/bundles/{name}/download`` — ``{"file_ids": [...]}`` → one streamed tar
- ``GET  /api/v1/bundles/{name}/stream`` — every matching record, in batches:
  NDJSON (one batch per line, then ``{"done": true, ...}``) or, with
  ``Accept: application/vnd.apache.arrow.stream``, an Arrow IPC stream

Thin: the work is in :mod:`kbrelease.index.query` and :mod:`kbrelease.index.archive`.
Every route needs ``Authorization: Bearer <token>`` when ``service.api_token``
is set. The app provides ``app.state.kb`` (:class:`kbrelease.api.KbRelease`)
and ``app.state.cfg``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

# Loaded with the service rather than on the first request, which took ~1.5 s: importing
# Arrow, and pandas, which pyarrow imports the first time it converts a Python value.
import orjson  # noqa: F401
import pyarrow.compute
import pyarrow.parquet
from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, Field

from kbrelease.errors import KbReleaseError
from kbrelease.index.archive import MAX_FILES, plan_download
from kbrelease.index.query import MAX_BATCH, MAX_PAGE, FileFilter, dumps, json_array, record_schema
from kbrelease.service import errors
from kbrelease.service.auth import ReadAccess
from kbrelease.workspace import Workspace

if TYPE_CHECKING:
    from kbrelease.api import KbRelease
    from kbrelease.index.query import IndexQuery

pyarrow.array([""])  # the pandas import (see above)
ARROW_STREAM = "application/vnd.apache.arrow.stream"
NDJSON = "application/x-ndjson"


router = APIRouter(prefix="/api/v1/bundles", tags=["data index"], dependencies=[ReadAccess])


@contextmanager
def _answer() -> Iterator[None]:
    """kbrelease errors → the service's one JSON error shape, before a stream starts (the error's message names the fix)."""
    try:
        yield
    except KbReleaseError as exc:
        status, code = errors.status_of(exc)
        raise errors.ApiError(503 if exc.transient else status, code, str(exc)) from None


def _kb(request: Request) -> KbRelease:
    kb: KbRelease = request.app.state.kb
    return kb


def _query(request: Request, name: str, version: str | None) -> IndexQuery:
    return _kb(request).data_index(name, version)


Version = Annotated[str | None, Query(description="Bundle version (default: the latest resolved).")]
Sources = Annotated[list[str], Query(description="Only these sources (repeatable).")]
Channels = Annotated[list[str], Query(description="Same as source (the seed's name).")]
Start = Annotated[datetime | None, Query(description="Files with a timestamp at or after this (ISO 8601; UTC if no zone).")]
End = Annotated[datetime | None, Query(description="Files with a timestamp at or before this (ISO 8601; UTC if no zone).")]
Prefix = Annotated[str, Query(description="Only relative paths starting with this.")]
Cursor = Annotated[str | None, Query(description="next_cursor of the previous answer.")]
Where = Annotated[
    str,
    Query(max_length=2000, description='Only files whose metadata passes this filter, e.g. camera_id == "front" (400 when not of the grammar).'),
]


def _filter(source: list[str], channel: list[str], start_time: datetime | None, end_time: datetime | None, prefix: str, where: str = "") -> FileFilter:
    return FileFilter(tuple(source) + tuple(channel), start_time, end_time, prefix, where)


@router.get("", summary="Resolved bundles")
def list_bundles(request: Request) -> dict[str, Any]:
    return {"bundles": _kb(request).bundles()}


@router.get("/{name}", summary="A bundle's manifest: meta and data_manifest")
def get_bundle(request: Request, name: str, version: Version = None) -> dict[str, Any]:
    from kbrelease.index.data_index import access_config

    with _answer():
        query = _query(request, name, version)
    service = request.app.state.cfg.service
    base_url = service.base_url or str(request.base_url)  # the configured public URL, else the one this request came to
    return query.bundle.to_dict() | {"name": name, "access_config": access_config(name, base_url, service.api_token is not None)}


@router.get("/{name}/files", summary="Files, filtered and sorted by source then path, one page at a time")
def list_files(
    request: Request,
    name: str,
    version: Version = None,
    source: Sources = [],  # noqa: B006 - FastAPI copies query defaults
    channel: Channels = [],  # noqa: B006
    start_time: Start = None,
    end_time: End = None,
    prefix: Prefix = "",
    limit: Annotated[int, Query(ge=1, description=f"Records per page, up to {MAX_PAGE}.")] = 100,
    cursor: Cursor = None,
    where: Where = "",
) -> Response:
    with _answer():
        query = _query(request, name, version)
        page = query.page(_filter(source, channel, start_time, end_time, prefix, where), limit, cursor)
    tail = dumps({"count": page.records.num_rows, "next_cursor": page.next_cursor})
    return Response(b'{"files":' + page.json() + b"," + tail[1:], media_type="application/json")


class DownloadRequest(BaseModel):
    file_ids: list[str] = Field(description=f"file_id values from /files (1 to {MAX_FILES}).")


@router.post("/{name}/download", summary="The named files as one tar stream (PAX headers carry file_id and sha256)")
def download(request: Request, name: str, body: DownloadRequest, version: Version = None) -> StreamingResponse:
    with _answer():
        query = _query(request, name, version)
        plan = plan_download(Workspace.of(_kb(request).cfg), query, body.file_ids)
    headers = {"Content-Length": str(plan.content_length), "Content-Disposition": f'attachment; filename="{name}.tar"'}
    return StreamingResponse(plan.stream(), media_type="application/x-tar", headers=headers)


@router.get("/{name}/stream", summary="Every matching record in batches: NDJSON, or Arrow IPC with Accept: application/vnd.apache.arrow.stream")
def stream(
    request: Request,
    name: str,
    version: Version = None,
    source: Sources = [],  # noqa: B006
    channel: Channels = [],  # noqa: B006
    start_time: Start = None,
    end_time: End = None,
    prefix: Prefix = "",
    batch_size: Annotated[int, Query(description=f"Records per batch, 1 to {MAX_BATCH}.")] = 1000,
    cursor: Annotated[str | None, Query(description="Resume after a batch's cursor.")] = None,
    format: Annotated[str | None, Query(description="'ndjson' or 'arrow' (overrides the Accept header).")] = None,
    accept: Annotated[str, Header()] = "",
    where: Where = "",
) -> StreamingResponse:
    arrow = format == "arrow" if format else ARROW_STREAM in accept
    if format not in (None, "ndjson", "arrow"):
        raise errors.ApiError(400, "bad_format", f"format {format!r} is not known; use 'ndjson' or 'arrow'")
    with _answer():
        query = _query(request, name, version)
        batches = query.batches(_filter(source, channel, start_time, end_time, prefix, where), batch_size, cursor)
    if arrow:
        return StreamingResponse(_arrow_stream(batches), media_type=ARROW_STREAM)
    return StreamingResponse(_ndjson_stream(batches), media_type=NDJSON)


def _ndjson_stream(batches: Iterator[tuple[Any, str]]) -> Iterator[bytes]:
    count = records = 0
    for batch, cursor in batches:
        head = dumps({"batch": count, "count": batch.num_rows, "cursor": cursor})
        yield head[:-1] + b',"records":' + json_array(batch) + b"}\n"
        count += 1
        records += batch.num_rows
    # The end marker tells a reader the stream is complete, not cut off.
    yield dumps({"done": True, "batches": count, "records": records}) + b"\n"


class _Chunks:
    """A write-only file for the Arrow writer; what it wrote is taken after each batch."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.closed = False

    def write(self, data: Any) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def take(self) -> bytes:
        out = b"".join(self.parts)
        self.parts.clear()
        return out


def _arrow_stream(batches: Iterator[tuple[Any, str]]) -> Iterator[bytes]:
    import pyarrow as pa

    sink = _Chunks()
    writer = pa.ipc.new_stream(sink, record_schema())
    yield sink.take()
    for batch, cursor in batches:
        # The cursor rides along so a reader can resume after this batch.
        writer.write_batch(batch, custom_metadata={"cursor": cursor})
        yield sink.take()
    writer.close()
    yield sink.take()
