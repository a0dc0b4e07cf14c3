"""Incidents and their alerts: one alert when a problem appears, one when it is fixed.

The open incidents live in ``<workspace>/state/incidents.json`` so that
one-shot runs (cron, an Argo CronWorkflow) and the service's loop share them:
a problem that persists over many checks alerts once. A file lock makes
concurrent runs take turns. Each webhook is remembered by a hash (the URLs
themselves are secrets and are never stored, logged or shown), so one that
failed gets the alert on the next run and one that succeeded never twice.

Alerts are Slack-compatible: ``POST {"text": "..."}``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from kbrelease.atomic import atomic_write_json
from kbrelease.monitor.checks import CheckResult
from kbrelease.retry import backoff
from kbrelease.trust.redact import RedactingFilter, register_secret

if TYPE_CHECKING:
    import httpx
    from pydantic import SecretStr

log = logging.getLogger("kbrelease.monitor")
STATE_FILE = "incidents.json"
NoticeKind = Literal["open", "resolved"]


def webhook_id(url: str) -> str:
    """A stable, non-secret name for a webhook (hash of its URL)."""
    return hashlib.sha256(url.encode()).hexdigest()[:12]


# httpx logs every request's full URL at INFO; a webhook URL is a secret, so
# httpx's records pass the one redaction (the URLs are registered as secrets).
_httpx_log = logging.getLogger("httpx")
if not any(isinstance(f, RedactingFilter) for f in _httpx_log.filters):
    _httpx_log.addFilter(RedactingFilter())


@dataclass
class Notice:
    """One alert to deliver: an incident opened or resolved."""

    kind: NoticeKind
    key: str
    message: str
    opened_at: str
    resolved_at: str | None = None
    delivered_to: list[str] = field(default_factory=list)

    def text(self, environment: str) -> str:
        if self.kind == "open":
            return f":rotating_light: kbrelease [{environment}] {self.key}: {self.message}"
        return f":white_check_mark: kbrelease [{environment}] resolved {self.key} (open since {self.opened_at}): {self.message}"


class IncidentBook:
    """The open incidents and the resolve notices still to deliver."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / STATE_FILE
        self.incidents: dict[str, Notice] = {}
        self.resolved: list[Notice] = []

    @contextlib.contextmanager
    def locked(self) -> Iterator[IncidentBook]:
        """Load under an exclusive lock; save on a clean exit."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                self._load()
                yield self
                self._save()
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _load(self) -> None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = {}
        self.incidents = {k: Notice(**v) for k, v in (data.get("open") or {}).items()}
        self.resolved = [Notice(**v) for v in data.get("resolved_undelivered") or []]

    def _save(self) -> None:
        data = {"open": {k: vars(v) for k, v in sorted(self.incidents.items())}, "resolved_undelivered": [vars(n) for n in self.resolved]}
        atomic_write_json(self.path, data)

    def update(self, results: list[CheckResult], now: str, hooks: list[str]) -> None:
        """Open incidents for new problems, resolve the ones whose check now passes.

        An ``unknown`` result changes nothing. An open incident whose target
        is gone (a source removed from the config) is resolved when its check
        ran for other targets.
        """
        seen = {r.key for r in results}
        checks_run = {r.check for r in results if r.status != "unknown"}
        for r in results:
            if r.status == "problem":
                if r.key in self.incidents:
                    self.incidents[r.key].message = r.message
                else:
                    self.incidents[r.key] = Notice("open", r.key, r.message, now)
            elif r.status == "ok" and r.key in self.incidents:
                self._resolve(r.key, r.message, now, hooks)
        for key in list(self.incidents):
            if key not in seen and key.split(":", 1)[0] in checks_run:
                self._resolve(key, "the target is no longer monitored", now, hooks)

    def _resolve(self, key: str, message: str, now: str, hooks: list[str]) -> None:
        incident = self.incidents.pop(key)
        told = [h for h in hooks if h in incident.delivered_to]
        if told:  # only a webhook that heard of the incident hears it is over
            self.resolved.append(Notice("resolved", key, message, incident.opened_at, now, [h for h in hooks if h not in told]))

    def pending(self, hooks: list[str]) -> list[Notice]:
        """Notices some webhook has not received yet, opens first."""
        opens = [n for n in self.incidents.values() if any(h not in n.delivered_to for h in hooks)]
        return opens + [n for n in self.resolved if any(h not in n.delivered_to for h in hooks)]

    def forget_delivered(self, hooks: list[str]) -> None:
        self.resolved = [n for n in self.resolved if any(h not in n.delivered_to for h in hooks)]


class AlertSender:
    """Posts notices to the webhooks, with a few quick retries; failures wait for the next run."""

    def __init__(self, urls: list[SecretStr], environment: str, timeout: float, client: httpx.Client | None = None, attempts: int = 3) -> None:
        self._urls = {webhook_id(u.get_secret_value()): u for u in urls}
        for url in urls:
            register_secret(url.get_secret_value())
        self.environment = environment
        self.timeout = timeout
        self.attempts = attempts
        self._client = client

    @property
    def hooks(self) -> list[str]:
        return list(self._urls)

    def _post(self, client: httpx.Client, hook: str, body: dict[str, Any]) -> bool:
        import httpx

        url = self._urls[hook].get_secret_value()
        for attempt in range(self.attempts):
            try:
                response = client.post(url, json=body, timeout=self.timeout)
                if response.status_code < 300:
                    return True
                retry = response.status_code == 429 or response.status_code >= 500
                log.warning("alert webhook %s answered %s", hook, response.status_code)
            except httpx.HTTPError as exc:
                retry = True
                log.warning("alert webhook %s failed: %s", hook, type(exc).__name__)  # never the URL
            if not retry:
                return False
            if attempt + 1 < self.attempts:
                time.sleep(backoff(attempt))
        return False

    def send_text(self, text: str) -> int:
        """Post one message to every webhook (quick retries); returns how many took it."""
        import httpx

        if not self._urls:
            return 0
        client = self._client or httpx.Client()
        try:
            return sum(self._post(client, hook, {"text": text}) for hook in self._urls)
        finally:
            if self._client is None:
                client.close()

    def deliver(self, notices: list[Notice]) -> list[dict[str, Any]]:
        """Send each notice to each webhook that lacks it; record who got it. Returns what was attempted."""
        import httpx

        out: list[dict[str, Any]] = []
        if not notices or not self._urls:
            return out
        client = self._client or httpx.Client()
        try:
            for notice in notices:
                body = {"text": notice.text(self.environment)}
                for hook in self._urls:
                    if hook not in notice.delivered_to and self._post(client, hook, body):
                        notice.delivered_to.append(hook)
                out.append({"kind": notice.kind, "key": notice.key, "delivered": all(h in notice.delivered_to for h in self._urls)})
        finally:
            if self._client is None:
                client.close()
        return out
