"""The in-service monitor on Kubernetes: its alert channels reach the pod (secret references only), and its
incident state goes to a writable emptyDir, since the workspace is mounted read-only in the service; and
`kbrelease monitor`'s exit code is the same in the code, its help and the docs."""

from __future__ import annotations

import re
from pathlib import Path

from typer.testing import CliRunner

from deploy.rendering import by_kind
from kbrelease.cli import app
from kbrelease.cli.monitor import PROBLEMS_EXIT
from kbrelease.config.secrets import keys_for

DOCS = Path(__file__).resolve().parents[2] / "docs" / "usage.md"


def test_the_service_pod_gets_the_alert_secrets_and_a_writable_monitor_state(rendered: Path) -> None:
    (deployment,) = by_kind(rendered, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e for e in container["env"]}

    for key in ("KBRELEASE_ALERT_WEBHOOKS", "KBRELEASE_PAGERDUTY_ROUTING_KEY", "KBRELEASE_SMTP_PASSWORD"):
        assert key in keys_for("service")
        assert env[key]["valueFrom"]["secretKeyRef"] == {"name": "kbrelease-secrets", "key": key, "optional": True}
    state = env["KBRELEASE_MONITOR_STATE_DIR"]["value"]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    holder = max((p for p in mounts if state == p or state.startswith(p.rstrip("/") + "/")), key=len)
    assert not mounts[holder].get("readOnly"), f"{state} is under the read-only mount {holder}"
    assert mounts["/workspace"]["readOnly"] is True and not state.startswith("/workspace")
    volume = next(v for v in pod["volumes"] if v["name"] == mounts[holder]["name"])
    assert "emptyDir" in volume
    assert container["securityContext"]["readOnlyRootFilesystem"] is True  # so the state must live on a volume


def test_the_monitor_exit_code_agrees_in_code_help_and_docs() -> None:
    help_text = CliRunner().invoke(app, ["monitor", "--help"], terminal_width=400).output
    docs = DOCS.read_text(encoding="utf-8")

    assert PROBLEMS_EXIT == 6
    assert re.search(rf"\b{PROBLEMS_EXIT} when one found a problem", " ".join(help_text.split()))
    assert f"| {PROBLEMS_EXIT} | `monitor` found a problem |" in docs
    assert f"exit code {PROBLEMS_EXIT} on problems" in docs
    assert not re.search(r"monitor[^\n]*\b4 when one found a problem|4 when one found a problem", docs)
