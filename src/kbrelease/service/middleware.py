"""One ASGI middleware for every request: request id, upload limit, metrics, access log.

Plain ASGI rather than ``BaseHTTPMiddleware``: it adds no task or stream per
request, which matters when the whole service overhead budget is ~2 ms.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kbrelease.service.errors import ApiError
from kbrelease.service.logs import shorten
from kbrelease.service.state import ServiceState

# Multipart framing around the file (boundaries, part headers, small fields).
MULTIPART_SLACK = 64 * 1024
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_QUIET_PREFIXES = ("/healthz", "/readyz", "/metrics", "/static/", "/favicon")


def route_template(scope: Scope) -> str:
    """``/api/v1/thumbnails/{release}/{source}/{file_id}``: a metrics label of bounded cardinality."""
    path: str = scope["path"]
    route = scope.get("route")
    template = getattr(route, "path", None)
    if template is None:
        return "static" if path.startswith("/static/") else "unmatched"
    regex = getattr(route, "path_regex", None)
    if regex is not None and not regex.match(path):
        # The route belongs to a router included under a prefix; find that prefix.
        for i in range(1, len(path)):
            if path[i] == "/" and regex.match(path[i:]):
                return path[:i] + str(template)
    return str(template)


class RequestMiddleware:
    def __init__(self, app: ASGIApp, state: ServiceState) -> None:
        self.app = app
        self.svc = state
        self.max_body = state.cfg.service.max_upload_bytes + MULTIPART_SLACK

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        given = headers.get("x-request-id", "")
        request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex[:16]
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = request_id
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message).append("X-Request-ID", request_id)
            await send(message)

        try:
            length = headers.get("content-length", "")
            if length.isdigit() and int(length) > self.max_body:
                await self._too_large(send_with_id, request_id)
                return
            await self.app(scope, self._limited(receive), send_with_id)
        finally:
            self._record(scope, state, status, time.perf_counter() - started)

    def _limited(self, receive: Receive) -> Receive:
        """Count body bytes as they arrive: a chunked upload has no Content-Length to check."""
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    raise ApiError(413, "upload_too_large", self._limit_message())
            return message

        return limited

    def _limit_message(self) -> str:
        return f"the upload is over service.max_upload_bytes ({self.svc.cfg.service.max_upload_bytes:,} bytes); send a smaller image"

    async def _too_large(self, send: Send, request_id: str) -> None:
        body = json.dumps({"error": {"status": 413, "code": "upload_too_large", "message": self._limit_message(), "request_id": request_id}}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), (b"connection", b"close")],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def _record(self, scope: Scope, state: dict[str, Any], status: int, seconds: float) -> None:
        template = route_template(scope)
        method = scope["method"]
        self.svc.metrics.requests.labels(method, template, str(status)).inc()
        self.svc.metrics.latency.labels(method, template).observe(seconds)
        path: str = scope["path"]
        if path.startswith(_QUIET_PREFIXES) and status != 500:
            return  # probes and scrapes every few seconds would push everything else out of the tail
        query = scope.get("query_string", b"").decode("latin-1")
        extra = {
            "method": method,
            "path": shorten(path, 200),
            "query": shorten(query, 200),
            "status": status,
            "ms": round(seconds * 1000, 3),
            "release": state.get("release"),
            "request_id": state.get("request_id"),
        }
        if state.get("error_code"):
            extra["error"] = state["error_code"]
        self.svc.log.log(40 if status >= 500 else 30 if status >= 400 else 20, "request", extra=extra)
