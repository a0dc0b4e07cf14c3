"""The rendered Argo workflow run on one machine (`kbrelease argo run-local`) against one `kbrelease publish`.

On one machine the workflow can only cost more than `publish`: every step is
a new process that imports kbrelease and loads its model, which a cluster
pays once per pod on separate nodes in exchange for running shards side by
side. This measures that price: wall seconds of both, per-step seconds of
the workflow, and the fixed start-up cost of one step.

    python bench/workflow_bench.py --corpus examples/corpus --shard-files 20 --parallelism 2 --json-out /tmp/kbres/workflow.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import (  # bench/ is the script's folder, first on sys.path
    EXAMPLE_CORPUS,
    add_smoke,
    emit,
    milvus,
    smoke_corpus,
    source_entries,
    src_env,
    write_config,
)

from kbrelease import KbRelease, load_config
from kbrelease.deploy.local_run import LocalRunner


def _config(folder: Path, corpus: Path, uri: str, env: str, deploy: dict[str, object], prefix: str) -> Path:
    images = corpus / "images"
    milvus_cfg = {"uri": uri, "db_prefix": f"{prefix}{env}_", "registry_db": f"{prefix}{env}_registry"} if prefix else {"uri": uri}
    data = {"environment": env, "sources": source_entries(corpus / "text", images if images.is_dir() else None), "milvus": milvus_cfg, "deploy": deploy}
    return write_config(folder, data)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=EXAMPLE_CORPUS, help="folder with text/ and images/ (images/ is optional)")
    parser.add_argument("--shard-files", type=int, default=20)
    parser.add_argument("--parallelism", type=int, default=2)
    parser.add_argument("--json-out", type=Path)
    parser.add_argument("--milvus-uri", default=None, help="http://host:port of a running Milvus (default: a fresh embedded Lite server)")
    parser.add_argument("--db-prefix", default="", help="put before every database name (to share a Milvus)")
    add_smoke(parser)
    args = parser.parse_args()
    out: dict[str, object] = {"load_average": os.getloadavg(), "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp_name, milvus(Path(tmp_name) / "lite", args.milvus_uri) as (uri, _):
        tmp = Path(tmp_name)
        if args.smoke:  # text only, one shard: every step still runs as its own process
            args.corpus, args.shard_files, args.parallelism = smoke_corpus(tmp / "corpus", images=0), 100, 1
            args.db_prefix = f"smoke_wf_{os.getpid()}_"
        args.corpus = args.corpus.resolve()
        env = src_env()
        # One `kbrelease publish` process.
        publish_cfg = _config(tmp / "publish", args.corpus, uri, "publish", {}, args.db_prefix)
        started = time.monotonic()
        command = [sys.executable, "-m", "kbrelease.cli", "-c", str(publish_cfg), "publish", "--release", "v1", "--json"]
        done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
        if done.returncode != 0:
            raise SystemExit(f"publish failed ({done.returncode}): {done.stderr[-2000:]}")
        out["publish_seconds"] = round(time.monotonic() - started, 1)
        # The start-up cost of one step: a process that imports kbrelease and reads the config.
        starts = []
        for _ in range(1 if args.smoke else 3):
            t0 = time.monotonic()
            subprocess.run([sys.executable, "-m", "kbrelease.cli", "-c", str(publish_cfg), "list", "--json"], check=True, capture_output=True, env=env)
            starts.append(time.monotonic() - t0)
        out["step_startup_seconds_median"] = round(statistics.median(starts), 2)
        # The rendered workflow, step by step.
        argo_cfg = _config(tmp / "argo", args.corpus, uri, "argo", {"shard_files": args.shard_files, "parallelism": args.parallelism}, args.db_prefix)
        folder = tmp / "k8s"
        KbRelease(load_config(argo_cfg, env={})).render_kubernetes(folder)
        started = time.monotonic()
        info = LocalRunner(folder, tmp / "volume", {"database-name": "v1"}, env=env).run()
        out["workflow_seconds"] = round(time.monotonic() - started, 1)
        out["workflow_succeeded"] = info.succeeded
        out["steps"] = {s.node: s.seconds for s in info.steps}
        out["shard_files"] = args.shard_files
        out["parallelism"] = args.parallelism
    emit(out, args.json_out)


if __name__ == "__main__":
    main()
