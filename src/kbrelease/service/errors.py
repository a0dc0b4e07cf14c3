"""One error shape for every non-2xx answer, and the one table mapping library errors to statuses.

Every error body is ``{"error": {"status", "code", "message", "request_id"}}``
(plus ``details`` for invalid parameters), so a client and the web page read
them the same way. The message is the library's own (it names the release,
source or file and ends with the fix); a request never sees a traceback.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from kbrelease import errors as e
from kbrelease.trust.redact import redact, redact_data


class ErrorDetail(BaseModel):
    status: int = Field(description="The HTTP status, repeated.")
    code: str = Field(description="Stable machine-readable code, e.g. unknown_release.")
    message: str = Field(description="What is wrong and how to fix it.")
    request_id: str = Field(default="", description="Also in the service log and the X-Request-ID header.")
    details: list[dict[str, Any]] | None = Field(default=None, description="Per-parameter problems of an invalid request.")


class ErrorBody(BaseModel):
    error: ErrorDetail


class ApiError(Exception):
    """An error raised by the HTTP layer itself (auth, uploads, content types)."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers


# Most specific first: the first class an error is an instance of wins.
STATUS: list[tuple[type[e.KbReleaseError], int, str]] = [
    (e.UnknownRelease, 404, "unknown_release"),
    (e.UnknownFile, 404, "unknown_file"),
    (e.NoLiveRelease, 503, "no_live_release"),
    (e.QueryError, 400, "bad_query"),
    (e.NotInIndex, 404, "not_in_index"),
    (e.DataIndexError, 400, "bad_index_query"),
    (e.CompatibilityError, 409, "incompatible"),
    (e.PackageError, 400, "bad_package"),
    (e.UnsafePath, 400, "unsafe_path"),
    (e.ImageTooLarge, 413, "image_too_large"),
    (e.InputFileError, 400, "bad_image"),
    (e.FileChanged, 410, "file_changed"),
    (e.VerificationError, 409, "not_verified"),
    (e.LockBusy, 409, "environment_locked"),
    (e.ReleaseError, 409, "release_state"),
    (e.StoreUnreachable, 503, "store_unreachable"),
    (e.EmbeddingUnavailable, 503, "embedder_unavailable"),
    (e.StoreError, 500, "store_error"),
    (e.EmbeddingError, 500, "embedding_error"),
    (e.ConfigError, 500, "configuration"),
    (e.KbReleaseError, 500, "internal"),
]

DESCRIPTIONS = {
    400: "Invalid input (empty query, unknown source, unreadable image).",
    401: "Missing bearer token.",
    403: "Wrong bearer token, or the endpoint is disabled.",
    404: "Unknown release, file or route.",
    409: "The release cannot be used this way (other embedding model, wrong state).",
    410: "The file changed after the release was built.",
    413: "Upload over the byte or pixel limit.",
    415: "Wrong content type.",
    422: "Invalid parameters (length, range, type).",
    503: "Not ready: nothing live yet, models warming up, or Milvus unreachable.",
}


def responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries for these statuses, all with the error body."""
    return {c: {"model": ErrorBody, "description": DESCRIPTIONS.get(c, "Error.")} for c in codes}


def status_of(exc: e.KbReleaseError) -> tuple[int, str]:
    for cls, status, code in STATUS:
        if isinstance(exc, cls):
            return status, code
    return 500, "internal"  # pragma: no cover - KbReleaseError is in the table


def error_response(
    request: Request,
    status: int,
    code: str,
    message: str,
    details: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    request_id = str(getattr(request.state, "request_id", ""))
    # Every error body passes the one redaction: a library message may name a URL with credentials.
    message, details = redact(message), redact_data(details) if details else details
    body = ErrorBody(error=ErrorDetail(status=status, code=code, message=message, request_id=request_id, details=details))
    request.state.error_code = code
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status, headers=headers)


def _validation_details(exc: RequestValidationError) -> tuple[str, list[dict[str, Any]]]:
    details = []
    for item in exc.errors():
        loc = [str(p) for p in item.get("loc", ())]
        where = ".".join(loc[1:] if len(loc) > 1 else loc)
        # The input is left out on purpose: it may be a 100 KB query or a secret.
        details.append({"loc": loc, "msg": str(item.get("msg", "")), "type": str(item.get("type", ""))})
    first = details[0] if details else {"loc": [], "msg": "invalid request"}
    where = ".".join(first["loc"][1:] if len(first["loc"]) > 1 else first["loc"])
    return f"{where}: {first['msg']}" if where else str(first["msg"]), details


def install(app: FastAPI, logger: logging.Logger) -> None:
    """Register the handlers that turn every error into the one JSON shape."""

    @app.exception_handler(ApiError)
    async def _api(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(request, exc.status, exc.code, exc.message, headers=exc.headers)

    @app.exception_handler(e.KbReleaseError)
    async def _library(request: Request, exc: e.KbReleaseError) -> JSONResponse:
        status, code = status_of(exc)
        if status >= 500:
            logger.error("request failed", exc_info=exc, extra={"request_id": getattr(request.state, "request_id", ""), "code": code})
        headers = {"Retry-After": "2"} if status == 503 else None
        return error_response(request, status, code, str(exc), headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, details = _validation_details(exc)
        return error_response(request, 422, "invalid_request", message, details)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        message = str(exc.detail)
        if exc.status_code == 404:
            message = f"no such endpoint: {request.method} {request.url.path}; see /api/v1/openapi.json"
        return error_response(request, exc.status_code, code, message, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.error("unexpected error", exc_info=exc, extra={"request_id": getattr(request.state, "request_id", "")})
        return error_response(request, 500, "internal", "internal error; the service log has the details under this request_id")
