"""Search endpoints: text, image (upload, or text→image), and thumbnails of image hits.

Each request resolves its release once through the app's live follower and
hands that record to the library, so every step of the request queries the
same release's database, even if the live pointer moves meanwhile.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field
from starlette.datastructures import UploadFile

from kbrelease.api import row_filter
from kbrelease.errors import UnknownFile
from kbrelease.release.search import SearchMode, SearchResult
from kbrelease.service.auth import ReadAccess
from kbrelease.service.errors import ApiError, responses
from kbrelease.service.models import HitOut, SearchOut, json_response
from kbrelease.service.state import ServiceState

router = APIRouter(tags=["search"], dependencies=[ReadAccess])

NAME_PATTERN = r"^[A-Za-z0-9_]{1,64}$"
SOURCE_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
IMAGE_TYPES = ("image/", "application/octet-stream")

Q = Query(min_length=1, description="The text to search for (at most service.max_query_chars characters).")
K = Query(5, ge=1, description="Number of results (at most service.max_k).")
SOURCE = Query(None, pattern=SOURCE_PATTERN, description="Only this source (default: every source of the modality).")
RELEASE = Query(None, pattern=NAME_PATTERN, description="Pin a release (canary checks); default: the live one.")
WHERE = Query(
    None,
    max_length=2000,
    description='Only files whose metadata passes this filter, e.g. camera_id == "front" and speed > 3 (400 when it is not of the grammar).',
)
AFTER = Query(None, max_length=64, description="Only files with a timestamp at or after this ISO 8601 date/time (UTC if no zone).")
BEFORE = Query(None, max_length=64, description="Only files with a timestamp at or before this ISO 8601 date/time (UTC if no zone).")
MODE_HELP = (
    "dense (vectors), sparse (BM25 keywords) or hybrid (both, reciprocal rank fusion); default: hybrid on sources built with hybrid: true, dense on the others."
)
MODE = Query(None, description=MODE_HELP)


def service(request: Request) -> ServiceState:
    svc: ServiceState = request.app.state.service
    return svc


def check_limits(svc: ServiceState, q: str | None, k: int) -> None:
    limits = svc.cfg.service
    if q is not None and len(q) > limits.max_query_chars:
        raise ApiError(422, "invalid_request", f"q: the query is {len(q):,} characters, over service.max_query_chars ({limits.max_query_chars:,}); shorten it")
    if k > limits.max_k:
        raise ApiError(422, "invalid_request", f"k: {k} is over service.max_k ({limits.max_k}); ask for fewer results")


def _out(
    request: Request, svc: ServiceState, result: SearchResult, query: str | None, k: int, source: str | None, started: float, canary: bool = False
) -> Response:
    svc.observe(result, canary)
    request.state.release = result.release
    root = request.scope.get("root_path", "")
    hits = []
    for hit in result.hits:
        thumb = f"{root}/api/v1/thumbnails/{hit.release}/{hit.source}/{hit.file_id}" if result.modality == "image" else None
        hits.append(HitOut(**hit.asdict(), thumbnail_url=thumb))
    out = SearchOut(
        release=result.release,
        modality=result.modality,
        query=query,
        k=k,
        source=source,
        hits=hits,
        embed_ms=round(result.embed_seconds * 1000, 3),
        search_ms=round(result.search_seconds * 1000, 3),
        mode=result.mode,
        took_ms=round((time.perf_counter() - started) * 1000, 3),
    )
    response = json_response(out)
    response.headers["X-KB-Release"] = result.release  # the release that answered, for canaries and logs
    if canary:
        response.headers["X-KB-Canary"] = "1"
    return response


@router.get("/search", response_model=SearchOut, responses=responses(400, 401, 403, 404, 409, 422, 503))
def search_text(
    request: Request,
    q: str = Q,
    k: int = K,
    source: str | None = SOURCE,
    release: str | None = RELEASE,
    where: str | None = WHERE,
    after: str | None = AFTER,
    before: str | None = BEFORE,
    mode: SearchMode | None = MODE,
) -> Response:
    """Text search over the text sources of the live release (or the pinned one), optionally filtered by file metadata and time."""
    started = time.perf_counter()
    svc = service(request)
    check_limits(svc, q, k)
    row_filter(where, after, before)  # a bad filter is a 400 before the model or the store is asked
    svc.require_model("text")
    record, canary = svc.route(release)
    result = svc.kb.query(q, k, source, record, where=where, after=after, before=before, mode=mode)
    return _out(request, svc, result, q, k, source, started, canary)


class SearchIn(BaseModel):
    """A text search as a JSON body: for long queries, or clients that prefer POST."""

    model_config = {"extra": "forbid"}

    q: str = Field(min_length=1, description="The text to search for (at most service.max_query_chars characters).")
    k: int = Field(5, ge=1, description="Number of results (at most service.max_k).")
    source: str | None = Field(None, pattern=SOURCE_PATTERN, description="Only this source.")
    release: str | None = Field(None, pattern=NAME_PATTERN, description="Pin a release; default: the live one.")
    where: str | None = Field(None, max_length=2000, description="Metadata filter (see GET /search).")
    after: str | None = Field(None, max_length=64, description="Files at or after this ISO 8601 time.")
    before: str | None = Field(None, max_length=64, description="Files at or before this ISO 8601 time.")
    mode: SearchMode | None = Field(None, description=MODE_HELP)


@router.post("/search", response_model=SearchOut, responses=responses(400, 401, 403, 404, 409, 422, 503))
def search_text_post(request: Request, body: SearchIn) -> Response:
    """The same text search, with the parameters in a JSON body."""
    return search_text(request, body.q, body.k, body.source, body.release, body.where, body.after, body.before, body.mode)


_UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "file": {"type": "string", "format": "binary", "description": "The example image (JPEG, PNG, ...)."},
                        "q": {"type": "string", "minLength": 1, "description": "Instead of a file: a description (text→image, CLIP-like models only)."},
                    },
                }
            }
        },
    }
}


@router.post("/search/image", response_model=SearchOut, responses=responses(400, 401, 403, 404, 409, 413, 415, 422, 503), openapi_extra=_UPLOAD_BODY)
async def search_image(
    request: Request,
    k: int = K,
    source: str | None = SOURCE,
    release: str | None = RELEASE,
    where: str | None = WHERE,
    after: str | None = AFTER,
    before: str | None = BEFORE,
) -> Response:
    """Image search by an uploaded example image (multipart field `file`), or by a description (field `q`)."""
    started = time.perf_counter()
    svc = service(request)
    check_limits(svc, None, k)
    filters: dict[str, str | None] = {"where": where, "after": after, "before": before}
    row_filter(where, after, before)
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        raise ApiError(415, "unsupported_media_type", f"send the image as multipart/form-data (field 'file'), not {content_type or 'no content type'}")
    form = await request.form(max_files=1, max_fields=4)
    try:
        upload, text = form.get("file"), form.get("q")
        if isinstance(upload, str) or isinstance(text, UploadFile):
            raise ApiError(400, "bad_form", "field 'file' must be a file upload and field 'q' a text")
        if upload is not None and text is not None:
            raise ApiError(400, "bad_form", "send either an image (field 'file') or a description (field 'q'), not both")
        if upload is None and text is None:
            raise ApiError(400, "bad_form", "no image: send it as multipart/form-data field 'file' (or a description in field 'q')")
        if text is not None:
            check_limits(svc, text, k)
            svc.require_model("image")
            result, canary = await run_in_threadpool(_text_to_image, svc, text, k, source, release, filters)
            return _out(request, svc, result, text, k, source, started, canary)
        assert isinstance(upload, UploadFile)
        declared = (upload.content_type or "application/octet-stream").lower()
        if not declared.startswith(IMAGE_TYPES):
            raise ApiError(415, "unsupported_media_type", f"the uploaded file is declared as {declared}; upload an image (image/jpeg, image/png, ...)")
        limit = svc.cfg.service.max_upload_bytes
        data = await upload.read(limit + 1)
        if len(data) > limit:
            raise ApiError(413, "upload_too_large", f"the upload is over service.max_upload_bytes ({limit:,} bytes); send a smaller image")
        svc.require_model("image")
        result, canary = await run_in_threadpool(_image, svc, data, k, source, release, filters)
        return _out(request, svc, result, None, k, source, started, canary)
    finally:
        await form.close()


def _image(svc: ServiceState, data: bytes, k: int, source: str | None, release: str | None, filters: dict[str, str | None]) -> tuple[SearchResult, bool]:
    record, canary = svc.route(release)
    return svc.kb.query_image(data, k, source, record, svc.cfg.service.max_upload_pixels, "service.max_upload_pixels", **filters), canary


def _text_to_image(svc: ServiceState, text: str, k: int, source: str | None, release: str | None, filters: dict[str, str | None]) -> tuple[SearchResult, bool]:
    record, canary = svc.route(release)
    return svc.kb.query_text_to_image(text, k, source, record, **filters), canary


THUMB_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/jpeg": {"schema": {"type": "string", "format": "binary"}}}, "description": "A JPEG thumbnail."},
    304: {"description": "Not modified (If-None-Match matched the ETag)."},
    **responses(400, 401, 403, 404, 409, 410, 413, 422, 503),
}


@router.get("/thumbnails/{release}/{source}/{file_id}", response_class=Response, responses=THUMB_RESPONSES)
def thumbnail(
    request: Request,
    release: str = Path(pattern=NAME_PATTERN),
    source: str = Path(pattern=SOURCE_PATTERN),
    file_id: str = Path(pattern=r"^[0-9a-f]{8,64}$"),
    size: int | None = Query(None, ge=16, le=1024, description="Longest side in pixels (default: service.thumbnail_px)."),
) -> Response:
    """A small JPEG of one image of a release, while the workspace copy still matches the release."""
    from kbrelease.images.thumbnail import make_thumbnail

    svc = service(request)
    px = size or svc.cfg.service.thumbnail_px
    record = svc.follower.resolve(release)
    request.state.release = record.name
    counts = record.sources.get(source)
    if counts is not None and counts.modality != "image":
        raise UnknownFile(f"source {source!r} of release {record.name!r} holds text, not images; thumbnails exist for image sources only")
    found = svc.files.get(record, source, file_id)
    etag = f'"{found.record.checksum[:24]}-{px}"'
    private = "private" if svc.cfg.service.api_token else "public"
    headers = {"ETag": etag, "Cache-Control": f"{private}, max-age=86400, immutable", "X-Content-Type-Options": "nosniff"}
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    key = (found.record.checksum, px)
    data = svc.thumbnails.get(key)
    if data is None:
        data = make_thumbnail(found.path, px, svc.cfg.image.max_pixels)
        svc.thumbnails.put(key, data)
    return Response(content=data, media_type="image/jpeg", headers=headers)
