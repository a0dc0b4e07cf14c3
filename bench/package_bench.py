"""Release packages: export and import rates, package size per row, import vs. rebuilding from sources.

Part 1 (always): a synthetic verified release of ``--rows`` rows (384-d unit
vectors, ``--text-chars`` characters of text per row, 10 rows per file) in a
"dev" environment on its own embedded Milvus Lite server; then

* ``package export`` to a plain tar and to a zstd tar: seconds, rows/s, bytes per row;
* ``package import`` of the plain tar into "prod" on a second Lite server,
  timed by phase: the checking pass, loading rows, seal + verify;
* ``promote`` dev → prod (a third environment on the second server);
* with ``--server``, ``package import`` into a real Milvus 2.3.5 (``milvus-server``).

Part 2 (``--rebuild-text DIR``): a real release built from the text files in
DIR with the local all-MiniLM-L6-v2 (embedding cache off, model loaded before
timing), then exported and imported into a fresh environment: import seconds
against build + verify seconds for the same release.

    python bench/make_corpus.py --out /tmp/kbpkg --paragraphs 3000 --files 150 --images 0
    python bench/package_bench.py --rows 100000 --server --rebuild-text /tmp/kbpkg/text --json-out /tmp/kbres/package.json

The machine is shared: the load average is recorded before and after each step.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from kbrelease import KbRelease, load_config  # noqa: E402
from synthetic import make_release  # noqa: E402

from servers import MilvusLiteServer, MilvusServer  # noqa: E402


class Clock:
    """A Reporter that only remembers when each progress label started and finished."""

    def __init__(self) -> None:
        self.marks: dict[str, float] = {}

    def start(self, label: str, total: int | None, unit: str) -> None:
        self.marks.setdefault(f"{label}:start", time.monotonic())

    def advance(self, label: str, n: int = 1) -> None:
        pass

    def finish(self, label: str) -> None:
        self.marks[f"{label}:finish"] = time.monotonic()


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


@contextmanager
def step(results: dict[str, Any], name: str) -> Iterator[dict[str, Any]]:
    entry: dict[str, Any] = {"load_before": loadavg()}
    started = time.monotonic()
    yield entry
    entry["seconds"] = round(time.monotonic() - started, 2)
    entry["load_after"] = loadavg()
    entry["peak_rss_mb"] = peak_rss_mb()
    results[name] = entry
    print(f"{name}: {entry['seconds']} s (load {entry['load_after']})", flush=True)


def project(workspace: Path, uri: str, env: str, prefix: str, reporter: Any = None, **extra: Any) -> KbRelease:
    overrides = {"workspace": str(workspace), "milvus.uri": uri, "milvus.db_prefix": prefix, "milvus.registry_db": f"{prefix}registry", "environment": env}
    return KbRelease(load_config(None, env=extra.pop("environ", {}), overrides=overrides | extra), reporter)


def timed_import(kb: KbRelease, clock: Clock, package: Path, results: dict[str, Any], name: str, rows: int) -> None:
    """Import ``package`` and split the time: checking pass, loading rows, seal + verify."""
    with step(results, name) as entry:
        begin = time.monotonic()
        info = kb.package_import(package)
        done = time.monotonic()
    load_start, load_end = clock.marks["import rows:start"], clock.marks["import rows:finish"]
    entry["check_and_register_seconds"] = round(load_start - begin, 2)
    entry["load_seconds"] = round(load_end - load_start, 2)
    entry["load_rows_per_s"] = round(rows / (load_end - load_start))
    entry["seal_verify_seconds"] = round(done - load_end, 2)
    entry["rows_per_s"] = round(rows / (done - begin))
    entry["state"] = info.state


def synthetic(args: argparse.Namespace, tmp: Path, results: dict[str, Any], stack: ExitStack) -> None:
    src = stack.enter_context(MilvusLiteServer(tmp / "lite-dev"))
    dst = stack.enter_context(MilvusLiteServer(tmp / "lite-prod"))
    dev = stack.enter_context(project(tmp / "ws", src.uri, "dev", "bench_", Clock()))
    with step(results, "make synthetic release (setup, not a figure)"):
        make_release(dev, "v1", files=args.rows // 10, chunks_per_file=10, text_chars=args.text_chars)
    for label, compress in (("export plain", False), ("export zstd", True)):
        out = tmp / f"v1.tar{'.zst' if compress else ''}"
        with step(results, label) as entry:
            info = dev.package_export("v1", out, compress=compress)
        entry |= {"rows": info.rows, "parts": info.parts, "bytes": info.bytes, "bytes_per_row": round(info.bytes / info.rows)}
        entry["rows_per_s"] = round(info.rows / entry["seconds"])
    export_in_subprocess(tmp, src.uri, results)
    clock = Clock()
    prod = stack.enter_context(project(tmp / "ws-prod", dst.uri, "prod", "bench_", clock))
    timed_import(prod, clock, tmp / "v1.tar", results, "import lite → lite", args.rows)
    target = stack.enter_context(project(tmp / "ws-prod2", dst.uri, "prod2", "bench2_", Clock()))
    with step(results, "promote lite → lite") as entry:
        promoted = dev.promote("v1", target)
    entry |= {"rows_per_s": round(promoted.rows / entry_seconds(results, "promote lite → lite")), "state": promoted.state}
    if args.server:
        server = stack.enter_context(MilvusServer(tmp / "milvus-server"))
        clock = Clock()
        remote = stack.enter_context(project(tmp / "ws-server", server.uri, "prod", "bench_", clock, environ={"MILVUS_TOKEN": "root:Milvus"}))
        timed_import(remote, clock, tmp / "v1.tar", results, "import lite → server", args.rows)


def export_in_subprocess(tmp: Path, uri: str, results: dict[str, Any]) -> None:
    """``kbrelease package export`` as its own process: its peak RSS is the memory an export needs."""
    import subprocess

    config = tmp / "dev.yaml"
    config.write_text(
        f"workspace: {tmp / 'ws'}\ndefault_environment: dev\nenvironments:\n  dev: {{milvus_uri: '{uri}', db_prefix: bench_, registry_db: bench_registry}}\n",
        encoding="utf-8",
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    with step(results, "export plain (kbrelease CLI process)") as entry:
        subprocess.run([sys.executable, "-m", "kbrelease.cli", "-c", str(config), "package", "export", "v1", "-o", str(tmp / "cli.tar")], env=env, check=True)
    entry["cli_peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)
    (tmp / "cli.tar").unlink()


def entry_seconds(results: dict[str, Any], name: str) -> float:
    return float(results[name]["seconds"]) or 1e-9


def rebuild(args: argparse.Namespace, tmp: Path, results: dict[str, Any], stack: ExitStack) -> None:
    from kbrelease.embedding.local_text import LocalTextEmbedder

    server = stack.enter_context(MilvusLiteServer(tmp / "lite-rebuild"))
    config = tmp / "rebuild.yaml"
    config.write_text(f"workspace: {tmp / 'ws-rebuild'}\nsources:\n  - {{name: docs, path: {args.rebuild_text}, modality: text}}\n", encoding="utf-8")
    overrides = {"milvus.uri": server.uri, "milvus.db_prefix": "rb_", "milvus.registry_db": "rb_registry", "cache.enabled": False, "environment": "dev"}
    with step(results, "load local text model (rebuild only)"):
        model = LocalTextEmbedder()
    dev = stack.enter_context(KbRelease(load_config(config, env={}, overrides=overrides), text_embedder=model))
    dev.sync()
    with step(results, "rebuild: build + verify with the local embedder") as entry:
        record = dev.verify(dev.build("v1").name)
    rows = sum(c.rows for c in record.sources.values())
    entry |= {"rows": rows, "rows_per_s": round(rows / entry_seconds(results, "rebuild: build + verify with the local embedder"), 1)}
    dev.package_export("v1", tmp / "rebuilt.tar")
    clock = Clock()
    prod = stack.enter_context(project(tmp / "ws-rebuild-prod", server.uri, "prod", "rbp_", clock))
    timed_import(prod, clock, tmp / "rebuilt.tar", results, "import of the same release", rows)
    ratio = results["rebuild: build + verify with the local embedder"]["seconds"] / results["import of the same release"]["seconds"]
    results["import speed-up over rebuild"] = round(ratio, 1)
    print(f"import is {ratio:.1f}x faster than rebuilding ({rows} rows)", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000, help="rows of the synthetic release (a multiple of 10)")
    parser.add_argument("--text-chars", type=int, default=700, help="characters of text per synthetic row (a 160-token chunk is ~700)")
    parser.add_argument("--server", action="store_true", help="also import into a real Milvus 2.3.5 (milvus-server)")
    parser.add_argument("--rebuild-text", type=Path, help="folder of text files: compare importing with rebuilding them")
    parser.add_argument("--skip-synthetic", action="store_true", help="only the rebuild comparison")
    parser.add_argument("--json-out", type=Path, help="write the results here")
    args = parser.parse_args()
    results: dict[str, Any] = {"rows": args.rows, "cpus": os.cpu_count(), "load_at_start": loadavg()}
    with tempfile.TemporaryDirectory(prefix="kbpkg-") as tmp_name, ExitStack() as stack:
        tmp = Path(tmp_name)
        if not args.skip_synthetic:
            synthetic(args, tmp, results, stack)
        if args.rebuild_text:
            rebuild(args, tmp, results, stack)
    print(json.dumps(results, indent=2, ensure_ascii=False))
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
