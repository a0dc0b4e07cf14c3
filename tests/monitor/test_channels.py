"""Alert channels against real local receivers: PagerDuty Events v2 (HTTP), email (a real SMTP server),
Slack-compatible webhooks; escalation and repeats; failed syncs and changed bundle specs alert."""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from kbrelease import KbRelease, load_config
from kbrelease.errors import KbReleaseError
from kbrelease.monitor.alerts import AlertSender, IncidentBook, alert_cycle
from kbrelease.monitor.checks import CheckResult, spec_updates, sync_delay
from kbrelease.monitor.monitor import Monitor
from kbrelease.sources.sync import sync

from data_workspace import SPEC, make_workspace, write_config, write_spec
from local_http import EventsV2Receiver, SmtpReceiver, WebhookReceiver

ROUTING_KEY = "R0UTINGKEY0123456789abcdefABCDEF"
SMTP_PASSWORD = "smtp-pass-0123456789"
HOOK_SECRET = "/services/T9/B9/hook-secret-0123456789"


def _channels(pd: EventsV2Receiver, smtp: SmtpReceiver, escalation: str = "") -> str:
    return f"""monitor:
  pagerduty:
    events_url: {pd.url}
    source: kb-test
  email:
    smtp_host: 127.0.0.1
    smtp_port: {smtp.port}
    security: none
    username: alerts
    sender: kbrelease@example.com
    recipients: [ops@example.com, oncall@example.com]
  escalation:
    order: ["slack://data-ops", email, "pagerduty://data-critical"]
{escalation}"""


def _env(hooks: WebhookReceiver) -> dict[str, str]:
    return {"KBRELEASE_ALERT_WEBHOOKS": hooks.url(HOOK_SECRET), "KBRELEASE_PAGERDUTY_ROUTING_KEY": ROUTING_KEY, "KBRELEASE_SMTP_PASSWORD": SMTP_PASSWORD}


def _at(minutes: float) -> str:
    return (datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=minutes)).isoformat(timespec="seconds")


def _problem(ok: bool = False) -> list[CheckResult]:
    return [CheckResult("checksums", "docs", "ok" if ok else "problem", "all fine" if ok else "2 files corrupt")]


def test_every_channel_gets_open_and_resolve_in_its_own_shape(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with WebhookReceiver() as hooks, EventsV2Receiver() as pd, SmtpReceiver() as smtp:
        cfg = load_config(write_config(tmp_path, _channels(pd, smtp)), env=_env(hooks))
        sender = AlertSender.from_config(cfg)
        book = IncidentBook(tmp_path / "state")
        with book.locked():
            opened = alert_cycle(book, sender, _problem(), _at(0))
            again = alert_cycle(book, sender, _problem(), _at(5))
            resolved = alert_cycle(book, sender, _problem(ok=True), _at(6))

    assert opened == [{"kind": "open", "key": "checksums:docs", "delivered": True}]
    assert again == [] and resolved == [{"kind": "resolved", "key": "checksums:docs", "delivered": True}]
    assert pd.rejected == []
    trigger, resolve = pd.events
    assert trigger["routing_key"] == ROUTING_KEY and trigger["event_action"] == "trigger"
    assert trigger["payload"]["severity"] == "critical" and trigger["payload"]["source"] == "kb-test"
    assert trigger["payload"]["summary"].startswith("kbrelease [default] checksums:docs: 2 files corrupt")
    assert resolve == {"routing_key": ROUTING_KEY, "dedup_key": trigger["dedup_key"], "event_action": "resolve"}
    assert smtp.logins == ["alerts", "alerts"]
    assert [m["Subject"] for m in smtp.messages] == ["[kbrelease default] ALERT checksums:docs", "[kbrelease default] RESOLVED checksums:docs"]
    assert smtp.envelopes[0] == ("kbrelease@example.com", ["ops@example.com", "oncall@example.com"])
    assert "2 files corrupt" in smtp.messages[0].get_content()
    assert [t.split(" ")[0] for t in hooks.texts] == [":rotating_light:", ":white_check_mark:"]
    state = (tmp_path / "state" / "incidents.json").read_text(encoding="utf-8")
    for secret in (ROUTING_KEY, SMTP_PASSWORD, "hook-secret-0123456789"):
        assert secret not in caplog.text and secret not in state


def test_escalation_reaches_the_next_channel_and_repeats_until_resolved(tmp_path: Path) -> None:
    escalation = "    escalate_minutes: 10\n    repeat_minutes: 30\n"
    with WebhookReceiver() as hooks, EventsV2Receiver() as pd, SmtpReceiver() as smtp:
        cfg = load_config(write_config(tmp_path, _channels(pd, smtp, escalation)), env=_env(hooks))
        sender = AlertSender.from_config(cfg)
        book = IncidentBook(tmp_path / "state")
        seen: list[tuple[int, int, int]] = []
        with book.locked():
            for minute, results in [(0, _problem()), (5, _problem()), (10, _problem()), (20, _problem()), (25, _problem()), (30, _problem())]:
                alert_cycle(book, sender, results, _at(minute))
                seen.append((len(hooks.texts), len(smtp.messages), len(pd.events)))
            alert_cycle(book, sender, _problem(ok=True), _at(31))

    # webhook first; email after 10 min; PagerDuty after 20; at 30 min a reminder to all three.
    assert seen == [(1, 0, 0), (1, 0, 0), (1, 1, 0), (1, 1, 1), (1, 1, 1), (2, 2, 2)]
    assert "escalated to level 2" in smtp.messages[0].get_content()
    assert "still open since 2026-01-01T00:00:00+00:00, reminder 1" in hooks.texts[1]
    assert [e["event_action"] for e in pd.events] == ["trigger", "trigger", "resolve"]
    assert len({e["dedup_key"] for e in pd.events}) == 1  # one PagerDuty alert, re-triggered, then resolved
    assert hooks.texts[-1].startswith(":white_check_mark:") and smtp.messages[-1]["Subject"].endswith("RESOLVED checksums:docs")


def test_an_unescalated_incident_is_resolved_only_where_it_was_told(tmp_path: Path) -> None:
    with WebhookReceiver() as hooks, EventsV2Receiver() as pd, SmtpReceiver() as smtp:
        cfg = load_config(write_config(tmp_path, _channels(pd, smtp, "    escalate_minutes: 60\n")), env=_env(hooks))
        sender = AlertSender.from_config(cfg)
        book = IncidentBook(tmp_path / "state")
        with book.locked():
            alert_cycle(book, sender, _problem(), _at(0))
            alert_cycle(book, sender, _problem(ok=True), _at(1))
    assert len(hooks.texts) == 2 and smtp.messages == [] and pd.events == []


def test_a_refused_login_and_a_refused_event_are_not_delivered(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with WebhookReceiver() as hooks, EventsV2Receiver() as pd, SmtpReceiver(password="another-password") as smtp:
        env = _env(hooks) | {"KBRELEASE_PAGERDUTY_ROUTING_KEY": "not-an-integration-key"}
        cfg = load_config(write_config(tmp_path, _channels(pd, smtp)), env=env)
        sender = AlertSender.from_config(cfg)
        book = IncidentBook(tmp_path / "state")
        with book.locked():
            sent = alert_cycle(book, sender, _problem(), _at(0))
    assert sent == [{"kind": "open", "key": "checksums:docs", "delivered": False}]
    assert len(hooks.texts) == 1  # the webhook got it; the other two are retried next run
    assert smtp.messages == [] and "refused the login" in caplog.text
    assert pd.events == [] and pd.rejected and "routing_key" in pd.rejected[0][1][0]
    assert SMTP_PASSWORD not in caplog.text


def test_a_failed_sync_alerts_at_once_and_a_good_one_clears_it(tmp_path: Path) -> None:
    cfg = make_workspace(tmp_path, pictures=False)
    assert [r.status for r in sync_delay(cfg)] == ["ok"]  # synced a moment ago, well within 30 min
    shutil.move(tmp_path / "src" / "text", tmp_path / "src" / "away")

    with pytest.raises(KbReleaseError):
        sync(cfg)

    (failed,) = sync_delay(cfg)
    assert failed.status == "problem" and failed.message.startswith("the last sync failed at ")
    assert "fix it and run `kbrelease sync`" in failed.message
    cfg.monitor.alert_on_sync_failure = False
    assert sync_delay(cfg)[0].status == "ok"
    cfg.monitor.alert_on_sync_failure = True
    shutil.move(tmp_path / "src" / "away", tmp_path / "src" / "text")
    sync(cfg)
    assert sync_delay(cfg)[0].status == "ok"


def test_a_changed_bundle_spec_is_reported_until_it_is_resolved_again(tmp_path: Path) -> None:
    cfg = make_workspace(tmp_path)
    spec = write_spec(tmp_path, SPEC)
    KbRelease(cfg).index_bundle(spec)
    assert [(r.target, r.status) for r in spec_updates(cfg)] == [("weekly_docs", "ok")]

    spec.write_text(SPEC.replace("v1.0.0-2025.23", "v1.0.1-2025.24"), encoding="utf-8")
    (changed,) = spec_updates(cfg)
    assert changed.status == "problem"
    assert re.search(rf"bundle spec {re.escape(str(spec))} changed since bundle weekly_docs v1\.0\.0-2025\.23 was resolved", changed.message)
    assert f"run `kbrelease index --bundle {spec}`" in changed.message

    KbRelease(cfg).index_bundle(spec)
    assert spec_updates(cfg)[0].status == "ok"
    spec.unlink()
    assert "is gone" in spec_updates(cfg)[0].message


def test_the_monitor_alerts_a_failed_sync_at_once_and_escalates_in_seconds(tmp_path: Path, isolated_milvus: dict[str, str]) -> None:
    """Real time, small: escalate after 1.2 s. Incidents live in monitor.state_dir, not the (read-only in a pod) workspace."""
    state = tmp_path / "writable-state"
    with WebhookReceiver() as hooks, EventsV2Receiver() as pd, SmtpReceiver() as smtp:
        extra = _channels(pd, smtp, "    escalate_minutes: 0.02\n") + f"  state_dir: {state}\n  checksum_sample: 3\n"
        cfg = make_workspace(tmp_path, extra=extra, env=_env(hooks), overrides=isolated_milvus, pictures=False)
        shutil.move(tmp_path / "src" / "text", tmp_path / "src" / "away")
        with pytest.raises(KbReleaseError):
            sync(cfg)
        shutil.move(tmp_path / "src" / "away", tmp_path / "src" / "text")  # the source is back; the failure stands until a sync
        with KbRelease(cfg) as kb:
            first = Monitor(kb.cfg, kb.store, kb.registry).run_once()
            assert "sync_delay:docs" in first.open_incidents and len(hooks.texts) == 1 and smtp.messages == []
            time.sleep(2.1)  # incidents are stamped to the second: 2.1 s apart is always past 1.2 s
            Monitor(kb.cfg, kb.store, kb.registry).run_once()
            assert len(smtp.messages) == 1 and "escalated to level 2" in smtp.messages[0].get_content()
            sync(cfg)
            last = Monitor(kb.cfg, kb.store, kb.registry).run_once()
    assert "sync_delay:docs" not in last.open_incidents
    assert hooks.texts[-1].startswith(":white_check_mark: kbrelease [default] resolved sync_delay:docs")
    assert smtp.messages[-1]["Subject"].endswith("RESOLVED sync_delay:docs")
    assert json.loads((state / "incidents.json").read_text(encoding="utf-8"))["open"] == {}
    assert not (cfg.workspace / "state" / "incidents.json").exists()
