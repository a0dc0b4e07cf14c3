"""Operating a deployment: three `kbrelease serve` replicas behind nginx, with API and admin tokens.

`kbrelease loadtest` with switches under load, every metric the shipped dashboard and alert rules
use exported by a running replica, `kbrelease check --service` (token, one real search per source),
and idle retired releases unloaded from Milvus memory, reloaded for a pinned search.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from kbrelease.cli import app

from .conftest import ADMIN_TOKEN, API_TOKEN, copy_corpus, isolated, make_client, wait_ready
from .procs import NginxServer, ServeProcess
from .test_replicas import text_only_config

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
MONITORING = REPO / "deploy" / "monitoring"
TOKENS = {"KBRELEASE_ADMIN_TOKEN": ADMIN_TOKEN, "KBRELEASE_API_TOKEN": API_TOKEN}
READ = {"Authorization": f"Bearer {API_TOKEN}"}


@dataclass
class Deployment:
    config: Path
    kb: Any
    replicas: list[ServeProcess]
    nginx: NginxServer


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory, lite_server: str, text_embedder: Any) -> Iterator[Deployment]:
    """v1, v2, v3 published (v3 live, v2 previous, v1 retired); three replicas with tokens behind nginx."""
    from kbrelease import KbRelease, load_config

    folder = tmp_path_factory.mktemp("operations")
    corpus = copy_corpus(folder / "corpus", image_folders=())
    config = text_only_config(folder, corpus, isolated(lite_server))
    replicas = [ServeProcess(config, env=TOKENS) for _ in range(3)]
    with KbRelease(load_config(config, env={}), text_embedder=text_embedder) as kb:
        for n in range(3):
            (corpus / "text" / f"note-{n}.md").write_text(f"# Note {n}\n\nThe canteen menu changes on day {n}.\n", encoding="utf-8")
            kb.publish()
        try:
            for replica in replicas:
                replica.start(ready=False)
            for replica in replicas:
                replica.wait("/readyz", 300)
            with NginxServer(folder / "nginx", [f"127.0.0.1:{r.port}" for r in replicas]) as nginx:
                yield Deployment(config, kb, replicas, nginx)
        finally:
            for replica in replicas:
                replica.stop()


def test_loadtest_with_a_switch_every_second_reports_latency_errors_and_the_releases_that_answered(deployment: Deployment) -> None:
    from kbrelease.service.loadtest import run_loadtest

    report = run_loadtest(deployment.nginx.uri, duration=4, concurrency=4, token=API_TOKEN, switch_every=1.3, admin_token=ADMIN_TOKEN, k=3)

    print(f"\n{report}")
    assert report.stopped_by == "duration" and report.requests == len(report.outcomes) > 20
    assert report.errors == {} and report.ok == report.requests
    assert [(s.release, s.status) for s in report.switches] == [("v2", 200), ("v3", 200), ("v2", 200)]
    assert set(report.releases) == {"v2", "v3"}
    assert sum(report.releases.values()) == report.ok
    assert report.p50_ms <= report.p95_ms <= report.p99_ms <= report.max_ms
    assert report.windows[0]["releases"].keys() == {"v3"}  # before the first switch only the live release answers
    assert "v2" in report.windows[1]["releases"]  # ... and the switched-to one after it
    deadline = time.monotonic() + 10  # switched back at the end; every replica follows within the refresh time
    while {r.get("/api/v1/live", headers=READ).json()["live"] for r in deployment.replicas} != {"v3"} and time.monotonic() < deadline:
        time.sleep(0.2)
    live = deployment.kb.registry.pointer()
    assert (live.live, live.previous) == ("v3", "v2")
    assert {r.get("/api/v1/live", headers=READ).json()["live"] for r in deployment.replicas} == {"v3"}


def test_the_loadtest_command_is_bounded_by_its_request_count_and_says_what_the_401s_were(deployment: Deployment, tmp_path: Path) -> None:
    queries = tmp_path / "queries.txt"
    queries.write_text("# one per line\nvpn from home\n\nfire drill\n", encoding="utf-8")
    runner = CliRunner()

    ok = runner.invoke(
        app, ["loadtest", deployment.nginx.uri, "--duration", "20s", "--max-requests", "30", "-n", "3", "--queries", str(queries), "--json"], env=TOKENS
    )
    unauthorized = runner.invoke(app, ["loadtest", deployment.nginx.uri, "--duration", "1s", "-n", "1"], env={})
    bad = runner.invoke(app, ["loadtest", deployment.nginx.uri, "--duration", "soon"])

    assert ok.exit_code == 0, ok.output
    data = json.loads(ok.stdout)
    assert (data["requests"], data["ok"], data["stopped_by"], data["releases"]) == (30, 30, "max_requests", {"v3": 30})
    assert data["duration_s"] < 20
    assert unauthorized.exit_code == 0, unauthorized.output
    assert "errors by status: 401:" in unauthorized.stdout and "answers by release: none" in unauthorized.stdout
    assert bad.exit_code == 2 and "--duration: 'soon' is not a duration; write e.g. 30s" in bad.output


def _exported(metrics_text: str) -> set[str]:
    """Every series name a /metrics page offers: its samples, and the names its TYPE lines announce."""
    names: set[str] = set()
    for line in metrics_text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            names.add(name)
            if kind == "histogram":
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def _used_by_rules_and_dashboards() -> dict[str, set[str]]:
    rules = yaml.safe_load((MONITORING / "kbrelease-alerts.yml").read_text(encoding="utf-8"))
    exprs = {"alert rules": [r["expr"] for g in rules["groups"] for r in g["rules"]]}
    for path in sorted((MONITORING / "grafana" / "dashboards").glob("*.json")):
        dashboard = json.loads(path.read_text(encoding="utf-8"))
        exprs[path.name] = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    return {where: {m for e in found for m in re.findall(r"\bkbrelease_[a-z0-9_]+\b", e)} for where, found in exprs.items()}


def test_every_metric_of_the_shipped_dashboard_and_alert_rules_is_exported_by_a_running_replica(deployment: Deployment) -> None:
    page = deployment.replicas[1].get("/metrics")
    assert page.status_code == 200
    exported = _exported(page.text)

    used = _used_by_rules_and_dashboards()
    assert set(used) == {"alert rules", "kbrelease.json"} and all(used.values())
    for where, names in used.items():
        assert names - exported == set(), f"{where} uses metrics no replica exports"
    # and the other way round: what a replica exports is on the dashboard (the _created series are client bookkeeping)
    dashboard_bases = {re.sub(r"_(bucket|sum|count)$", "", n) for n in used["kbrelease.json"]}
    exported_bases = {re.sub(r"_(bucket|sum|count)$", "", n) for n in exported if n.startswith("kbrelease_") and not n.endswith("_created")}
    assert exported_bases - dashboard_bases == set()
    assert "kbrelease_store_up 1.0" in page.text


def test_check_service_sends_the_api_token_and_finds_hits_in_every_source(deployment: Deployment) -> None:
    runner = CliRunner()
    url = deployment.nginx.uri

    good = runner.invoke(app, ["-c", str(deployment.config), "check", "--service", url, "--json"], env={"KBRELEASE_API_TOKEN": API_TOKEN})
    no_token = runner.invoke(app, ["-c", str(deployment.config), "check", "--service", url], env={})

    assert good.exit_code == 0, good.output
    findings = {f["subject"]: f for f in json.loads(good.stdout)["findings"]}
    assert findings[f"service {url}"]["level"] == "ok"
    smoke = findings[f"service {url} source docs"]
    assert smoke["level"] == "ok" and re.fullmatch(r"text search: 1 hit\(s\) from release v3 in [\d.]+ ms", smoke["message"]), smoke
    assert no_token.exit_code == 5
    assert "GET /api/v1/info answered HTTP 401: set KBRELEASE_API_TOKEN to the service's read token" in no_token.stdout
    assert API_TOKEN not in good.output + no_token.output


def test_retired_releases_are_unloaded_after_the_grace_period_and_a_pinned_search_loads_one_again(deployment: Deployment) -> None:
    kb = deployment.kb
    v1, v2, v3 = (kb.registry.require(n) for n in ("v1", "v2", "v3"))
    runner = CliRunner()

    def states() -> dict[str, str]:
        return {r.name: kb.store.load_state(r.database, r.sources["docs"].collection) for r in (v1, v2, v3)}

    assert states() == {"v1": "Loaded", "v2": "Loaded", "v3": "Loaded"}  # today: everything stays loaded until gc
    with make_client(kb, api=API_TOKEN, unload_after_seconds=1.0) as client:
        wait_ready(client)
        deadline = time.monotonic() + 20
        while states()["v1"] != "NotLoad" and time.monotonic() < deadline:
            time.sleep(0.2)
        assert states() == {"v1": "NotLoad", "v2": "Loaded", "v3": "Loaded"}  # live and previous stay
        status = runner.invoke(app, ["-c", str(deployment.config), "store", "status", "--json"])
        assert status.exit_code == 0, status.output
        listed = {(c["release"], c["collection"]): c["state"] for c in json.loads(status.stdout)["collections"]}
        assert listed == {("v1", "docs"): "NotLoad", ("v2", "docs"): "Loaded", ("v3", "docs"): "Loaded"}

        metrics = client.get("/metrics").text
        assert re.search(r"^kbrelease_release_unloads_total 1\.0$", metrics, re.MULTILINE), metrics

        assert client.get("/api/v1/search", params={"q": "canteen menu", "release": "v1"}).status_code == 401
        pinned = client.get("/api/v1/search", params={"q": "canteen menu", "release": "v1", "k": 1}, headers=READ)
        assert pinned.status_code == 200 and pinned.headers["X-KB-Release"] == "v1" and pinned.json()["hits"]
        assert states()["v1"] == "Loaded"
