"""The one retry policy: backoff with jitter, Retry-After honoured within the cap."""

from __future__ import annotations

import email.utils
import time

from kbrelease.retry import MAX_WAIT, backoff, parse_retry_after


def test_retry_after_as_seconds_or_an_http_date_within_the_cap() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(" 0.5 ") == 0.5
    assert parse_retry_after("-4") == 0.0
    assert parse_retry_after("86400") == MAX_WAIT
    soon = email.utils.formatdate(time.time() + 10, usegmt=True)
    assert 8.0 <= (parse_retry_after(soon) or 0) <= 10.0
    assert parse_retry_after(None) is None and parse_retry_after("") is None
    assert parse_retry_after("soon") is None and parse_retry_after("nan") is None


def test_backoff_doubles_with_equal_jitter_and_obeys_the_server() -> None:
    for attempt, full in ((0, 0.5), (1, 1.0), (3, 4.0), (20, MAX_WAIT)):
        waits = [backoff(attempt) for _ in range(200)]
        assert all(full / 2 <= w <= full for w in waits)
        assert max(waits) - min(waits) > 0  # jittered: replicas do not retry in step
    assert backoff(5, retry_after=2.0) == 2.0
    assert backoff(0, retry_after=999) == MAX_WAIT
    assert [backoff(a, base=1.0, cap=5.0, jitter=False) for a in range(4)] == [1.0, 2.0, 4.0, 5.0]
