"""Release packages: export and import rates, package size per row, import vs. rebuilding from sources.

Part 1 (always): a synthetic verified release of ``--rows`` rows (384-d unit
vectors, ``--text-chars`` characters of text per row, 10 rows per file) in a
"dev" environment on its own embedded Milvus Lite server; then

* ``package export`` to a plain tar and to a zstd tar: seconds, rows/s, bytes per row,
  CPU seconds; once more as a ``kbrelease`` process, for its peak RSS;
* ``package import`` of the plain tar into "prod" on a second Lite server:
  seconds per phase (check, load, seal, verify), CPU seconds of the importer and of Milvus;
* with ``--promote``, ``promote`` dev → prod (a third environment on the second server);
* with ``--server``, ``package import`` into a real Milvus 2.3.5 (``milvus-server``).

Part 2 (``--rebuild-text DIR``): a real release built from the text files in
DIR with the local all-MiniLM-L6-v2 (embedding cache off, model loaded before
timing), then exported and imported into a fresh environment: import seconds
against build + verify seconds for the same release.

    python bench/make_corpus.py --out /tmp/kbpkg --paragraphs 3000 --files 150 --images 0
    python bench/package_bench.py --rows 100000 --server --promote --rebuild-text /tmp/kbpkg/text --json-out /tmp/kbres/package.json

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


def project(workspace: Path, uri: str, env: str, prefix: str, environ: dict[str, str] | None = None) -> KbRelease:
    overrides = {"workspace": str(workspace), "milvus.uri": uri, "milvus.db_prefix": prefix, "milvus.registry_db": f"{prefix}registry", "environment": env}
    return KbRelease(load_config(None, env=environ or {}, overrides=overrides))


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of these processes so far (from /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed_import(kb: KbRelease, package: Path, results: dict[str, Any], name: str, rows: int, server_pids: list[int]) -> None:
    """Import ``package``: seconds per phase, and CPU seconds of this process and of the target server."""
    cpu_self, cpu_server = own_cpu(), cpu_seconds(server_pids)
    with step(results, name) as entry:
        info = kb.package_import(package)
    entry["phases"] = info.phases
    entry["load_rows_per_s"] = round(rows / info.phases["load"])
    entry["rows_per_s"] = round(rows / info.seconds)
    entry["cpu_seconds_importer"] = round(own_cpu() - cpu_self, 1)
    entry["cpu_seconds_milvus"] = round(cpu_seconds(server_pids) - cpu_server, 1)
    entry["state"] = info.state


def synthetic(args: argparse.Namespace, tmp: Path, results: dict[str, Any], stack: ExitStack) -> None:
    src = stack.enter_context(MilvusLiteServer(tmp / "lite-dev"))
    dst = stack.enter_context(MilvusLiteServer(tmp / "lite-prod"))
    dev = stack.enter_context(project(tmp / "ws", src.uri, "dev", "bench_"))
    with step(results, "make synthetic release (setup, not a figure)"):
        make_release(dev, "v1", files=args.rows // 10, chunks_per_file=10, text_chars=args.text_chars)
    for label, compress in (("export plain", False), ("export zstd", True)):
        out = tmp / f"v1.tar{'.zst' if compress else ''}"
        cpu_self, cpu_server = own_cpu(), cpu_seconds(src.pids())
        with step(results, label) as entry:
            info = dev.package_export("v1", out, compress=compress, part_mb=args.part_mb)
        entry |= {"rows": info.rows, "parts": info.parts, "bytes": info.bytes, "bytes_per_row": round(info.bytes / info.rows)}
        entry["rows_per_s"] = round(info.rows / entry["seconds"])
        entry["cpu_seconds_exporter"] = round(own_cpu() - cpu_self, 1)
        entry["cpu_seconds_milvus"] = round(cpu_seconds(src.pids()) - cpu_server, 1)
    export_in_subprocess(tmp, src.uri, results, args.part_mb)
    if args.export_only:
        return
    prod = stack.enter_context(project(tmp / "ws-prod", dst.uri, "prod", "bench_"))
    timed_import(prod, tmp / "v1.tar", results, "import lite → lite", args.rows, dst.pids())
    if args.promote:
        target = stack.enter_context(project(tmp / "ws-prod2", dst.uri, "prod2", "bench2_"))
        with step(results, "promote lite → lite") as entry:
            promoted = dev.promote("v1", target)
        entry |= {"rows_per_s": round(promoted.rows / entry["seconds"]), "phases": promoted.phases, "state": promoted.state}
    if args.server:
        server = stack.enter_context(MilvusServer(tmp / "milvus-server"))
        remote = stack.enter_context(project(tmp / "ws-server", server.uri, "prod", "bench_", {"MILVUS_TOKEN": "root:Milvus"}))
        timed_import(remote, tmp / "v1.tar", results, "import lite → server", args.rows, server.pids())


def export_in_subprocess(tmp: Path, uri: str, results: dict[str, Any], part_mb: float) -> None:
    """``kbrelease package export`` as its own process: its peak RSS is the memory an export needs."""
    import subprocess

    config = tmp / "dev.yaml"
    config.write_text(
        f"workspace: {tmp / 'ws'}\ndefault_environment: dev\nenvironments:\n  dev: {{milvus_uri: '{uri}', db_prefix: bench_, registry_db: bench_registry}}\n",
        encoding="utf-8",
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    # /usr/bin/time forks from its own small process: a child forked from this one would
    # count this process's pages in its peak RSS until it execs.
    rss_file = tmp / "cli.rss"
    command = [sys.executable, "-m", "kbrelease.cli", "-c", str(config), "package", "export", "v1", "-o", str(tmp / "cli.tar"), "--part-mb", str(part_mb)]
    with step(results, "export plain (kbrelease CLI process)") as entry:
        subprocess.run(["/usr/bin/time", "-f", "%M", "-o", str(rss_file), *command], env=env, check=True)
    entry["cli_peak_rss_mb"] = round(int(rss_file.read_text().split()[-1]) / 1024, 1)
    (tmp / "cli.tar").unlink()


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
    name = "rebuild: build + verify with the local embedder"
    cpu_self, cpu_server = own_cpu(), cpu_seconds(server.pids())
    with step(results, name) as entry:
        record = dev.verify(dev.build("v1").name)
    rows = sum(c.rows for c in record.sources.values())
    entry |= {"rows": rows, "rows_per_s": round(rows / entry["seconds"], 1)}
    entry["cpu_seconds_builder"] = round(own_cpu() - cpu_self, 1)
    entry["cpu_seconds_milvus"] = round(cpu_seconds(server.pids()) - cpu_server, 1)
    exported = dev.package_export("v1", tmp / "rebuilt.tar")
    results["package of the real release"] = {"rows": rows, "bytes": exported.bytes, "bytes_per_row": round(exported.bytes / rows)}
    prod = stack.enter_context(project(tmp / "ws-rebuild-prod", server.uri, "prod", "rbp_"))
    timed_import(prod, tmp / "rebuilt.tar", results, "import of the same release", rows, server.pids())
    imported = results["import of the same release"]
    wall = results[name]["seconds"] / imported["seconds"]
    cpu = (entry["cpu_seconds_builder"] + entry["cpu_seconds_milvus"]) / max(0.1, imported["cpu_seconds_importer"] + imported["cpu_seconds_milvus"])
    results["import speed-up over rebuild"] = {"wall": round(wall, 1), "cpu": round(cpu, 1)}
    print(f"import is {wall:.1f}x faster than rebuilding by wall time, {cpu:.1f}x by CPU time ({rows} rows)", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000, help="rows of the synthetic release (a multiple of 10)")
    parser.add_argument("--text-chars", type=int, default=700, help="characters of text per synthetic row (a 160-token chunk is ~700)")
    parser.add_argument("--server", action="store_true", help="also import into a real Milvus 2.3.5 (milvus-server)")
    parser.add_argument("--promote", action="store_true", help="also promote dev → prod (export + import through a pipe)")
    parser.add_argument("--rebuild-text", type=Path, help="folder of text files: compare importing with rebuilding them")
    parser.add_argument("--skip-synthetic", action="store_true", help="only the rebuild comparison")
    parser.add_argument("--export-only", action="store_true", help="stop after the exports (memory runs)")
    parser.add_argument("--part-mb", type=float, default=64, help="part size of the exports")
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
