"""kill -9 during an import: the release is never live, and rerunning the import finishes it with no duplicate rows."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from kbrelease import KbRelease, ReleaseError, load_config
from synthetic import make_release

from .support import MakeTarget

pytestmark = pytest.mark.slow
ROWS = 6_000


def test_a_killed_import_never_goes_live_and_a_rerun_finishes_it_without_duplicates(
    make_target: MakeTarget, lite_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The killed import holds the environment's lease on the server: a short lease lets the rerun take it over soon.
    monkeypatch.setenv("KBRELEASE_LOCK_LEASE_S", "3")
    dev = make_target("dev", models=False)
    make_release(dev, "v1", files=ROWS // 10, chunks_per_file=10, seal=False)
    package = tmp_path / "v1.tar"
    dev.package_export("v1", package, part_mb=0.0625)  # ~40 rows per part: the import is long enough to be killed
    config = tmp_path / "prod.yaml"
    config.write_text(
        f"workspace: {tmp_path / 'prod-ws'}\ndefault_environment: prod\nenvironments:\n"
        f"  prod:\n    milvus_uri: {lite_server}\n    db_prefix: killed_\n    registry_db: killed_registry\n",
        encoding="utf-8",
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "kbrelease.cli", "-c", str(config), "package", "import", str(package), "--switch"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    with KbRelease(load_config(config, env={})) as prod:
        loaded = _wait_for_rows(prod, proc)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()

        record = prod.release("v1")
        assert record.state == "importing"
        assert 0 < loaded < ROWS
        assert prod.status()["live"] is None
        assert {r["name"]: r["state"] for r in prod.status()["releases"]} == {"v1": "importing"}
        with pytest.raises(ReleaseError, match="only a verified release can go live"):
            prod.switch("v1")
        with pytest.raises(ReleaseError, match="its package import did not finish; run `kbrelease package import`"):
            prod.verify("v1")

        info = prod.package_import(package, switch=True)

        assert info.resumed and (info.state, info.live) == ("verified", "v1")
        assert prod.store.count(record.database, "docs") == ROWS  # ids are primary keys written by upsert: no duplicates
        ids = {row["id"] for batch in prod.store.iter_rows(record.database, "docs", ["id"]) for row in batch}
        assert len(ids) == ROWS


def _wait_for_rows(prod: Any, proc: subprocess.Popen[bytes], timeout: float = 120.0) -> int:
    """Rows loaded so far, once the import is under way and has loaded some (but, we hope, not all)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read().decode() if proc.stdout else ""
            pytest.fail(f"the import ended before it could be killed (exit {proc.returncode}): {out}")
        record = prod.registry.get("v1") if prod.registry.exists() else None
        ready = record is not None and record.state == "importing" and record.database in prod.store.databases()
        if ready and record is not None and "docs" in prod.store.collections(record.database):
            loaded = prod.store.count(record.database, "docs")
            if loaded >= 200:
                return int(loaded)
        time.sleep(0.05)
    pytest.fail("the import did not start loading rows in time")
