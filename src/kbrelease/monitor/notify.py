"""A workflow's result, posted to the alert webhooks: what the Argo exit handler (``onExit``) runs.

Argo fills ``{{workflow.status}}`` and ``{{workflow.failures}}`` (a JSON list of
the failed steps) into the command line; both are treated as untrusted text:
the status must be one of Argo's, the failures are parsed with a size bound
and only their step names and messages, clipped, reach the message.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from kbrelease.config import Config
from kbrelease.errors import ConfigError
from kbrelease.monitor.alerts import AlertSender
from kbrelease.trust.names import is_name

STATUSES = ("Succeeded", "Failed", "Error")
MAX_FAILURES_BYTES = 64 << 10
_SHOWN_FAILURES = 5


@dataclass
class NotifyInfo:
    workflow: str
    status: str
    release: str | None
    webhooks: int
    delivered: int
    failed_steps: list[str] = field(default_factory=list)
    text: str = ""

    @property
    def ok(self) -> bool:
        return self.delivered == self.webhooks

    def asdict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}

    def __str__(self) -> str:
        if not self.webhooks:
            return f"workflow {self.workflow} {self.status}; no alert webhooks configured (set KBRELEASE_ALERT_WEBHOOKS), nothing sent"
        return f"workflow {self.workflow} {self.status}: posted to {self.delivered} of {self.webhooks} webhook(s)"


def _clip(text: Any, limit: int) -> str:
    value = " ".join(str(text).split())
    return value if len(value) <= limit else value[: limit - 1] + "…"


def failed_steps(failures: str | None) -> list[str]:
    """``"step: message"`` of each failed step in Argo's ``{{workflow.failures}}`` JSON (unresolved or empty: none)."""
    if not failures or failures.startswith("{{") or failures == "null":
        return []
    if len(failures.encode()) > MAX_FAILURES_BYTES:
        raise ConfigError(f"--failures is over {MAX_FAILURES_BYTES} bytes; pass Argo's {{{{workflow.failures}}}} as it is")
    try:
        items = json.loads(failures)
        if isinstance(items, str):  # quoted once more on the way (Argo quotes the value to keep its escapes)
            items = json.loads(items)
    except ValueError:
        raise ConfigError("--failures is not JSON; pass Argo's {{workflow.failures}} as it is") from None
    if not isinstance(items, list):
        raise ConfigError("--failures is not a JSON list; pass Argo's {{workflow.failures}} as it is")
    out = []
    for item in items:
        if isinstance(item, dict):
            out.append(f"{_clip(item.get('displayName') or item.get('templateName') or '?', 80)}: {_clip(item.get('message') or item.get('phase') or '', 200)}")
    return out


def notify_workflow(cfg: Config, workflow: str, status: str, release: str | None = None, failures: str | None = None, http: Any = None) -> NotifyInfo:
    """Post ``workflow``'s result (and its failed steps) to ``monitor.webhook_urls``."""
    if status not in STATUSES:
        raise ConfigError(f"--status {_clip(status, 40)!r} is not an Argo workflow result; expected one of {', '.join(STATUSES)} ({{{{workflow.status}}}})")
    name = _clip(workflow, 120)
    rel = release if release and is_name("release", release) else None
    steps = failed_steps(failures)
    icon = ":white_check_mark:" if status == "Succeeded" else ":rotating_light:"
    text = f"{icon} kbrelease [{cfg.environment}] workflow {name} {status}" + (f" (release {rel})" if rel else "")
    if steps:
        text += "; failed: " + "; ".join(steps[:_SHOWN_FAILURES]) + (f" (+{len(steps) - _SHOWN_FAILURES} more)" if len(steps) > _SHOWN_FAILURES else "")
    sender = AlertSender(cfg.monitor.webhook_urls, cfg.environment, cfg.monitor.webhook_timeout_s, http)
    delivered = sender.send_text(text)
    return NotifyInfo(name, status, rel, len(sender.hooks), delivered, steps, text)
