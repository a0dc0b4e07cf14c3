"""The service's structured log: one JSON object per line, and an in-memory tail.

Every record goes to stderr (for the container runtime / journald) and into a
ring buffer that ``GET /api/v1/logs`` returns. Secrets never reach either:

* request headers are not logged at all (``Authorization`` included);
* the final line goes through the one redaction (:func:`kbrelease.trust.redact.redact`):
  every secret of the table (``kbrelease.config.secrets``) and of this app's
  config, URL userinfo, bearer tokens and ``token=``-style pairs become ``***``,
  whatever put them there;
* uvicorn's and the root logger's handlers get a :class:`RedactingFilter` when
  the app starts (:func:`install_redaction`), so a traceback uvicorn prints is
  redacted too;
* a query string is logged shortened, so a 100 KB query cannot flood the log.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections import deque
from datetime import UTC, datetime
from typing import Any, TextIO
from urllib.parse import quote, quote_plus

from kbrelease.config import Config
from kbrelease.config.secrets import plain_values
from kbrelease.trust.redact import RedactingFilter, redact

_RESERVED = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
MAX_FIELD_CHARS = 300


def secret_values(cfg: Config) -> list[str]:
    """Every secret of the configuration (the secrets table, URL credentials), as the plain strings to scrub.

    The app's own config is scrubbed even when its secrets were set after loading
    (an embedding application, the tests), not only the ones registered at load.
    """
    plain = plain_values(cfg)
    # A secret can also arrive URL-encoded (in a logged query string) or JSON-escaped.
    forms = {form for value in plain for form in (value, quote(value, safe=""), quote_plus(value), json.dumps(value)[1:-1])}
    return sorted(forms)


def shorten(text: str, limit: int = MAX_FIELD_CHARS) -> str:
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} chars)"


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "event", ...extra fields}`` with secrets scrubbed."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        # Longest first, so a secret that contains another is scrubbed whole.
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def as_dict(self, record: logging.LogRecord) -> dict[str, Any]:
        data: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "event": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                data[key] = value
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return data

    def scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return redact(text)

    def format(self, record: logging.LogRecord) -> str:
        return self.scrub(json.dumps(self.as_dict(record), ensure_ascii=False, default=str))


class LogTail(logging.Handler):
    """Keeps the last ``capacity`` formatted records (already scrubbed) for ``/api/v1/logs``."""

    def __init__(self, formatter: JsonFormatter, capacity: int) -> None:
        super().__init__()
        self.setFormatter(formatter)
        self._lines: deque[str] = deque(maxlen=capacity)
        self._tail_lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:  # noqa: BLE001 - logging must never break a request
            self.handleError(record)
            return
        with self._tail_lock:
            self._lines.append(line)

    def tail(self, limit: int, min_level: int = logging.NOTSET, contains: str | None = None) -> list[dict[str, Any]]:
        with self._tail_lock:
            lines = list(self._lines)
        out: list[dict[str, Any]] = []
        for line in reversed(lines):
            item = json.loads(line)
            if logging.getLevelName(item.get("level", "INFO")) < min_level:
                continue
            if contains and contains not in line:
                continue
            out.append(item)
            if len(out) >= limit:
                break
        out.reverse()
        return out


# Loggers whose handlers print what kbrelease does not format itself: uvicorn's
# startup and error tracebacks, and whatever the root logger was given.
_FOREIGN_LOGGERS = ("", "uvicorn", "uvicorn.error", "uvicorn.access")


def install_redaction() -> None:
    """Put a :class:`RedactingFilter` on the handlers of uvicorn, of the root logger and Python's last-resort one (idempotent).

    Called when the app starts: uvicorn configures its logging before that.
    """
    handlers = [h for name in _FOREIGN_LOGGERS for h in logging.getLogger(name).handlers]
    if logging.lastResort is not None:
        handlers.append(logging.lastResort)
    for handler in handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())


def make_logger(cfg: Config, name: str = "kbrelease.service", stream: TextIO | None = None) -> tuple[logging.Logger, LogTail]:
    """A logger of its own per app (several apps in one process do not share handlers)."""
    formatter = JsonFormatter(secret_values(cfg))
    logger = logging.Logger(name, logging.INFO)  # not registered globally on purpose
    tail = LogTail(formatter, cfg.service.log_tail)
    logger.addHandler(tail)
    out = logging.StreamHandler(stream or sys.stderr)
    out.setFormatter(formatter)
    logger.addHandler(out)
    return logger, tail
