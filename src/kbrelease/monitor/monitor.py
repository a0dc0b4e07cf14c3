"""The integrity monitor: run every check, keep incidents, alert, export metrics.

One shot (``kbrelease monitor``, for cron or an Argo CronWorkflow)::

    report = Monitor(kb.cfg, kb.store, kb.registry).run_once()

In a service, a background loop that also feeds ``/metrics``::

    monitor = Monitor(kb.cfg, kb.store, kb.registry, metrics=app.state.registry)
    stop = asyncio.Event()
    task = asyncio.create_task(monitor.run_async(stop=stop))   # in the lifespan
    ...
    stop.set(); await task
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from kbrelease.errors import KbReleaseError
from kbrelease.index.compat import VersionCheck
from kbrelease.index.data_index import read_bundle
from kbrelease.monitor.alerts import AlertSender, IncidentBook, alert_cycle
from kbrelease.monitor.checks import CheckResult, MonitorReport, checksums, completeness, now_utc, spec_updates, storage, sync_delay
from kbrelease.monitor.metrics import MonitorCollector
from kbrelease.workspace import Workspace

if TYPE_CHECKING:
    import httpx

    from kbrelease.config import Config
    from kbrelease.release.registry import Registry
    from kbrelease.store.milvus import MilvusStore

log = logging.getLogger("kbrelease.monitor")


class Monitor:
    """Integrity checks of one environment: its config, its store and its release registry."""

    def __init__(self, cfg: Config, store: MilvusStore, releases: Registry, metrics: Any = None, http: httpx.Client | None = None) -> None:
        """``metrics``: a prometheus_client ``CollectorRegistry`` to expose the last report in."""
        self.cfg = cfg
        self.store = store
        self.releases = releases
        self.ws = Workspace.of(cfg)
        self.sender = AlertSender.from_config(cfg, http)
        self.state_dir = cfg.monitor.state_dir or self.ws.state_dir
        self.collector = MonitorCollector()
        self._lock = threading.Lock()
        if metrics is not None:
            metrics.register(self.collector)

    @property
    def last_report(self) -> MonitorReport | None:
        return self.collector.report

    def run_once(self, alerts: bool = True, checksum_sample: int | str | None = None) -> MonitorReport:
        """Run every check. With ``alerts``, update the incidents and send what is due;
        without, only report (incidents and webhooks untouched)."""
        with self._lock:
            return self._run(alerts, checksum_sample if checksum_sample is not None else self.cfg.monitor.checksum_sample)

    def _run(self, alerts: bool, sample: int | str) -> MonitorReport:
        started = time.monotonic()
        now = now_utc()
        results: list[CheckResult] = storage(self.cfg, self.store)
        milvus_up = any(r.key == "storage:milvus" and r.status == "ok" for r in results)
        live = None
        checked: list[CheckResult] = []
        if milvus_up:
            try:
                live = self.releases.pointer().live
            except KbReleaseError as exc:
                milvus_up = False
                log.warning("cannot read the live pointer: %s", exc)
                # Milvus answers but the registry does not: alert, do not hide it as unknown.
                checked.append(CheckResult("completeness", "live", "problem", f"cannot evaluate: cannot read the live pointer: {exc}"))
        if milvus_up:
            checked += completeness(self.cfg, self.store, self.releases, live)
        elif not checked:
            checked.append(CheckResult("completeness", "live", "unknown", "Milvus cannot be reached (see storage:milvus)"))
        folder = self.ws.release_index(live) if live else self.ws.index_dir
        index_name = f"release {live}" if live else "current (last sync)"
        try:
            checked += checksums(self.cfg, read_bundle(folder, VersionCheck.of(self.cfg)), folder, sample)
        except KbReleaseError as exc:
            checked.append(CheckResult("checksums", "index", "unknown", str(exc)))
        checked += sync_delay(self.cfg, now)
        if self.cfg.monitor.check_spec_updates:
            checked += spec_updates(self.cfg)
        results = checked + results
        report = MonitorReport(now.isoformat(timespec="seconds"), self.cfg.environment, live, index_name, results)
        with IncidentBook(self.state_dir).locked() as book:
            if alerts:
                report.alerts = alert_cycle(book, self.sender, results, report.checked_at)
            report.open_incidents = sorted(book.incidents)
        report.seconds = round(time.monotonic() - started, 3)
        self.collector.report = report
        return report

    async def run_async(self, stop: asyncio.Event | None = None, interval_s: float | None = None) -> None:
        """The same loop for an asyncio service: each run in a worker thread, so requests are never blocked."""
        stop = stop or asyncio.Event()
        interval = interval_s if interval_s is not None else self.cfg.monitor.interval_minutes * 60
        while not stop.is_set():
            try:
                await asyncio.to_thread(self.run_once)
            except Exception:
                log.exception("monitor run failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)


def notify(cfg: Config, key: str, message: str, channels: list[str] | None = None, http: httpx.Client | None = None) -> list[dict[str, Any]]:
    """Send a one-shot notice (not an incident) to the alert channels named (default: all), once per ``key``.

    Used for incompatibilities found outside the monitor (``check``, a data
    index read, a package import). Never raises: a notice that cannot be sent
    is logged and retried by the next call with the same key.
    """
    sender = AlertSender.from_config(cfg, http)
    if not sender.hooks:
        return []
    only = sender.of_channels(channels) if channels is not None else sender.hooks
    if not only:
        return []
    state_dir = cfg.monitor.state_dir or Workspace.of(cfg).state_dir
    now = now_utc().isoformat(timespec="seconds")
    try:
        with IncidentBook(state_dir).locked() as book:
            book.add_event(key, message, now)
            pending = [n for n in book.pending(sender.hooks) if n.kind == "event"]
            sent = sender.deliver(pending, only=only)
            book.forget_delivered(sender.hooks, now)
            return sent
    except OSError as exc:
        log.warning("cannot record the notice %s in %s: %s", key, state_dir, exc)
        return []
