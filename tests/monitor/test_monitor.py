"""The integrity monitor: checks, one alert per incident (real webhook receiver), metrics, the CLI, the loop."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from typer.testing import CliRunner

from kbrelease import KbRelease
from kbrelease.cli import app
from kbrelease.index.data_index import read_bundle
from kbrelease.monitor.checks import checksums, sync_delay
from kbrelease.monitor.monitor import Monitor
from kbrelease.sources.sync import record_sync, sync
from kbrelease.workspace import Workspace

from data_workspace import make_workspace
from local_http import WebhookReceiver

SECRET_PATH = "/services/T000/B000/very-secret-token"


def _corrupt_in_place(path: Path) -> None:
    """Other bytes, same size and modification time: what bit rot or a bad overwrite looks like."""
    stat = path.stat()
    data = path.read_bytes()
    path.write_bytes(bytes(b ^ 0xFF for b in data[:4]) + data[4:])
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def _monitor_cfg(tmp_path: Path, milvus: dict[str, str], hooks: WebhookReceiver | None = None, **env: str) -> Any:
    environ = {"KBRELEASE_CHECKSUM_SAMPLE": "all", **env}
    if hooks is not None:
        environ["KBRELEASE_ALERT_WEBHOOKS"] = hooks.url(SECRET_PATH)
    return make_workspace(tmp_path, env=environ, overrides=milvus)


def test_checksums_tell_missing_corrupt_and_drift_apart(tmp_path: Path) -> None:
    cfg = make_workspace(tmp_path)
    src = tmp_path / "src" / "text"
    (src / "day-1" / "note-0.md").unlink()
    _corrupt_in_place(src / "day-1" / "note-1.md")
    (src / "day-1" / "note-2.md").write_text("grew: a normal update of the source\n", encoding="utf-8")
    folder = cfg.workspace / "index"

    docs, pictures = checksums(cfg, read_bundle(folder), folder, "all")

    assert (docs.status, pictures.status) == ("problem", "ok")
    assert {k: docs.details[k] for k in ("checked", "ok", "drift", "missing", "corrupt")} == {"checked": 16, "ok": 13, "drift": 1, "missing": 1, "corrupt": 1}
    verdicts = {f["file"]: f["verdict"] for f in docs.details["files"]}
    assert verdicts == {"day-1/note-0.md": "missing", "day-1/note-1.md": "corrupt", "day-1/note-2.md": "drift"}
    assert "1 missing, 1 corrupt" in docs.message

    sampled, _ = checksums(cfg, read_bundle(folder), folder, 5)
    assert sampled.details["checked"] == 5


def test_drift_alone_alerts_only_when_asked(tmp_path: Path) -> None:
    cfg = make_workspace(tmp_path)
    (tmp_path / "src" / "text" / "day-1" / "note-2.md").write_text("grew\n" * 20, encoding="utf-8")
    folder = cfg.workspace / "index"

    assert checksums(cfg, read_bundle(folder), folder, "all")[0].status == "ok"
    cfg.monitor.alert_on_drift = True
    assert checksums(cfg, read_bundle(folder), folder, "all")[0].status == "problem"


def test_sync_delay_counts_from_the_last_successful_sync(tmp_path: Path) -> None:
    cfg = make_workspace(tmp_path)
    ws = Workspace(cfg.workspace)
    now = datetime.now(UTC)

    assert [r.status for r in sync_delay(cfg, now)] == ["ok", "ok"]
    record_sync(ws, ["docs"], now - timedelta(minutes=45))
    late, fine = sync_delay(cfg, now)
    assert (late.target, late.status, fine.status) == ("docs", "problem", "ok")
    assert "45 min ago" in late.message and "over 30 min" in late.message
    cfg.monitor.max_sync_delay_minutes = 60
    assert sync_delay(cfg, now)[0].status == "ok"


def test_an_incident_alerts_once_and_resolves_once(tmp_path: Path, isolated_milvus: dict[str, str]) -> None:
    with WebhookReceiver() as hooks:
        cfg = _monitor_cfg(tmp_path, isolated_milvus, hooks)
        victim = tmp_path / "src" / "text" / "day-2" / "note-3.md"
        original = victim.read_bytes()
        with KbRelease(cfg) as kb:
            first = Monitor(kb.cfg, kb.store, kb.registry).run_once()
            assert first.ok, str(first)
            assert hooks.bodies == []

            _corrupt_in_place(victim)
            for _ in range(3):  # three one-shot runs (cron): one alert
                report = Monitor(kb.cfg, kb.store, kb.registry).run_once()
                assert not report.ok
            assert len(hooks.texts) == 1
            assert hooks.texts[0].startswith(":rotating_light: kbrelease [default] checksums:docs: 16 of 16 files checked")
            assert "day-2/note-3.md" in hooks.texts[0]
            assert report.open_incidents == ["checksums:docs"]

            victim.write_bytes(original)
            os.utime(victim, (victim.stat().st_atime, victim.stat().st_mtime))
            resolved = Monitor(kb.cfg, kb.store, kb.registry).run_once()
            assert resolved.ok
            Monitor(kb.cfg, kb.store, kb.registry).run_once()

        assert len(hooks.texts) == 2
        assert hooks.texts[1].startswith(":white_check_mark: kbrelease [default] resolved checksums:docs (open since ")
        assert hooks.paths == [SECRET_PATH, SECRET_PATH]
        assert resolved.open_incidents == []


def test_an_undelivered_alert_is_sent_on_the_next_run_and_only_once(tmp_path: Path, isolated_milvus: dict[str, str]) -> None:
    with WebhookReceiver() as hooks:
        cfg = _monitor_cfg(tmp_path, isolated_milvus, hooks, KBRELEASE_MAX_SYNC_DELAY_MINUTES="1")
        record_sync(Workspace(cfg.workspace), ["docs"], datetime.now(UTC) - timedelta(hours=2))
        hooks.fail_next = 3  # every attempt of the first run fails
        with KbRelease(cfg) as kb:
            failed = Monitor(kb.cfg, kb.store, kb.registry).run_once()
            assert failed.alerts == [{"kind": "open", "key": "sync_delay:docs", "delivered": False}]
            assert hooks.bodies == []

            retried = Monitor(kb.cfg, kb.store, kb.registry).run_once()
            assert retried.alerts == [{"kind": "open", "key": "sync_delay:docs", "delivered": True}]
            assert Monitor(kb.cfg, kb.store, kb.registry).run_once().alerts == []

            sync(cfg)
            assert [a["kind"] for a in Monitor(kb.cfg, kb.store, kb.registry).run_once().alerts] == ["resolved"]
        assert [t.split(" ")[0] for t in hooks.texts] == [":rotating_light:", ":white_check_mark:"]


def test_storage_and_milvus_reachability(tmp_path: Path, isolated_milvus: dict[str, str]) -> None:
    cfg = _monitor_cfg(tmp_path, isolated_milvus)
    (tmp_path / "src" / "images").rename(tmp_path / "src" / "images-moved")
    with KbRelease(cfg) as kb:
        report = Monitor(kb.cfg, kb.store, kb.registry).run_once(alerts=False)
    storage = {r.target: r for r in report.results if r.check == "storage"}

    assert (storage["docs"].status, storage["pictures"].status, storage["milvus"].status) == ("ok", "problem", "ok")
    assert "does not exist" in storage["pictures"].message

    cfg.milvus.uri = "http://127.0.0.1:9"  # nothing listens there
    with KbRelease(cfg) as kb:
        down = Monitor(kb.cfg, kb.store, kb.registry).run_once(alerts=False)
    by_key = {r.key: r for r in down.results}
    assert by_key["storage:milvus"].status == "problem"
    assert by_key["completeness:live"].status == "unknown"


def test_metrics_are_exposed_in_the_registry_passed_in(tmp_path: Path, isolated_milvus: dict[str, str]) -> None:
    cfg = _monitor_cfg(tmp_path, isolated_milvus)
    _corrupt_in_place(tmp_path / "src" / "text" / "day-1" / "note-1.md")
    registry = CollectorRegistry()
    with KbRelease(cfg) as kb:
        Monitor(kb.cfg, kb.store, kb.registry, metrics=registry).run_once(alerts=False)

    text = generate_latest(registry).decode()
    assert 'kbrelease_monitor_check_ok{check="checksums",target="docs"} 0.0' in text
    assert 'kbrelease_monitor_check_ok{check="checksums",target="pictures"} 1.0' in text
    assert 'kbrelease_monitor_checksum_files{source="docs",verdict="corrupt"} 1.0' in text
    assert 'kbrelease_monitor_storage_up{target="milvus"} 1.0' in text
    assert "kbrelease_monitor_sync_delay_seconds{source=" in text
    assert "kbrelease_monitor_last_run_timestamp_seconds " in text


def test_the_cli_reports_json_exits_4_on_problems_and_never_shows_the_webhook(
    tmp_path: Path, isolated_milvus: dict[str, str], caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    milvus = "milvus:\n" + "".join(f"  {k.split('.')[1]}: {v}\n" for k, v in isolated_milvus.items())
    with WebhookReceiver() as hooks:
        make_workspace(tmp_path, extra=milvus)
        monkeypatch.setenv("KBRELEASE_ALERT_WEBHOOKS", hooks.url(SECRET_PATH))
        args = ["-c", str(tmp_path / "kbrelease.yaml"), "monitor"]
        runner = CliRunner()
        caplog.set_level(logging.DEBUG)

        ok = runner.invoke(app, [*args, "--sample", "3", "--json"])
        assert ok.exit_code == 0, ok.output
        assert json.loads(ok.stdout)["ok"] is True

        _corrupt_in_place(tmp_path / "src" / "text" / "day-1" / "note-1.md")
        dry = runner.invoke(app, [*args, "--sample", "all", "--no-alerts"])
        assert dry.exit_code == 6
        assert "PROBLEM checksums:docs" in dry.stdout
        assert hooks.bodies == []  # --no-alerts: reported, not alerted

        hooks.fail_next = 3
        bad = runner.invoke(app, [*args, "--sample", "all", "--json", "--metrics-file", str(tmp_path / "kb.prom")])
        assert bad.exit_code == 6
        assert json.loads(bad.stdout)["open_incidents"] == ["checksums:docs"]
        assert 'kbrelease_monitor_check_ok{check="checksums",target="docs"} 0.0' in (tmp_path / "kb.prom").read_text()

        wrong = runner.invoke(app, [*args, "--sample", "-1"])
        assert wrong.exit_code == 2
        assert "--sample '-1' must be a positive number or 'all'" in wrong.stderr

    seen = [ok.output, dry.output, bad.output, caplog.text, (tmp_path / "ws" / "state" / "incidents.json").read_text()]
    assert "very-secret-token" not in "".join(seen)
    assert "alert webhook" in caplog.text  # the failure was logged, by hash


def test_the_background_loop_runs_until_stopped(tmp_path: Path, isolated_milvus: dict[str, str]) -> None:
    cfg = _monitor_cfg(tmp_path, isolated_milvus)
    with KbRelease(cfg) as kb:
        monitor = Monitor(kb.cfg, kb.store, kb.registry)

        async def loop() -> None:
            stop_async = asyncio.Event()
            task = asyncio.create_task(monitor.run_async(stop_async, interval_s=3600))
            while monitor.last_report is None:
                await asyncio.sleep(0.05)
            stop_async.set()
            await asyncio.wait_for(task, timeout=30)

        asyncio.run(loop())
    assert monitor.last_report is not None and monitor.last_report.ok


def test_completeness_of_the_live_release(tmp_path: Path, isolated_milvus: dict[str, str], text_embedder: Any) -> None:
    """Rows lost from the live release open one incident; the next complete release resolves it."""
    with WebhookReceiver() as hooks:
        cfg = make_workspace(
            tmp_path, env={"KBRELEASE_ALERT_WEBHOOKS": hooks.url(SECRET_PATH), "KBRELEASE_CHECKSUM_SAMPLE": "3"}, overrides=isolated_milvus, pictures=False
        )
        with KbRelease(cfg, text_embedder=text_embedder) as kb:
            live = kb.publish().release
            report = Monitor(kb.cfg, kb.store, kb.registry).run_once()
            assert report.ok, str(report)
            full = next(r for r in report.results if r.key == "completeness:docs")
            assert (full.value, full.details["indexed"], full.details["with_rows"]) == (1.0, 16, 16)

            kb.store.delete_files(live.database, live.sources["docs"].collection, [r.file_id for r in _records(cfg, live.name)[:2]])
            for _ in range(2):
                report = Monitor(kb.cfg, kb.store, kb.registry).run_once()
            lost = next(r for r in report.results if r.key == "completeness:docs")
            assert lost.status == "problem"
            assert lost.value == pytest.approx(14 / 16)
            assert f"87.50% of 16 files have rows in live release {live.name} (threshold 99.00%)" in lost.message

            kb.publish(force=True)
            assert Monitor(kb.cfg, kb.store, kb.registry).run_once().ok
    assert [t.split(" ")[0] for t in hooks.texts] == [":rotating_light:", ":white_check_mark:"]
    assert "completeness:docs" in hooks.texts[0]


def _records(cfg: Any, release: str) -> list[Any]:
    from kbrelease.index.data_index import read_source_index

    return read_source_index(Workspace(cfg.workspace).release_dir(release) / "index" / "docs.parquet")
