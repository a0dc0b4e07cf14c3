"""The one retry policy: how long to wait before the next attempt, and what a ``Retry-After`` header means.

Every client kbrelease has (the embedding endpoint, the data-index client, alert
webhooks, the store's seal) retries transient failures with exponential backoff
and "equal jitter" (half the delay fixed, half random, so replicas do not retry
in step), capped, and honours a server's ``Retry-After`` (delta-seconds or an
HTTP date) within the same cap. The loops stay with their callers, because
what counts as transient and what resumes differs (a stream resumes after its
last batch); the timing is decided here.
"""

from __future__ import annotations

import email.utils
import math
import random
import time

MAX_WAIT = 30.0
"""Longest single wait between attempts, seconds (also caps Retry-After)."""


def parse_retry_after(value: str | None, cap: float = MAX_WAIT) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP date), within ``[0, cap]``; None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    if math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), cap)


def backoff(attempt: int, base: float = 0.5, cap: float = MAX_WAIT, retry_after: float | None = None, jitter: bool = True) -> float:
    """Seconds to wait before attempt ``attempt + 1`` (``attempt`` counts from 0): the server's word if it gave one."""
    if retry_after is not None:
        return min(max(retry_after, 0.0), cap)
    delay = min(base * (2.0**attempt), cap)
    if not jitter:
        return delay
    return delay / 2 + random.uniform(0, delay / 2)  # noqa: S311 - jitter, not crypto
