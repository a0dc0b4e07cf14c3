"""`kbrelease argo run-local`: the rendered workflow, run step by step, publishes what `kbrelease publish` publishes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from kbrelease import KbRelease, load_config
from kbrelease.deploy.local_run import LocalRunner, StepRun, should_retry

from helpers import write_config

QUERIES = ["how do I connect to the VPN from home?", "when is the fire drill?"]
ROW_FIELDS = ["id", "file_id", "file", "chunk_index", "n_chunks", "start", "heading", "text", "checksum", "vector"]


def _rows(kb: KbRelease, release: str, source: str) -> dict[str, dict[str, Any]]:
    record = kb.release(release)
    collection = record.sources[source].collection
    rows = kb.store.client(record.database).query(collection, filter="", output_fields=ROW_FIELDS, limit=10_000)
    return {r["id"]: dict(r) for r in rows}


@pytest.mark.slow
def test_rendered_workflow_run_locally_publishes_the_same_release_as_publish(
    tmp_path: Path, corpus: Path, isolated_milvus: dict[str, str], text_embedder: Any, image_embedder: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    milvus = {"uri": isolated_milvus["milvus.uri"], "db_prefix": isolated_milvus["milvus.db_prefix"], "registry_db": isolated_milvus["milvus.registry_db"]}
    # The reference: one process, `kbrelease publish`.
    (tmp_path / "local").mkdir()
    local_cfg = load_config(write_config(tmp_path / "local", corpus, yaml.safe_dump({"milvus": milvus})), env={})
    local = KbRelease(local_cfg, text_embedder=text_embedder, image_embedder=image_embedder)
    local.publish(release="v1")

    # The workflow: its own environment (own live pointer, own databases) on the same Milvus,
    # 2 shards per source, every step a separate `kbrelease` process.
    (tmp_path / "argo").mkdir()
    deploy = {"shard_files": 3, "parallelism": 3, "retry": {"backoff": "1s"}}
    argo_yaml = write_config(tmp_path / "argo", corpus, yaml.safe_dump({"milvus": milvus, "environment": "argo", "deploy": deploy}))
    argo_cfg = load_config(argo_yaml, env={})
    folder = tmp_path / "k8s"
    KbRelease(argo_cfg).render_kubernetes(folder)

    # Fault injection: the first attempt of one shard meets an unreachable Milvus (a transient error, exit 75).
    real_attempt = LocalRunner._attempt
    from servers import free_port

    def flaky(self: LocalRunner, run: StepRun, argv: list[str], env: dict[str, str], cwd: Path, timeout: float | None = None) -> tuple[int, str]:
        if run.node == "build-docs(0:1/2)" and run.attempts == 1:
            env = env | {"MILVUS_URI": f"http://127.0.0.1:{free_port()}"}
        return real_attempt(self, run, argv, env, cwd, timeout)

    monkeypatch.setattr(LocalRunner, "_attempt", flaky)
    env = dict(os.environ, OMP_NUM_THREADS="1")  # five model processes share two cores
    info = LocalRunner(folder, tmp_path / "volume", {"database-name": "v1"}, env=env).run()

    assert info.succeeded, str(info)
    nodes = {s.node: s for s in info.steps}
    assert {n for n in nodes if n.startswith("build-")} == {"build-docs(0:1/2)", "build-docs(1:2/2)", "build-pictures(0:1/2)", "build-pictures(1:2/2)"}
    assert (nodes["build-docs(0:1/2)"].attempts, nodes["build-docs(0:1/2)"].exit_code) == (2, 0)

    argo = KbRelease(argo_cfg, text_embedder=text_embedder, image_embedder=image_embedder)
    assert argo.status()["live"] == "v1"
    mine, theirs = local.release("v1"), argo.release("v1")
    assert mine.database != theirs.database
    for source in ("docs", "pictures"):
        a, b = vars(mine.sources[source]), vars(theirs.sources[source])
        assert a == b, source
        rows_a, rows_b = _rows(local, "v1", source), _rows(argo, "v1", source)
        assert sorted(rows_a) == sorted(rows_b)
        for key, row in rows_a.items():
            other = rows_b[key]
            assert {k: v for k, v in row.items() if k != "vector"} == {k: v for k, v in other.items() if k != "vector"}
            assert np.allclose(row["vector"], other["vector"], atol=1e-5)
    for query in QUERIES:
        assert [(h.file, h.heading) for h in local.search(query, k=3)] == [(h.file, h.heading) for h in argo.search(query, k=3)]
    image = next((corpus / "images").rglob("*.png"))
    assert [h.file for h in local.search_image(image, k=3)] == [h.file for h in argo.search_image(image, k=3)]
    local.close()
    argo.close()


def _template(tmp_path: Path, tasks: list[dict[str, Any]], templates: list[dict[str, Any]]) -> Path:
    folder = tmp_path / "wf"
    folder.mkdir()
    doc = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "WorkflowTemplate",
        "metadata": {"name": "tiny"},
        "spec": {"entrypoint": "main", "templates": [*templates, {"name": "main", "dag": {"tasks": tasks}}]},
    }
    (folder / "wf.yaml").write_text(yaml.safe_dump(doc), encoding="utf-8")
    return folder


def _kbrelease(name: str, args: list[str], retry: dict[str, Any] | None = None) -> dict[str, Any]:
    t: dict[str, Any] = {"name": name, "container": {"image": "kbrelease", "command": ["kbrelease"], "args": args}}
    if retry:
        t["retryStrategy"] = retry
    return t


def test_an_approval_step_stops_the_run_unless_approved(tmp_path: Path) -> None:
    folder = _template(
        tmp_path,
        [{"name": "a", "template": "ok"}, {"name": "approve", "template": "approve", "depends": "a"}, {"name": "b", "template": "ok", "depends": "approve"}],
        [_kbrelease("ok", ["--help"]), {"name": "approve", "suspend": {}}],
    )

    held = LocalRunner(folder, tmp_path / "ws").run()
    passed = LocalRunner(folder, tmp_path / "ws", approve=True).run()

    assert [(s.node, s.status) for s in held.steps] == [("a", "Succeeded"), ("approve", "Suspended"), ("b", "Skipped")]
    assert not held.succeeded
    assert [s.status for s in passed.steps] == ["Succeeded"] * 3


def test_a_permanent_failure_is_not_retried_and_stops_what_depends_on_it(tmp_path: Path) -> None:
    retry = {"limit": 3, "retryPolicy": "Always", "expression": 'lastRetry.status == "Error" || asInt(lastRetry.exitCode) == 75', "backoff": {"duration": "1s"}}
    folder = _template(
        tmp_path,
        [{"name": "bad", "template": "bad"}, {"name": "after", "template": "ok", "depends": "bad"}],
        [_kbrelease("bad", ["no-such-command"], retry), _kbrelease("ok", ["--help"])],
    )

    info = LocalRunner(folder, tmp_path / "ws").run()

    bad = info.steps[0]
    assert (bad.node, bad.status, bad.exit_code, bad.attempts) == ("bad", "Failed", 2, 1)
    assert "No such command" in Path(bad.log).read_text(encoding="utf-8")
    assert (info.steps[1].node, info.steps[1].status) == ("after", "Skipped")


def test_a_step_past_its_timeout_is_killed_and_fails(tmp_path: Path) -> None:
    slow = _kbrelease("slow", ["--help"])
    slow["timeout"] = "1ms"  # no process starts that fast
    folder = _template(tmp_path, [{"name": "slow", "template": "slow"}], [slow])

    info = LocalRunner(folder, tmp_path / "ws").run()

    (step,) = info.steps
    assert (step.status, step.exit_code) == ("Failed", 124)
    assert "exceeded its timeout" in Path(step.log).read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("policy", "status", "code", "expected"),
    [
        ("Always", "Failed", 75, True),  # transient kbrelease error
        ("Always", "Error", 137, True),  # the pod was lost
        ("Always", "Failed", 1, False),  # a permanent error fails the same way again
        ("Always", "Failed", 3, False),  # verification failed
        ("OnError", "Failed", 75, False),
    ],
)
def test_retry_decisions_follow_the_rendered_expression(policy: str, status: str, code: int, expected: bool) -> None:
    strategy = {"retryPolicy": policy, "expression": 'lastRetry.status == "Error" || asInt(lastRetry.exitCode) == 75'}

    assert should_retry(strategy, status, code) is expected
