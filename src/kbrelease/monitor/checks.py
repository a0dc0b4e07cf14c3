"""The integrity checks: completeness, checksums, sync delay, storage reachability.

Each check returns :class:`CheckResult` items, one per target (a source, or
``milvus``), with a status:

- ``ok`` — checked, fine;
- ``problem`` — checked, wrong: opens an incident (one alert until it is fixed);
- ``unknown`` — could not be checked because something another check reports
  is down (Milvus unreachable: ``storage:milvus`` is the problem) or there is
  nothing to check: open incidents stay open, none is opened.

A check that cannot be evaluated while what it needs answers (the live
release's collection cannot be read, its record or index cannot be read) is a
``problem`` whose message starts with "cannot evaluate": it alerts like any
other, instead of hiding as ``unknown``.
"""

from __future__ import annotations

import random
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from kbrelease.config import Config
from kbrelease.errors import KbReleaseError
from kbrelease.index.data_index import Bundle, read_bundle
from kbrelease.workspace import Workspace

if TYPE_CHECKING:
    from kbrelease.release.registry import Registry
    from kbrelease.sources.source import Source
    from kbrelease.store.milvus import MilvusStore

CheckName = Literal["completeness", "checksums", "sync_delay", "storage", "spec_updates"]
Status = Literal["ok", "problem", "unknown"]
Verdict = Literal["ok", "drift", "missing", "corrupt"]


@dataclass
class CheckResult:
    """The outcome of one check for one target."""

    check: CheckName
    target: str
    status: Status
    message: str
    value: float | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """Identity of the incident this result opens or resolves."""
        return f"{self.check}:{self.target}"


@dataclass
class MonitorReport:
    """One monitor run: every check's results and the alerts it sent."""

    checked_at: str
    environment: str
    live_release: str | None
    index: str
    results: list[CheckResult] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    open_incidents: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(r.status != "problem" for r in self.results)

    def asdict(self) -> dict[str, Any]:
        return asdict(self) | {"ok": self.ok}

    def __str__(self) -> str:
        mark = {"ok": "ok     ", "problem": "PROBLEM", "unknown": "unknown"}
        lines = [f"monitor {self.environment} at {self.checked_at}: live {self.live_release or '-'}, index {self.index} — {'ok' if self.ok else 'PROBLEMS'}"]
        lines += [f"  {mark[r.status]} {r.key}: {r.message}" for r in self.results]
        for alert in self.alerts:
            lines.append(f"  alert {alert['kind']} {alert['key']}: {'sent' if alert['delivered'] else 'NOT delivered (retried next run)'}")
        return "\n".join(lines)


def now_utc() -> datetime:
    return datetime.now(UTC)


# --- completeness ---------------------------------------------------------------


def _count_indexed(parquet: Path, file_ids: list[str]) -> tuple[int, int]:
    """(files in the index, how many of ``file_ids`` are among them), matched in Arrow, not a Python set."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    indexed = pq.read_table(parquet, columns=["file_id"]).column(0)
    found = pc.sum(pc.is_in(pa.array(file_ids, pa.string()), value_set=indexed)).as_py() if file_ids else 0
    return len(indexed), int(found or 0)


def completeness(cfg: Config, store: MilvusStore, registry: Registry, live: str | None) -> list[CheckResult]:
    """Share of the live release's indexed files that have their rows, per source.

    Files the build recorded as skipped (empty, no text) are not expected to
    have rows; failed files are, so they lower the share.
    """
    if live is None:
        return [CheckResult("completeness", "live", "unknown", "no release is live in this environment; nothing to check")]
    threshold = cfg.monitor.completeness_threshold
    try:
        record = registry.require(live)
    except KbReleaseError as exc:
        return [CheckResult("completeness", "live", "problem", f"cannot evaluate: cannot read the live release {live!r}: {exc}")]
    from kbrelease.index.compat import VersionCheck

    folder = Workspace.of(cfg).release_index(live)
    try:
        bundle = read_bundle(folder, VersionCheck.of(cfg))
    except KbReleaseError as exc:
        return [CheckResult("completeness", "live", "problem", f"cannot evaluate: {exc}")]
    out = []
    for src in bundle.data_manifest:
        counts = record.sources.get(src.channel)
        if counts is None:
            out.append(CheckResult("completeness", src.channel, "problem", f"source {src.channel} is in release {live}'s index but was never built", 0.0))
            continue
        try:
            present = store.file_rows(record.database, counts.collection)
            n_indexed, complete = _count_indexed(folder / src.index_file, [f for f, (have, n) in present.items() if have == n])
        except (KbReleaseError, OSError) as exc:
            out.append(CheckResult("completeness", src.channel, "problem", f"cannot evaluate: cannot count the rows of live release {live}: {exc}"))
            continue
        expected = max(n_indexed - counts.skipped, 0)
        ratio = complete / expected if expected else 1.0
        details = {"indexed": n_indexed, "with_rows": complete, "skipped": counts.skipped, "failed": counts.failed, "threshold": threshold}
        if ratio < threshold:
            msg = (
                f"{ratio:.2%} of {expected} files have rows in live release {live} (threshold {threshold:.2%}); "
                f"see `kbrelease show {live}` for failed files, fix them and publish again"
            )
            out.append(CheckResult("completeness", src.channel, "problem", msg, ratio, details))
        else:
            out.append(CheckResult("completeness", src.channel, "ok", f"{ratio:.2%} of {expected} files have rows", ratio, details))
    return out


# --- checksums ------------------------------------------------------------------


def _verdict(source: Source, row: dict[str, Any]) -> tuple[Verdict, str]:
    now = source.stat(row["relative_path"])
    if now is None:
        return "missing", "gone from the source"
    if now.size_bytes != row["size_bytes"]:
        return "drift", f"size {row['size_bytes']} → {now.size_bytes}"
    digest, _ = source.sha256(row["relative_path"])
    if digest == row["checksum"]:
        return "ok", ""
    # Same version metadata but other bytes: changed in place without a new
    # version (bit rot, a bad overwrite). New metadata: a normal update.
    same_version = (now.etag == row["etag"]) if (now.etag or row["etag"]) else now.timestamp == row["timestamp"]
    return ("corrupt", "content differs but size and etag/mtime do not") if same_version else ("drift", "changed since indexed")


def _sample_rows(parquet: Path, sample: int | str, rng: random.Random) -> tuple[list[dict[str, Any]], int]:
    """The sampled index rows (and the row count), reading one row group at a time:
    memory stays at one group however large the index (a service runs this every hour)."""
    import pyarrow.parquet as pq

    columns = ["relative_path", "size_bytes", "checksum", "etag", "timestamp"]
    index = pq.ParquetFile(parquet)
    n = index.metadata.num_rows
    wanted = list(range(n)) if sample == "all" or int(sample) >= n else sorted(rng.sample(range(n), int(sample)))
    rows: list[dict[str, Any]] = []
    start = 0
    at = 0
    for g in range(index.metadata.num_row_groups):
        end = start + index.metadata.row_group(g).num_rows
        local = []
        while at < len(wanted) and wanted[at] < end:
            local.append(wanted[at] - start)
            at += 1
        if local:
            rows += index.read_row_group(g, columns=columns).take(local).to_pylist()
        start = end
    return rows, n


def checksums(cfg: Config, bundle: Bundle, folder: Path, sample: int | str, rng: random.Random | None = None) -> list[CheckResult]:
    """Compare a random sample (or all) of each source's indexed files with the source's bytes now."""
    from kbrelease.sources.source import Source

    rng = rng or random.Random()  # noqa: S311 - sampling, not security
    out = []
    for src in bundle.data_manifest:
        try:
            source = Source(cfg.source(src.channel), cfg.s3)
        except KbReleaseError as exc:
            out.append(CheckResult("checksums", src.channel, "unknown", str(exc)))
            continue
        rows, n = _sample_rows(folder / src.index_file, sample, rng)
        workers = cfg.s3.concurrency if source.protocol == "s3" else 1 if source.protocol == "ftp" else 4
        try:
            with ThreadPoolExecutor(max_workers=max(1, min(workers, len(rows)))) as pool:
                verdicts = list(pool.map(_verdict, [source] * len(rows), rows))
        except KbReleaseError as exc:
            out.append(CheckResult("checksums", src.channel, "unknown", f"cannot read the source: {exc}"))
            continue
        tally = Counter(v for v, _ in verdicts)
        bad = [{"file": r["relative_path"], "verdict": v, "why": why} for r, (v, why) in zip(rows, verdicts, strict=True) if v != "ok"]
        details = {"checked": len(rows), "indexed": n, **{k: tally.get(k, 0) for k in ("ok", "drift", "missing", "corrupt")}, "files": bad[:20]}
        alerting = tally["missing"] + tally["corrupt"] + (tally["drift"] if cfg.monitor.alert_on_drift else 0)
        summary = f"{len(rows)} of {n} files checked: {tally['ok']} ok, {tally['drift']} drift, {tally['missing']} missing, {tally['corrupt']} corrupt"
        if alerting:
            names = ", ".join(b["file"] for b in bad[:5])
            fix = "restore them in the source, or sync and publish to index the current files"
            out.append(CheckResult("checksums", src.channel, "problem", f"{summary} (e.g. {names}); {fix}", float(alerting), details))
        else:
            out.append(CheckResult("checksums", src.channel, "ok", summary, 0.0, details))
    return out


# --- sync delay -----------------------------------------------------------------


def sync_delay(cfg: Config, now: datetime | None = None) -> list[CheckResult]:
    """Time since each configured source's last successful sync, against ``monitor.max_sync_delay_minutes``."""
    from kbrelease.sources.sync import read_sync_failures, read_sync_state

    now = now or now_utc()
    ws = Workspace.of(cfg)
    state = read_sync_state(ws)
    failures = read_sync_failures(ws) if cfg.monitor.alert_on_sync_failure else {}
    limit = cfg.monitor.max_sync_delay_minutes * 60
    out = []
    for src in cfg.sources:
        last = state.get(src.name)
        failed = failures.get(src.name)
        if failed is not None and (last is None or failed["at"] >= last):
            # A failed sync alerts at once, not only once max_sync_delay_minutes have passed.
            msg = f"the last sync failed at {failed['at']}: {failed['error']}; fix it and run `kbrelease sync` (last success: {last or 'never'})"
            out.append(CheckResult("sync_delay", src.name, "problem", msg, None, {"last_success": last, "failed_at": failed["at"]}))
            continue
        if last is None:
            out.append(CheckResult("sync_delay", src.name, "problem", f"source {src.name} has never synced successfully; run `kbrelease sync`"))
            continue
        delay = max((now - datetime.fromisoformat(last)).total_seconds(), 0.0)
        details = {"last_success": last, "max_seconds": limit}
        if delay > limit:
            msg = f"last successful sync {delay / 60:.0f} min ago ({last}), over {limit / 60:.0f} min; check the sync job's logs"
            out.append(CheckResult("sync_delay", src.name, "problem", msg, delay, details))
        else:
            out.append(CheckResult("sync_delay", src.name, "ok", f"last successful sync {delay / 60:.1f} min ago", delay, details))
    return out


# --- storage --------------------------------------------------------------------


def storage(cfg: Config, store: MilvusStore | None) -> list[CheckResult]:
    """Can every source's storage and the Milvus be reached?"""
    from kbrelease.sources.source import Source

    out = []
    for src in cfg.sources:
        try:
            found = Source(src, cfg.s3).reachable()
        except KbReleaseError as exc:
            out.append(CheckResult("storage", src.name, "problem", str(exc), 0.0))
            continue
        if found:
            out.append(CheckResult("storage", src.name, "ok", f"{src.path} is reachable", 1.0))
        else:
            out.append(CheckResult("storage", src.name, "problem", f"{src.path} does not exist; fix the source's path or restore it", 0.0))
    if store is not None:
        try:
            store.databases()
            out.append(CheckResult("storage", "milvus", "ok", "Milvus answers", 1.0))
        except KbReleaseError as exc:
            out.append(CheckResult("storage", "milvus", "problem", str(exc), 0.0))
    return out


# --- bundle spec updates --------------------------------------------------------


def spec_updates(cfg: Config) -> list[CheckResult]:
    """Has a bundle spec file changed (its content hash) since its bundle was last resolved? (seed: ``check_dataspec_updates``)"""
    from kbrelease.index.bundles import read_spec_state, spec_sha256

    out = []
    for name, seen in sorted(read_spec_state(Workspace.of(cfg)).items()):
        path = Path(seen.get("file", ""))
        details = {"file": str(path), "resolved_version": seen.get("version"), "resolved_sha256": seen.get("sha256")}
        if not path.is_file():
            msg = f"bundle spec {path} of bundle {name} is gone; restore it, or remove the bundle"
            out.append(CheckResult("spec_updates", name, "problem", msg, None, details))
            continue
        try:
            now = spec_sha256(path)
        except OSError as exc:
            out.append(CheckResult("spec_updates", name, "unknown", f"cannot read bundle spec {path}: {exc}", None, details))
            continue
        if now != seen.get("sha256"):
            msg = (
                f"bundle spec {path} changed since bundle {name} {seen.get('version')} was resolved "
                f"({str(seen.get('sha256'))[7:19]} → {now[7:19]}); run `kbrelease index --bundle {path}`"
            )
            out.append(CheckResult("spec_updates", name, "problem", msg, None, details | {"sha256": now}))
        else:
            out.append(CheckResult("spec_updates", name, "ok", f"bundle spec {path.name} unchanged since {seen.get('version')} was resolved", None, details))
    return out
