"""A text embedder for any OpenAI-compatible ``POST /embeddings`` endpoint.

URL rule (the same as the OpenAI client's): the request goes to
``{base_url}/embeddings``, with trailing slashes of ``base_url`` dropped. So
``base_url`` is usually the ``/v1`` root, e.g. ``http://127.0.0.1:8000/v1`` ->
``http://127.0.0.1:8000/v1/embeddings``. A base URL without ``/v1`` is used as
given (``http://host:8000`` -> ``http://host:8000/embeddings``), for servers that
serve the route at the root; nothing is guessed or added.

Batches of ``batch_size`` texts are sent by ``concurrency`` worker threads over
one pooled ``httpx.Client``; results keep input order. 429, 5xx, timeouts and
connection errors are retried with exponential backoff and jitter, honouring
``Retry-After``. The API key never appears in exceptions, logs or ``repr``.
"""

from __future__ import annotations

import base64
import binascii
import logging
import math
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import httpx
import numpy as np

from kbrelease.config.secrets import url_credentials
from kbrelease.embedding.base import EmbedderIdentity, Vectors, l2_normalize
from kbrelease.errors import ConfigError, EmbeddingError, EmbeddingUnavailable
from kbrelease.retry import MAX_WAIT, backoff, parse_retry_after
from kbrelease.trust.redact import redact, redact_url, register_secret

if TYPE_CHECKING:
    from types import TracebackType

    from tokenizers import Tokenizer

__all__ = ["OpenAITextEmbedder", "embeddings_url"]

logger = logging.getLogger(__name__)

_MAX_BACKOFF = MAX_WAIT
"""Longest single wait between attempts, seconds (also caps Retry-After)."""
_MAX_MESSAGE = 500
"""Longest server message quoted in an error."""


def embeddings_url(base_url: str) -> str:
    """``{base_url}/embeddings``; see the module docstring for the rule."""
    return base_url.rstrip("/") + "/embeddings"


class _Retryable(Exception):
    """One attempt failed in a way worth retrying."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class OpenAITextEmbedder:
    """:class:`~kbrelease.embedding.base.TextEmbedder` over HTTP (OpenAI API shape).

    Use as a context manager, or call :meth:`close`, to release the connection
    pool and worker threads.
    """

    identity: EmbedderIdentity
    max_tokens: int
    hf_tokenizer: Tokenizer | None
    embedded_count: int
    """Texts embedded so far."""
    calls: int
    """Non-empty ``embed_texts`` calls that succeeded."""
    requests: int
    """Successful HTTP requests (batches) so far."""

    def __init__(
        self,
        base_url: str,
        model: str,
        dim: int,
        api_key: str | None = None,
        batch_size: int = 64,
        concurrency: int = 4,
        max_retries: int = 5,
        timeout: float = 60.0,
        max_tokens: int = 512,
        tokenizer_path: str | None = None,
        backoff_base: float = 0.5,
        send_dimensions: bool = False,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError(
                f"text.base_url (TEXT_EMBEDDING_BASE_URL) must start with http:// or https://, got {redact_url(base_url)!r}; use e.g. http://127.0.0.1:8000/v1"
            )
        if not model:
            raise ConfigError("text.model must name the embedding model served at text.base_url")
        for name, value in (
            ("text.dim (TEXT_EMBEDDING_DIM)", dim),
            ("text.batch_size", batch_size),
            ("text.concurrency", concurrency),
            ("text.max_tokens", max_tokens),
        ):
            if value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value}")
        if max_retries < 0:
            raise ConfigError(f"max_retries must be 0 or more, got {max_retries}")
        if timeout <= 0 or backoff_base < 0:
            raise ConfigError("timeout must be > 0 and backoff_base >= 0")

        self.base_url = base_url.rstrip("/")
        self.url = embeddings_url(base_url)
        # What messages and logs show: without userinfo or secret query values (the URL may carry credentials).
        self.shown_url = redact_url(self.url)
        register_secret(api_key)
        for part in url_credentials(self.url):
            register_secret(part)
        self.model = model
        self.dim = dim
        self.max_tokens = max_tokens
        self.batch_size = batch_size
        self.concurrency = concurrency
        self.max_retries = max_retries
        self.timeout = timeout
        self.backoff_base = backoff_base
        self.send_dimensions = send_dimensions
        self.identity = EmbedderIdentity(kind="text", model=model, dim=dim, revision="", preprocessing="")
        self.hf_tokenizer = None
        if tokenizer_path is not None:
            from kbrelease.embedding.local_text import load_tokenizer

            self.hf_tokenizer = load_tokenizer(Path(tokenizer_path).expanduser(), "text.tokenizer_path")

        self.__api_key = api_key or None  # name-mangled; never printed
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.__api_key is not None:
            headers["Authorization"] = f"Bearer {self.__api_key}"
        self._client = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        )
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._closed = False
        self.embedded_count = 0
        self.calls = 0
        self.requests = 0

    # -- lifecycle -----------------------------------------------------------

    def __repr__(self) -> str:
        key = "'***'" if self.__api_key else "None"
        return (
            f"OpenAITextEmbedder(base_url={redact_url(self.base_url)!r}, model={self.model!r}, dim={self.dim}, "
            f"api_key={key}, batch_size={self.batch_size}, concurrency={self.concurrency})"
        )

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
        self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- TextEmbedder --------------------------------------------------------

    def count_tokens(self, text: str) -> int:
        """Exact with ``tokenizer_path``; otherwise ``ceil(utf-8 bytes / 3)``.

        The estimate is conservative (over-counts) for typical BPE/WordPiece
        models on English, so chunks sized with it are not truncated.
        """
        if self.hf_tokenizer is not None:
            return len(self.hf_tokenizer.encode(text, add_special_tokens=False))
        return math.ceil(len(text.encode("utf-8")) / 3)

    def embed_texts(self, texts: Sequence[str]) -> Vectors:
        """``(len(texts), dim)`` float32, L2-normalized, in input order."""
        items = list(texts)
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self._closed:
            raise EmbeddingError(f"the embedder for {self.shown_url} is closed; create a new one")
        batches = [items[i : i + self.batch_size] for i in range(0, len(items), self.batch_size)]
        if len(batches) == 1 or self.concurrency == 1:
            parts = [self._embed_batch(batch) for batch in batches]
        else:
            executor = self._get_executor()
            futures: list[Future[Vectors]] = [executor.submit(self._embed_batch, b) for b in batches]
            try:
                parts = [f.result() for f in futures]
            except BaseException:
                for f in futures:
                    f.cancel()
                raise
        vectors = np.concatenate(parts, axis=0)
        with self._lock:
            self.calls += 1
            self.embedded_count += len(items)
        return vectors

    # -- internals -----------------------------------------------------------

    def _get_executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="kbrelease-embed")
            return self._executor

    def _scrub(self, text: str) -> str:
        """Remove the API key, the URL's credentials and anything secret-looking from text that came from elsewhere (server messages, httpx errors)."""
        if self.__api_key:
            text = text.replace(self.__api_key, "***")
        return redact(text)

    def _payload(self, batch: list[str]) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "model": self.model,
            "input": batch,
            "encoding_format": "float",
        }
        if self.send_dimensions:
            payload["dimensions"] = self.dim
        return payload

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        return backoff(attempt, self.backoff_base, _MAX_BACKOFF, retry_after)

    def _embed_batch(self, batch: list[str]) -> Vectors:
        payload = self._payload(batch)
        attempts = self.max_retries + 1
        last = ""
        cause: BaseException | None = None
        for attempt in range(attempts):
            try:
                vectors = self._attempt(payload, len(batch))
            except _Retryable as exc:
                last = exc.reason
                cause = exc.__cause__
                if attempt + 1 >= attempts:
                    break
                wait = self._backoff(attempt, exc.retry_after)
                logger.warning(
                    "embedding request to %s failed (%s); retry %d/%d in %.2fs",
                    self.shown_url,
                    last,
                    attempt + 1,
                    self.max_retries,
                    wait,
                )
                if wait > 0:
                    time.sleep(wait)
                continue
            with self._lock:
                self.requests += 1
            return vectors
        raise EmbeddingUnavailable(
            f"embedding endpoint {self.shown_url} unavailable after {attempts} attempt(s): {last}; "
            "check that the server is running and that text.base_url (TEXT_EMBEDDING_BASE_URL) "
            "points to it, then run again"
        ) from cause

    def _attempt(self, payload: dict[str, Any], n: int) -> Vectors:
        try:
            response = self._client.post(self.url, json=payload)
        except httpx.TimeoutException as exc:
            raise _Retryable(f"timed out after {self.timeout:g}s ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            raise _Retryable(f"{type(exc).__name__}: {self._scrub(str(exc))}") from exc

        status = response.status_code
        if status == 429 or status >= 500:
            reason = f"HTTP {status}: {self._server_message(response)}"
            raise _Retryable(reason, parse_retry_after(response.headers.get("Retry-After"), _MAX_BACKOFF))
        if status >= 400:
            hint = ""
            if status in (401, 403):
                hint = "; check TEXT_EMBEDDING_API_KEY"
            elif status == 404:
                hint = f"; {self.shown_url} was not found: base_url must be the API root the server serves /embeddings under (usually ending in /v1)"
            message = self._server_message(response)
            raise EmbeddingError(f"embedding request to {self.shown_url} (model {self.model}) was refused with HTTP {status}: {message}{hint}")
        return self._parse(response, n)

    def _server_message(self, response: httpx.Response) -> str:
        message: Any = None
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict):
            err = body.get("error", body.get("detail", body.get("message")))
            message = (err.get("message") or err) if isinstance(err, dict) else err
        if not message:
            message = response.text or response.reason_phrase or "(no message)"
        text = self._scrub(str(message)).strip()
        if len(text) > _MAX_MESSAGE:
            text = text[:_MAX_MESSAGE] + "..."
        return text

    def _parse(self, response: httpx.Response, n: int) -> Vectors:
        where = f"embedding endpoint {self.shown_url} (model {self.model})"
        try:
            body = response.json()
        except ValueError as exc:
            raise EmbeddingError(f"{where} returned a response that is not JSON") from exc
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list):
            raise EmbeddingError(f"{where} returned JSON without a 'data' list; is it an OpenAI-compatible server?")
        if len(data) != n:
            raise EmbeddingError(f"{where} returned {len(data)} embeddings for {n} inputs")
        try:
            if all(isinstance(item, dict) and "index" in item for item in data):
                ordered = sorted(data, key=lambda item: int(item["index"]))
                indexes = [int(item["index"]) for item in ordered]
                if indexes != list(range(n)):
                    raise EmbeddingError(f"{where} returned indexes {indexes[:8]} instead of 0..{n - 1}")
            else:
                ordered = data
            rows = [self._vector(item["embedding"]) for item in ordered]
        except EmbeddingError:
            raise
        except (AttributeError, KeyError, TypeError, ValueError, binascii.Error) as exc:
            raise EmbeddingError(f"{where} returned malformed embeddings ({type(exc).__name__}: {self._scrub(str(exc))})") from exc
        for row in rows:
            if row.shape != (self.dim,):
                raise EmbeddingError(
                    f"{where} returned {row.shape[0]}-d vectors but TEXT_EMBEDDING_DIM "
                    f"is {self.dim}; "
                    f"set TEXT_EMBEDDING_DIM={row.shape[0]} or serve a {self.dim}-d model"
                )
        vectors = np.stack(rows)
        if not np.isfinite(vectors).all():
            raise EmbeddingError(f"{where} returned vectors containing NaN or infinity")
        return l2_normalize(vectors)

    @staticmethod
    def _vector(value: Any) -> np.ndarray[Any, np.dtype[np.float32]]:
        if isinstance(value, str):  # a server that answers base64 regardless
            return np.frombuffer(base64.b64decode(value), dtype=np.float32)
        arr = np.asarray(value, dtype=np.float32)
        if arr.ndim != 1:
            raise ValueError(f"embedding has shape {arr.shape}, expected a flat list")
        return arr
