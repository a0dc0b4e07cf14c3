"""A real OpenAI-compatible embedding server for tests, with fault injection.

``POST /v1/embeddings`` is served by uvicorn + FastAPI on 127.0.0.1 (a free
port) in a background thread, backed by any ``TextEmbedder``::

    with EmbedServer(LocalTextEmbedder(), token="sk-test") as server:
        server.fail_next(2, 429)      # two 429s (Retry-After: 0), then normal
        embedder = OpenAITextEmbedder(server.base_url, "all-MiniLM-L6-v2", 384, api_key="sk-test")

Knobs (all reset by :meth:`reset`): ``fail_next(n, status)``, ``delay`` (seconds
slept per request), ``wrong_dim`` (truncate vectors to this many values),
``token`` (required bearer token; a wrong one gets an OpenAI-style 401 that
echoes the key it received, like some servers do), ``echo_request`` (injected
failures quote the request's URL, query string included, and its Authorization
header, as careless servers and proxies do). ``requests`` counts every
request received; ``batch_sizes`` lists the inputs per successful request and
``max_in_flight`` the highest number of requests handled at once.
"""

from __future__ import annotations

import base64
import socket
import threading
import time
from types import TracebackType
from typing import Any, Self

import numpy as np
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from kbrelease.embedding.base import TextEmbedder

__all__ = ["EmbedServer"]


def _error(status: int, message: str, kind: str, headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"error": {"message": message, "type": kind, "param": None, "code": None}}
    return JSONResponse(body, status_code=status, headers=headers)


class EmbedServer:
    """Serve ``embedder`` at ``{base_url}/embeddings`` until :meth:`stop`."""

    def __init__(self, embedder: TextEmbedder, token: str | None = None) -> None:
        self.embedder = embedder
        self.token = token
        self._lock = threading.Lock()
        self.requests = 0
        self.reset()
        self._app = self._build_app()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))  # the OS picks a free port; we keep the socket
        self.port: int = self._sock.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        config = uvicorn.Config(self._app, log_level="warning", access_log=False, lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the test embedding server did not start")
            time.sleep(0.01)

    # -- knobs ---------------------------------------------------------------

    def reset(self) -> None:
        """Clear every fault and counter (the token stays)."""
        with self._lock:
            self._fail: list[int] = []
            self.delay = 0.0
            self.wrong_dim: int | None = None
            self.echo_request = False
            self.requests = 0
            self.batch_sizes: list[int] = []
            self.max_in_flight = 0
            self._in_flight = 0

    def fail_next(self, n: int, status: int = 500) -> None:
        """Answer the next ``n`` requests with ``status`` (429 adds ``Retry-After: 0``)."""
        with self._lock:
            self._fail.extend([status] * n)

    # -- server --------------------------------------------------------------

    def _build_app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/v1/embeddings")
        def embeddings(request: Request, body: dict[str, Any]) -> JSONResponse:
            # Sync handler: FastAPI runs it in its thread pool, so concurrent
            # client requests really overlap.
            with self._lock:
                self.requests += 1
                self._in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self._in_flight)
                status = self._fail.pop(0) if self._fail else None
                echo = self.echo_request
                delay = self.delay
                wrong_dim = self.wrong_dim
            try:
                if delay:
                    time.sleep(delay)
                return self._answer(request, body, status, wrong_dim, echo)
            finally:
                with self._lock:
                    self._in_flight -= 1

        return app

    def _answer(self, request: Request, body: dict[str, Any], status: int | None, wrong_dim: int | None, echo: bool = False) -> JSONResponse:
        if status is not None and echo:
            quoted = f"Injected server failure for {request.url} (Authorization: {request.headers.get('authorization', '')})."
            return _error(status, quoted, "server_error")
        if self.token is not None:
            auth = request.headers.get("authorization", "")
            if auth != f"Bearer {self.token}":
                given = auth.removeprefix("Bearer ")
                return _error(401, f"Incorrect API key provided: {given}.", "invalid_request_error")
        if status == 429:
            return _error(429, "Rate limit reached.", "rate_limit_error", {"Retry-After": "0"})
        if status is not None:
            return _error(status, "Injected server failure.", "server_error")
        inputs = body.get("input")
        if isinstance(inputs, str):
            inputs = [inputs]
        if not isinstance(inputs, list) or not all(isinstance(t, str) for t in inputs):
            return _error(400, "'input' must be a string or a list of strings.", "invalid_request_error")
        vectors = self.embedder.embed_texts(inputs)
        if wrong_dim is not None:
            vectors = vectors[:, :wrong_dim]
        with self._lock:
            self.batch_sizes.append(len(inputs))
        as_base64 = body.get("encoding_format") == "base64"
        data = [
            {
                "object": "embedding",
                "index": i,
                "embedding": (base64.b64encode(np.ascontiguousarray(row, dtype=np.float32).tobytes()).decode() if as_base64 else row.tolist()),
            }
            for i, row in enumerate(vectors)
        ]
        # Answer out of order: clients must sort by "index".
        data.reverse()
        return JSONResponse(
            {
                "object": "list",
                "data": data,
                "model": body.get("model", ""),
                "usage": {"prompt_tokens": 0, "total_tokens": 0},
            }
        )

    # -- lifecycle -----------------------------------------------------------

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self._sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
