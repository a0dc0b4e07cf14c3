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
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from kbrelease import KbRelease, load_config  # noqa: E402
from kbrelease.deploy.local_run import LocalRunner  # noqa: E402

from servers import MilvusLiteServer  # noqa: E402


def _config(folder: Path, corpus: Path, uri: str, env: str, deploy: dict[str, object]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {
        "workspace": str(folder / "ws"),
        "environment": env,
        "sources": [
            {"name": "docs", "path": str(corpus / "text"), "modality": "text"},
            {"name": "pictures", "path": str(corpus / "images"), "modality": "image"},
        ],
        "milvus": {"uri": uri},
        "deploy": deploy,
    }
    path = folder / "kbrelease.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=REPO / "examples" / "corpus", help="folder with text/ and images/")
    parser.add_argument("--shard-files", type=int, default=20)
    parser.add_argument("--parallelism", type=int, default=2)
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    args.corpus = args.corpus.resolve()
    out: dict[str, object] = {"load_average": os.getloadavg(), "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp_name, MilvusLiteServer(Path(tmp_name) / "lite") as lite:
        tmp = Path(tmp_name)
        env = dict(os.environ)
        # One `kbrelease publish` process.
        publish_cfg = _config(tmp / "publish", args.corpus, lite.uri, "publish", {})
        started = time.monotonic()
        command = [sys.executable, "-m", "kbrelease.cli", "-c", str(publish_cfg), "publish", "--release", "v1", "--json"]
        done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
        if done.returncode != 0:
            raise SystemExit(f"publish failed ({done.returncode}): {done.stderr[-2000:]}")
        out["publish_seconds"] = round(time.monotonic() - started, 1)
        # The start-up cost of one step: a process that imports kbrelease and reads the config.
        starts = []
        for _ in range(3):
            t0 = time.monotonic()
            subprocess.run([sys.executable, "-m", "kbrelease.cli", "-c", str(publish_cfg), "list", "--json"], check=True, capture_output=True, env=env)
            starts.append(time.monotonic() - t0)
        out["step_startup_seconds_median"] = round(statistics.median(starts), 2)
        # The rendered workflow, step by step.
        argo_cfg = _config(tmp / "argo", args.corpus, lite.uri, "argo", {"shard_files": args.shard_files, "parallelism": args.parallelism})
        folder = tmp / "k8s"
        KbRelease(load_config(argo_cfg, env={})).render_kubernetes(folder)
        started = time.monotonic()
        info = LocalRunner(folder, tmp / "volume", {"database-name": "v1"}, env=env).run()
        out["workflow_seconds"] = round(time.monotonic() - started, 1)
        out["workflow_succeeded"] = info.succeeded
        out["steps"] = {s.node: s.seconds for s in info.steps}
        out["shard_files"] = args.shard_files
        out["parallelism"] = args.parallelism
    print(json.dumps(out, indent=2))
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
