"""The seed's template name, scheduled runs (CronWorkflows) and the exit handler that posts a run's result to the alert webhooks."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from deploy.rendering import CONFIG, SECRETS, by_kind, parse_kbrelease, schema_errors

from local_http import WebhookReceiver

FAILURES = [{"displayName": "build-docs(0:1/3)", "message": "Error (exit code 1)", "templateName": "build-text", "phase": "Failed"}]


@pytest.fixture
def scheduled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from kbrelease.cli import app

    cfg = tmp_path / "kbrelease.yaml"
    cfg.write_text(CONFIG.replace("  replicas: 3\n", "  replicas: 3\n  exit_alerts: true\n"), encoding="utf-8")
    for name, value in {**SECRETS, "KBRELEASE_ALERT_WEBHOOKS": "https://hooks.example.com/services/T0/B0/s3cr3t-hook"}.items():
        monkeypatch.setenv(name, value)
    out = tmp_path / "k8s"
    args = ["-c", str(cfg), "argo", "render", "-o", str(out), "--template-name", "bg-deploy"]
    result = CliRunner().invoke(app, [*args, "--publish-schedule", "0 3 * * *", "--monitor-schedule", "*/15 * * * *"])
    assert result.exit_code == 0, result.output
    assert "workflowtemplate/bg-deploy" in result.stdout  # the seed's own `argo submit --from workflowtemplate/bg-deploy`
    return out


def test_the_seed_template_name_and_the_cron_workflows_validate(scheduled: Path) -> None:
    (template,) = by_kind(scheduled, "WorkflowTemplate")
    assert template["metadata"]["name"] == "bg-deploy"
    assert schema_errors(template) == []
    crons = {c["metadata"]["name"]: c for c in by_kind(scheduled, "CronWorkflow")}
    assert set(crons) == {"kbrelease-publish-scheduled", "kbrelease-monitor"}
    for cron in crons.values():
        assert schema_errors(cron, "CronWorkflow") == []
        assert cron["spec"]["concurrencyPolicy"] == "Forbid" and cron["spec"]["timezone"] == "UTC"
    publish = crons["kbrelease-publish-scheduled"]["spec"]
    assert publish["schedules"] == ["0 3 * * *"]
    assert publish["workflowSpec"]["workflowTemplateRef"] == {"name": "bg-deploy"}
    (param,) = publish["workflowSpec"]["arguments"]["parameters"]
    assert param["name"] == "database-name"
    from kbrelease.trust.names import is_name

    assert is_name("release", re.sub(r"\{\{workflow\.creationTimestamp\.(\w)\}\}", "0", param["value"]))  # a valid release name once Argo fills it
    monitor = crons["kbrelease-monitor"]["spec"]
    assert monitor["schedules"] == ["*/15 * * * *"]
    (step,) = monitor["workflowSpec"]["templates"]
    assert parse_kbrelease(step["container"]["args"]).name == "monitor"
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"]["key"] for e in step["container"]["env"]}
    assert refs["KBRELEASE_ALERT_WEBHOOKS"] == "KBRELEASE_ALERT_WEBHOOKS"


def test_a_bad_schedule_or_template_name_is_refused(tmp_path: Path) -> None:
    from kbrelease.cli import app

    cfg = tmp_path / "kbrelease.yaml"
    cfg.write_text(CONFIG, encoding="utf-8")
    bad = CliRunner().invoke(app, ["-c", str(cfg), "argo", "render", "-o", str(tmp_path / "k"), "--publish-schedule", "every day"])
    assert bad.exit_code == 2 and "deploy.schedule.publish" in bad.stderr
    bad = CliRunner().invoke(app, ["-c", str(cfg), "argo", "render", "-o", str(tmp_path / "k"), "--template-name", "BG_Deploy"])
    assert bad.exit_code == 2 and "deploy.workflow_template" in bad.stderr


def test_the_exit_handler_posts_the_result_to_the_alert_webhooks(scheduled: Path, tmp_path: Path) -> None:
    (template,) = by_kind(scheduled, "WorkflowTemplate")
    assert template["spec"]["onExit"] == "notify"
    notify = next(t for t in template["spec"]["templates"] if t["name"] == "notify")
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in notify["container"]["env"]}
    assert refs["KBRELEASE_ALERT_WEBHOOKS"] == {"name": "kbrelease-secrets", "key": "KBRELEASE_ALERT_WEBHOOKS", "optional": True}
    # What Argo would run when the workflow fails: its own placeholders filled in.
    values = {
        "workflow.name": "bg-deploy-x7k2p",
        "workflow.status": "Failed",
        "workflow.parameters.database-name": "v7",
        "workflow.failures": json.dumps(FAILURES),
    }
    args = [re.sub(r"\{\{([\w.-]+)\}\}", lambda m: values[m.group(1)], a) for a in notify["container"]["args"]]
    assert parse_kbrelease(args).name == "notify"
    config = tmp_path / "local.yaml"
    config.write_text(f"workspace: {tmp_path / 'ws'}\nsources: []\n", encoding="utf-8")
    with WebhookReceiver() as hooks:
        env = {
            "PATH": os.environ.get("PATH", ""),
            "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
            "KBRELEASE_ALERT_WEBHOOKS": f"{hooks.url()},{hooks.url('/second')}",
        }
        done = subprocess.run(
            [sys.executable, "-m", "kbrelease.cli", "-c", str(config), *args], env=env, capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 0, done.stderr
        assert "posted to 2 of 2 webhook(s)" in done.stdout
        assert hooks.paths == ["/services/T000/B000/secret-token", "/second"]
        text = hooks.texts[0]
        assert "workflow bg-deploy-x7k2p Failed (release v7)" in text and "build-docs(0:1/3): Error (exit code 1)" in text
        hooks.fail_next = 3  # a webhook that keeps failing: the handler says so with its exit code
        failed = subprocess.run(
            [sys.executable, "-m", "kbrelease.cli", "-c", str(config), *args[:-2]], env=env, capture_output=True, text=True, timeout=60, check=False
        )
        assert failed.returncode == 1 and "posted to 1 of 2" in failed.stdout
        assert "secret-token" not in failed.stdout + failed.stderr  # webhook URLs are secrets


def test_failures_are_read_as_argo_gives_them_and_bounded() -> None:
    from kbrelease import ConfigError
    from kbrelease.monitor.notify import failed_steps

    raw = json.dumps(FAILURES)
    assert failed_steps(raw) == failed_steps(json.dumps(raw)) == ["build-docs(0:1/3): Error (exit code 1)"]
    assert failed_steps("{{workflow.failures}}") == failed_steps("[]") == []
    with pytest.raises(ConfigError, match="not JSON"):
        failed_steps("[{")
    with pytest.raises(ConfigError, match="over 65536 bytes"):
        failed_steps("[" + "1," * 40_000 + "1]")
