"""Incidents and their alerts: one alert when a problem appears, one when it is fixed.

The open incidents live in ``<workspace>/state/incidents.json`` so that
one-shot runs (cron, an Argo CronWorkflow) and the service's loop share them:
a problem that persists over many checks alerts once. A file lock makes
concurrent runs take turns. Each webhook is remembered by a hash (the URLs
themselves are secrets and are never stored, logged or shown), so one that
failed gets the alert on the next run and one that succeeded never twice.

Channels (:class:`AlertSender` builds them from ``monitor``'s config):

- ``webhook``: Slack-compatible, ``POST {"text": "..."}`` to each URL of
  ``KBRELEASE_ALERT_WEBHOOKS``;
- ``pagerduty``: PagerDuty Events API v2, ``trigger`` when an incident opens
  (and on each repeat), ``resolve`` when it clears, one ``dedup_key`` per
  incident, so PagerDuty shows one alert;
- ``email``: one message over SMTP (``smtplib``) to ``monitor.email.recipients``.

Escalation (``monitor.escalation``): with ``escalate_minutes`` an incident
first goes to the first configured channel of ``order`` and reaches the next
one each time it stays open that long; with ``repeat_minutes`` its alert is
sent again to the channels it has reached. Every channel that heard of an
incident hears it is resolved. One-shot ``event`` notices (an incompatible
data index) go to the channels named for them, once.
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
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from kbrelease.atomic import atomic_write_json
from kbrelease.monitor.checks import CheckResult
from kbrelease.retry import backoff
from kbrelease.trust.redact import RedactingFilter, register_secret

if TYPE_CHECKING:
    import httpx
    from pydantic import SecretStr

    from kbrelease.config import AlertChannel, Config, EmailConfig, EscalationConfig, PagerDutyConfig

log = logging.getLogger("kbrelease.monitor")
STATE_FILE = "incidents.json"
NoticeKind = Literal["open", "resolved", "event"]


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
    """One alert to deliver: an incident opened (or still open: a repeat, an escalation), resolved, or a one-shot event."""

    kind: NoticeKind
    key: str
    message: str
    opened_at: str
    resolved_at: str | None = None
    delivered_to: list[str] = field(default_factory=list)
    """Targets that received the current round (the first alert, or the latest repeat)."""
    level: int = 0
    """Escalation tier reached: the targets of tiers 0..level are due."""
    escalated_at: str | None = None
    round_at: str | None = None
    repeats: int = 0
    told: list[str] = field(default_factory=list)
    """Every target that ever received this incident's alert: they hear the resolve."""

    def text(self, environment: str) -> str:
        if self.kind == "event":
            return f":warning: kbrelease [{environment}] {self.key}: {self.message}"
        if self.kind == "open":
            extra = []
            if self.repeats:
                extra.append(f"still open since {self.opened_at}, reminder {self.repeats}")
            if self.level:
                extra.append(f"escalated to level {self.level + 1}")
            tail = f" ({'; '.join(extra)})" if extra else ""
            return f":rotating_light: kbrelease [{environment}] {self.key}: {self.message}{tail}"
        return f":white_check_mark: kbrelease [{environment}] resolved {self.key} (open since {self.opened_at}): {self.message}"

    def subject(self, environment: str) -> str:
        word = {"open": "ALERT", "resolved": "RESOLVED", "event": "NOTICE"}[self.kind]
        return f"[kbrelease {environment}] {word} {self.key}"


def _age_s(since: str | None, now: str) -> float:
    if not since:
        return 0.0
    return (datetime.fromisoformat(now) - datetime.fromisoformat(since)).total_seconds()


class IncidentBook:
    """The open incidents and the resolve notices still to deliver."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / STATE_FILE
        self.incidents: dict[str, Notice] = {}
        self.resolved: list[Notice] = []
        self.events: list[Notice] = []
        self.events_sent: dict[str, str] = {}

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
        self.events = [Notice(**v) for v in data.get("events_undelivered") or []]
        self.events_sent = dict(data.get("events_sent") or {})

    def _save(self) -> None:
        data = {
            "open": {k: vars(v) for k, v in sorted(self.incidents.items())},
            "resolved_undelivered": [vars(n) for n in self.resolved],
            "events_undelivered": [vars(n) for n in self.events],
            "events_sent": self.events_sent,
        }
        atomic_write_json(self.path, data)

    def update(self, results: list[CheckResult], now: str, hooks: list[str], escalation: Escalation | None = None) -> None:
        """Open incidents for new problems, resolve the ones whose check now passes, repeat and escalate the rest.

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
                    self.incidents[r.key] = Notice("open", r.key, r.message, now, escalated_at=now, round_at=now)
            elif r.status == "ok" and r.key in self.incidents:
                self._resolve(r.key, r.message, now, hooks)
        for key in list(self.incidents):
            if key not in seen and key.split(":", 1)[0] in checks_run:
                self._resolve(key, "the target is no longer monitored", now, hooks)
        if escalation is not None:
            for incident in self.incidents.values():
                escalation.advance(incident, now)

    def _resolve(self, key: str, message: str, now: str, hooks: list[str]) -> None:
        incident = self.incidents.pop(key)
        told = [h for h in hooks if h in incident.delivered_to or h in incident.told]
        if told:  # only a target that heard of the incident hears it is over
            self.resolved.append(Notice("resolved", key, message, incident.opened_at, now, [h for h in hooks if h not in told]))

    def add_event(self, key: str, message: str, now: str, again_after_s: float | None = None) -> bool:
        """Queue a one-shot notice, unless one with this key was sent (within ``again_after_s``, or ever)."""
        last = self.events_sent.get(key)
        if any(n.key == key for n in self.events) or (last and (again_after_s is None or _age_s(last, now) < again_after_s)):
            return False
        self.events.append(Notice("event", key, message, now))
        return True

    def pending(self, hooks: list[str], due: Any = None) -> list[Notice]:
        """Notices some target has not received yet, opens first. ``due(notice)``: the targets an open incident has reached."""
        wanted = due or (lambda _n: hooks)
        opens = [n for n in self.incidents.values() if any(h not in n.delivered_to for h in wanted(n))]
        rest = [n for n in self.resolved + self.events if any(h not in n.delivered_to for h in hooks)]
        return opens + rest

    def forget_delivered(self, hooks: list[str], now: str | None = None) -> None:
        for incident in self.incidents.values():
            incident.told = sorted(set(incident.told) | set(incident.delivered_to))
        self.resolved = [n for n in self.resolved if any(h not in n.delivered_to for h in hooks)]
        done = [n for n in self.events if all(h in n.delivered_to for h in hooks)]
        for n in done:
            self.events_sent[n.key] = now or n.opened_at
        self.events = [n for n in self.events if n not in done]


@dataclass
class Escalation:
    """Repeat and escalate open incidents: ``tiers`` of target ids, first tier first."""

    tiers: list[list[str]]
    escalate_s: float | None = None
    repeat_s: float | None = None

    def due(self, notice: Notice) -> list[str]:
        """The targets ``notice`` has reached: every tier for a resolve or an event, tiers 0..level for an open incident."""
        if notice.kind != "open" or self.escalate_s is None:
            return [t for tier in self.tiers for t in tier]
        return [t for tier in self.tiers[: notice.level + 1] for t in tier]

    def advance(self, incident: Notice, now: str) -> None:
        climbing = self.escalate_s is not None and incident.level + 1 < len(self.tiers)
        if climbing and _age_s(incident.escalated_at or incident.opened_at, now) >= (self.escalate_s or 0):
            incident.level += 1
            incident.escalated_at = now
        if self.repeat_s is not None and _age_s(incident.round_at or incident.opened_at, now) >= self.repeat_s:
            incident.told = sorted(set(incident.told) | set(incident.delivered_to))
            incident.delivered_to = []
            incident.round_at = now
            incident.repeats += 1


class Target(Protocol):
    """One destination of alerts: a webhook URL, a PagerDuty routing key, an email setup."""

    id: str
    channel: AlertChannel

    def send(self, notice: Notice, environment: str, client: httpx.Client) -> bool: ...


def _post_json(client: httpx.Client, name: str, url: str, body: dict[str, Any], timeout: float, attempts: int) -> bool:
    """POST ``body``; retry 429, 5xx and connection errors with backoff. ``name`` (not the URL) is what is logged."""
    import httpx

    for attempt in range(attempts):
        try:
            response = client.post(url, json=body, timeout=timeout)
            if response.status_code < 300:
                return True
            retry = response.status_code == 429 or response.status_code >= 500
            log.warning("alert %s answered %s", name, response.status_code)
        except httpx.HTTPError as exc:
            retry = True
            log.warning("alert %s failed: %s", name, type(exc).__name__)  # never the URL
        if not retry:
            return False
        if attempt + 1 < attempts:
            time.sleep(backoff(attempt))
    return False


@dataclass
class WebhookTarget:
    """A Slack-compatible incoming webhook (``POST {"text": ...}``)."""

    url: SecretStr
    timeout: float
    attempts: int = 3
    channel: AlertChannel = "webhook"

    def __post_init__(self) -> None:
        register_secret(self.url.get_secret_value())
        self.id = webhook_id(self.url.get_secret_value())

    def send(self, notice: Notice, environment: str, client: httpx.Client) -> bool:
        return _post_json(client, f"webhook {self.id}", self.url.get_secret_value(), {"text": notice.text(environment)}, self.timeout, self.attempts)


@dataclass
class PagerDutyTarget:
    """PagerDuty Events API v2: trigger / resolve with one dedup key per incident."""

    cfg: PagerDutyConfig
    timeout: float
    attempts: int = 3
    channel: AlertChannel = "pagerduty"

    def __post_init__(self) -> None:
        assert self.cfg.routing_key is not None
        key = self.cfg.routing_key.get_secret_value()
        register_secret(key)
        self.id = "pagerduty-" + webhook_id(key)

    def body(self, notice: Notice, environment: str) -> dict[str, Any]:
        assert self.cfg.routing_key is not None
        dedup = f"kbrelease/{environment}/{notice.key}" + (f"/{notice.opened_at}" if notice.kind == "event" else "")
        out: dict[str, Any] = {"routing_key": self.cfg.routing_key.get_secret_value(), "dedup_key": dedup[:255]}
        if notice.kind == "resolved":
            return out | {"event_action": "resolve"}
        check = notice.key.split(":", 1)[0]
        payload = {
            "summary": notice.text(environment).split(" ", 1)[1][:1024],
            "severity": self.cfg.severity if notice.kind == "open" else "warning",
            "source": self.cfg.source or f"kbrelease-{environment}",
            "component": check,
            "group": environment,
            "class": notice.kind,
            "custom_details": {"key": notice.key, "message": notice.message, "opened_at": notice.opened_at, "level": notice.level + 1},
        }
        return out | {"event_action": "trigger", "payload": payload, "client": "kbrelease"}

    def send(self, notice: Notice, environment: str, client: httpx.Client) -> bool:
        return _post_json(client, f"pagerduty {self.id}", self.cfg.events_url, self.body(notice, environment), self.timeout, self.attempts)


@dataclass
class EmailTarget:
    """An email to the configured recipients over SMTP (STARTTLS, SSL or plain for a local relay)."""

    cfg: EmailConfig
    attempts: int = 3
    channel: AlertChannel = "email"

    def __post_init__(self) -> None:
        if self.cfg.password is not None:
            register_secret(self.cfg.password.get_secret_value())
        where = f"{self.cfg.smtp_host}:{self.cfg.smtp_port}:{','.join(sorted(self.cfg.recipients))}"
        self.id = "email-" + webhook_id(where)

    def message(self, notice: Notice, environment: str) -> Any:
        from email.message import EmailMessage
        from email.utils import formatdate, make_msgid

        msg = EmailMessage()
        msg["Subject"] = notice.subject(environment)
        msg["From"] = self.cfg.sender
        msg["To"] = ", ".join(self.cfg.recipients)
        msg["Date"] = formatdate(localtime=False)
        msg["Message-ID"] = make_msgid(domain="kbrelease")
        msg.set_content(notice.text(environment) + "\n")
        return msg

    def _send_once(self, notice: Notice, environment: str) -> None:
        import smtplib
        import ssl

        cfg = self.cfg
        assert cfg.smtp_host is not None
        smtp: smtplib.SMTP
        if cfg.security == "ssl":
            smtp = smtplib.SMTP_SSL(cfg.smtp_host, cfg.smtp_port, timeout=cfg.timeout_s, context=ssl.create_default_context())
        else:
            smtp = smtplib.SMTP(cfg.smtp_host, cfg.smtp_port, timeout=cfg.timeout_s)
        with smtp:
            if cfg.security == "starttls":
                smtp.starttls(context=ssl.create_default_context())
            if cfg.username:
                smtp.login(cfg.username, cfg.password.get_secret_value() if cfg.password else "")
            smtp.send_message(self.message(notice, environment))

    def send(self, notice: Notice, environment: str, client: httpx.Client) -> bool:
        import smtplib

        for attempt in range(self.attempts):
            try:
                self._send_once(notice, environment)
                return True
            except smtplib.SMTPAuthenticationError as exc:
                log.warning("alert %s: the SMTP server refused the login (%s)", self.id, exc.smtp_code)
                return False
            except (smtplib.SMTPException, OSError) as exc:
                log.warning("alert %s failed: %s", self.id, type(exc).__name__)
            if attempt + 1 < self.attempts:
                time.sleep(backoff(attempt))
        return False


class AlertSender:
    """Delivers notices to every target due, with a few quick retries; failures wait for the next run."""

    def __init__(
        self,
        urls: list[SecretStr],
        environment: str,
        timeout: float,
        client: httpx.Client | None = None,
        attempts: int = 3,
        pagerduty: PagerDutyConfig | None = None,
        email: EmailConfig | None = None,
        escalation: EscalationConfig | None = None,
    ) -> None:
        targets: list[Target] = [WebhookTarget(u, timeout, attempts) for u in urls]
        if pagerduty is not None and pagerduty.routing_key is not None:
            targets.append(PagerDutyTarget(pagerduty, timeout, attempts))
        if email is not None and email.smtp_host and email.recipients:
            targets.append(EmailTarget(email, attempts))
        self.targets: dict[str, Target] = {t.id: t for t in targets}
        self.environment = environment
        self.timeout = timeout
        self.attempts = attempts
        self._client = client
        order = list(escalation.order) if escalation else []
        order += [c for c in ("webhook", "email", "pagerduty") if c not in order]
        tiers = [[t.id for t in targets if t.channel == channel] for channel in order]
        self.escalation = Escalation(
            [tier for tier in tiers if tier],
            escalation.escalate_minutes * 60 if escalation and escalation.escalate_minutes else None,
            escalation.repeat_minutes * 60 if escalation and escalation.repeat_minutes else None,
        )

    @classmethod
    def from_config(cls, cfg: Config, client: httpx.Client | None = None) -> AlertSender:
        mon = cfg.monitor
        return cls(mon.webhook_urls, cfg.environment, mon.webhook_timeout_s, client, pagerduty=mon.pagerduty, email=mon.email, escalation=mon.escalation)

    @property
    def hooks(self) -> list[str]:
        """Every target's id (the name kept in the incident state; never a URL or key)."""
        return list(self.targets)

    def of_channels(self, channels: list[str]) -> list[str]:
        return [t.id for t in self.targets.values() if t.channel in channels]

    def send_text(self, text: str) -> int:
        """Post one message to every webhook (quick retries); returns how many took it."""
        import httpx

        hooks = [t for t in self.targets.values() if isinstance(t, WebhookTarget)]
        if not hooks:
            return 0
        client = self._client or httpx.Client()
        try:
            return sum(_post_json(client, f"webhook {t.id}", t.url.get_secret_value(), {"text": text}, t.timeout, t.attempts) for t in hooks)
        finally:
            if self._client is None:
                client.close()

    def deliver(self, notices: list[Notice], only: list[str] | None = None) -> list[dict[str, Any]]:
        """Send each notice to each due target that lacks it; record who got it. Returns what was attempted.

        ``only``: the targets one-shot events go to (default: all).
        """
        import httpx

        out: list[dict[str, Any]] = []
        if not notices or not self.targets:
            return out
        client = self._client or httpx.Client()
        try:
            for notice in notices:
                if notice.kind == "event":
                    due = [h for h in (only if only is not None else self.hooks) if h in self.targets]
                    notice.delivered_to += [h for h in self.hooks if h not in due and h not in notice.delivered_to]
                else:
                    due = self.escalation.due(notice)
                for hook in due:
                    if hook not in notice.delivered_to and self.targets[hook].send(notice, self.environment, client):
                        notice.delivered_to.append(hook)
                entry = {"kind": notice.kind, "key": notice.key, "delivered": all(h in notice.delivered_to for h in due)}
                if notice.kind == "open" and (notice.level or notice.repeats):
                    entry |= {"level": notice.level + 1, "repeat": notice.repeats}
                out.append(entry)
        finally:
            if self._client is None:
                client.close()
        return out


def alert_cycle(book: IncidentBook, sender: AlertSender, results: list[CheckResult], now: str) -> list[dict[str, Any]]:
    """One round on a loaded book: open, resolve, repeat and escalate incidents from ``results``, deliver what is due."""
    hooks = sender.hooks
    book.update(results, now, hooks, sender.escalation)
    sent = sender.deliver(book.pending(hooks, sender.escalation.due))
    book.forget_delivered(hooks, now)
    return sent
