"""The monitor's last report as Prometheus metrics (a collector, so values are read at scrape time)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from kbrelease.monitor.checks import MonitorReport


class MonitorCollector:
    """Exposes :class:`MonitorReport` values; register once into a ``CollectorRegistry``."""

    def __init__(self) -> None:
        self.report: MonitorReport | None = None

    def describe(self) -> Iterator[Any]:
        return self.collect()

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        report = self.report
        results = report.results if report else []
        ratio = GaugeMetricFamily("kbrelease_monitor_completeness_ratio", "Share of the live release's indexed files that have rows.", labels=["source"])
        files = GaugeMetricFamily("kbrelease_monitor_checksum_files", "Sampled source files by checksum verdict in the last run.", labels=["source", "verdict"])
        delay = GaugeMetricFamily("kbrelease_monitor_sync_delay_seconds", "Seconds since the source's last successful sync.", labels=["source"])
        up = GaugeMetricFamily("kbrelease_monitor_storage_up", "1 when the source storage or Milvus answered.", labels=["target"])
        ok = GaugeMetricFamily("kbrelease_monitor_check_ok", "1: the check passed, 0: it found a problem (absent: unknown).", labels=["check", "target"])
        for r in results:
            if r.status != "unknown":
                ok.add_metric([r.check, r.target], 1.0 if r.status == "ok" else 0.0)
            if r.check == "completeness" and r.value is not None:
                ratio.add_metric([r.target], r.value)
            elif r.check == "checksums" and r.status != "unknown":
                for verdict in ("ok", "drift", "missing", "corrupt"):
                    files.add_metric([r.target, verdict], float(r.details.get(verdict, 0)))
            elif r.check == "sync_delay" and r.value is not None:
                delay.add_metric([r.target], r.value)
            elif r.check == "storage" and r.value is not None:
                up.add_metric([r.target], r.value)
        incidents = GaugeMetricFamily("kbrelease_monitor_open_incidents", "Incidents open after the last run.")
        last = GaugeMetricFamily("kbrelease_monitor_last_run_timestamp_seconds", "Unix time of the last monitor run.")
        seconds = GaugeMetricFamily("kbrelease_monitor_run_seconds", "Duration of the last monitor run.")
        if report is not None:
            from datetime import datetime

            incidents.add_metric([], float(len(report.open_incidents)))
            last.add_metric([], datetime.fromisoformat(report.checked_at).timestamp())
            seconds.add_metric([], report.seconds)
        yield from (ratio, files, delay, up, ok, incidents, last, seconds)
