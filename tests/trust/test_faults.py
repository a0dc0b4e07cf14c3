"""Fault injection: kill -9 at the step boundaries of publish, switch, gc and import, a store restart under readers.

Each fault runs the real CLI in a subprocess with ``KBRELEASE_FAULT=after:<step>``
(:mod:`kbrelease.trust.faults`: the process SIGKILLs itself there), then runs
the next command and checks that the state is repaired and live is untouched.
Leases are short (``KBRELEASE_LOCK_LEASE_S``) so that the next command takes
over the dead holder's lock within seconds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kbrelease import KbRelease, load_config
from kbrelease.errors import ReleaseError

from .kbproc import cli, cli_env, killed, text_corpus, write_config

pytestmark = pytest.mark.slow
LEASE = "2"


@pytest.fixture(autouse=True)
def short_lease(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KBRELEASE_LOCK_LEASE_S", LEASE)


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return text_corpus(tmp_path / "corpus")


@pytest.fixture
def config(tmp_path: Path, corpus: Path, isolated_milvus: dict[str, str]) -> Path:
    prod_registry = isolated_milvus["milvus.registry_db"] + "_prod"  # environment prod registers its releases elsewhere
    return write_config(tmp_path, corpus, isolated_milvus, extra=f"environments:\n  default: {{}}\n  prod:\n    registry_db: {prod_registry}\n")


@pytest.fixture
def kb(config: Path, text_embedder: Any) -> Any:
    with KbRelease(load_config(config, env={}), text_embedder=text_embedder) as kb:
        yield kb


def _edit(corpus: Path, n: int) -> None:
    (corpus / f"new-{n}.md").write_text(f"# Note {n}\n\nThe canteen opens at {n} o'clock on Mondays.\n", encoding="utf-8")


def _releases(kb: Any, n: int, corpus: Path) -> None:
    """Publish v1..vn (each a new data index); vn live, v(n-1) previous."""
    for i in range(n):
        if i:
            _edit(corpus, i)
        kb.publish()


def _faulted(config: Path, fault: str, *args: str) -> None:
    result = cli(config, *args, env=cli_env(KBRELEASE_FAULT=fault))
    assert killed(result), f"{fault}: exit {result.returncode}: {result.stderr}"


def _states(kb: Any) -> dict[str, str]:
    return {r["name"]: r["state"] for r in kb.status()["releases"]}


# --- gc ------------------------------------------------------------------------------------


def test_gc_killed_after_marking_is_finished_by_the_next_command_and_live_is_untouched(kb: Any, config: Path, corpus: Path) -> None:
    _releases(kb, 3, corpus)
    v1 = kb.release("v1")
    _faulted(config, "after:gc.mark", "gc", "--keep", "1")
    assert kb.release("v1").state == "dropping" and v1.database in kb.store.databases()
    with pytest.raises(ReleaseError, match="cannot be searched"):
        kb.search("vpn", release="v1")

    refused = cli(config, "switch", "v1")  # any locking command finishes the drop first
    assert refused.returncode == 1 and "is dropped" in refused.stderr
    assert kb.release("v1").state == "dropped" and v1.database not in kb.store.databases()
    assert kb.status()["live"] == "v3" and kb.status()["previous"] == "v2"


def test_gc_killed_after_the_drop_never_leaves_a_verified_release_without_its_database(kb: Any, config: Path, corpus: Path) -> None:
    """Fault 7 of issue 11: the record stayed `verified` with no database; switch accepted it and every search failed."""
    _releases(kb, 3, corpus)
    v1 = kb.release("v1")
    _faulted(config, "after:gc.drop", "gc", "--keep", "1")
    assert v1.database not in kb.store.databases()
    assert kb.release("v1").state == "dropping"  # never `verified` without its database
    with pytest.raises(ReleaseError, match="cannot be searched"):
        kb.search("vpn", release="v1")
    result = cli(config, "gc", "--keep", "1", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["finished"] == ["v1"]
    assert _states(kb) == {"v1": "dropped", "v2": "retired", "v3": "live"}
    assert kb.search("vpn")[0].release == "v3"


def test_switch_refuses_a_release_whose_database_or_collection_is_missing(kb: Any, config: Path, corpus: Path) -> None:
    _releases(kb, 3, corpus)
    v1, v2 = kb.release("v1"), kb.release("v2")
    kb.store.drop_database(v1.database)  # what a kill -9 in the old gc left: `verified`, no database
    result = cli(config, "switch", "v1")
    assert result.returncode == 1 and f"database {v1.database} missing" in result.stderr
    kb.store.client(v2.database).drop_collection("docs")
    with pytest.raises(ReleaseError, match=f"collection {v2.database}/docs missing"):
        kb.rollback()  # previous is v2
    assert kb.status()["live"] == "v3"


def test_gc_reaps_interrupted_builds_and_orphan_databases_but_not_other_environments(kb: Any, config: Path, corpus: Path) -> None:
    """Fault 11 of issue 11: kill -9 during a build left kb_vN that gc never dropped."""
    _releases(kb, 1, corpus)
    _edit(corpus, 1)
    _faulted(config, "after:build.source", "publish")
    v2 = kb.release("v2")
    assert v2.state == "building" and v2.database in kb.store.databases()
    assert kb.status()["live"] == "v1"
    prefix = v2.database[: -len("v2")]
    kb.store.ensure_database(prefix + "v9")  # a build killed before it wrote its record
    kb.store.ensure_database(prefix + "prod_v1")  # environment prod's, registered elsewhere

    result = cli(config, "gc", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["interrupted"] == ["v2"] and report["orphans"] == [prefix + "v9"] and report["dropped"] == []
    databases = kb.store.databases()
    assert v2.database not in databases and prefix + "v9" not in databases
    assert prefix + "prod_v1" in databases and kb.registry.db in databases
    assert _states(kb) == {"v1": "live", "v2": "dropped"}
    assert "interrupted" in (kb.release("v2").error or "")
    assert kb.publish().release.name == "v3"  # a new name; the dropped one is never reused
    assert kb.status()["live"] == "v3"


def test_publish_killed_right_after_begin_is_reaped_too(kb: Any, config: Path, corpus: Path) -> None:
    _releases(kb, 1, corpus)
    _edit(corpus, 1)
    _faulted(config, "after:build.begin", "publish")
    assert kb.release("v2").state == "building"
    assert kb.gc() == ["v2"]
    assert _states(kb) == {"v1": "live", "v2": "dropped"}


def test_gc_leaves_a_prepared_parallel_build_alone(kb: Any, corpus: Path) -> None:
    _releases(kb, 1, corpus)
    _edit(corpus, 1)
    kb.sync()
    plan = kb.prepare_build()
    assert kb.gc() == []
    assert kb.release(plan.release).state == "building" and plan.database in kb.store.databases()
    kb.build_shard(plan.release, "docs")
    assert kb.finalize_build(plan.release).state == "built"


# --- switch and publish -------------------------------------------------------------------


def test_a_switch_killed_after_the_pointer_write_still_shows_retired_later(kb: Any, config: Path, corpus: Path) -> None:
    """Fault 11 of issue 11: a release killed during switch showed `verified` instead of `retired` afterwards."""
    _releases(kb, 1, corpus)
    _edit(corpus, 1)
    kb.build()
    kb.verify("v2")
    _faulted(config, "after:switch.pointer", "switch", "v2")
    assert kb.status()["live"] == "v2" and kb.release("v2").went_live_at is None
    result = cli(config, "rollback")
    assert result.returncode == 0, result.stderr
    assert _states(kb) == {"v1": "live", "v2": "retired"}
    assert kb.release("v2").went_live_at  # repaired by the next switch


def test_publish_killed_after_verify_leaves_live_untouched_and_the_release_switchable(kb: Any, config: Path, corpus: Path) -> None:
    _releases(kb, 1, corpus)
    _edit(corpus, 1)
    _faulted(config, "after:publish.verify", "publish")
    assert _states(kb) == {"v1": "live", "v2": "verified"}
    assert kb.search("vpn")[0].release == "v1"
    result = cli(config, "switch", "v2")
    assert result.returncode == 0, result.stderr
    assert kb.status()["live"] == "v2" and kb.status()["previous"] == "v1"


def test_publish_killed_after_build_resumes_under_the_same_name(kb: Any, config: Path, corpus: Path) -> None:
    _releases(kb, 1, corpus)
    _edit(corpus, 1)
    _faulted(config, "after:publish.build", "publish")
    assert _states(kb) == {"v1": "live", "v2": "built"}
    result = cli(config, "publish", "--release", "v3")
    assert result.returncode == 0, result.stderr
    assert kb.status()["live"] == "v3"


# --- import ---------------------------------------------------------------------------------


def test_an_import_killed_holding_the_lock_is_taken_over_after_the_lease(kb: Any, config: Path, corpus: Path, tmp_path: Path) -> None:
    _releases(kb, 1, corpus)
    package = tmp_path / "v1.tar"
    kb.package_export("v1", package)
    _faulted(config, "after:import.lock", "-e", "prod", "package", "import", str(package), "--switch")
    result = cli(config, "-e", "prod", "package", "import", str(package), "--switch")
    assert result.returncode == 0, result.stderr
    prod = KbRelease(load_config(config, env={}, overrides={"environment": "prod"}))
    try:
        assert prod.status()["live"] == "v1" and prod.registry.lock_claims() == []
    finally:
        prod.close()
    assert kb.status()["live"] == "v1"


# --- store restart --------------------------------------------------------------------------


def test_verify_export_and_monitor_work_after_the_embedded_store_restarts(tmp_path: Path, corpus: Path, text_embedder: Any) -> None:
    """Fault 10 of issue 11: after a Lite restart, verify/export/monitor failed with "collection released"."""
    from kbrelease.store.lite import stop_server

    cfg = load_config(write_config(tmp_path, corpus, None), env={})
    try:
        with KbRelease(cfg, text_embedder=text_embedder) as kb:
            kb.publish()
        assert stop_server(cfg.workspace / "milvus")
        with KbRelease(cfg, text_embedder=text_embedder) as kb:  # starts the server again: every collection is released
            assert kb.verify("v1").state == "verified"
            info = kb.package_export("v1", tmp_path / "v1.tar")
            assert info.rows > 0
            report = kb.monitor(alerts=False)
            completeness = [r for r in report.results if r.check == "completeness"]
            assert completeness and all(r.status == "ok" for r in completeness), completeness
        assert stop_server(cfg.workspace / "milvus")
        with KbRelease(cfg, text_embedder=text_embedder) as kb:
            assert kb.search("vpn")[0].release == "v1"
    finally:
        stop_server(cfg.workspace / "milvus")


def test_the_monitor_alerts_when_it_cannot_evaluate_completeness(kb: Any, corpus: Path) -> None:
    _releases(kb, 1, corpus)
    kb.store.client(kb.release("v1").database).drop_collection("docs")
    report = kb.monitor()
    result = next(r for r in report.results if r.key == "completeness:docs")
    assert result.status == "problem" and result.message.startswith("cannot evaluate")
    assert "completeness:docs" in report.open_incidents
