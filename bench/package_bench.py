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
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from _common import (  # bench/ is the script's folder, first on sys.path
    add_smoke,
    cpu_seconds,
    emit,
    loadavg,
    maxrss_mb,
    own_cpu,
    per_second,
    smoke_corpus,
    source_entries,
    src_env,
    tests_on_path,
    write_config,
)

from kbrelease import KbRelease, load_config

tests_on_path()
from synthetic import make_release  # noqa: E402

from servers import MilvusLiteServer, MilvusServer  # noqa: E402


@contextmanager
def step(results: dict[str, Any], name: str) -> Iterator[dict[str, Any]]:
    entry: dict[str, Any] = {"load_before": loadavg()}
    started = time.monotonic()
    yield entry
    entry["seconds"] = round(time.monotonic() - started, 2)
    entry["load_after"] = loadavg()
    entry["peak_rss_mb"] = maxrss_mb()
    results[name] = entry
    print(f"{name}: {entry['seconds']} s (load {entry['load_after']})", flush=True)


def project(workspace: Path, uri: str, env: str, prefix: str, environ: dict[str, str] | None = None) -> KbRelease:
    overrides = {"workspace": str(workspace), "milvus.uri": uri, "milvus.db_prefix": prefix, "milvus.registry_db": f"{prefix}registry", "environment": env}
    return KbRelease(load_config(None, env=environ or {}, overrides=overrides))


def pids_cpu(pids: list[int]) -> float:
    """User + system CPU seconds of these processes so far (from /proc)."""
    return sum(cpu_seconds(pid) or 0.0 for pid in pids)


def lite(stack: ExitStack, folder: Path, uri: str | None) -> tuple[str, Callable[[], list[int]]]:
    """(uri, its server's pids): ``uri`` when given (a server someone else runs: no pids), else a Lite server of its own."""
    if uri:
        return uri, list
    server = stack.enter_context(MilvusLiteServer(folder))
    return server.uri, server.pids


def timed_import(kb: KbRelease, package: Path, results: dict[str, Any], name: str, rows: int, server_pids: list[int]) -> None:
    """Import ``package``: seconds per phase, and CPU seconds of this process and of the target server."""
    cpu_self, cpu_server = own_cpu(), pids_cpu(server_pids)
    with step(results, name) as entry:
        info = kb.package_import(package)
    entry["phases"] = info.phases
    entry["load_rows_per_s"] = per_second(rows, info.phases["load"])
    entry["rows_per_s"] = per_second(rows, info.seconds)
    entry["cpu_seconds_importer"] = round(own_cpu() - cpu_self, 1)
    entry["cpu_seconds_milvus"] = round(pids_cpu(server_pids) - cpu_server, 1)
    entry["state"] = info.state


def synthetic(args: argparse.Namespace, tmp: Path, results: dict[str, Any], stack: ExitStack) -> None:
    p = args.db_prefix
    src_uri, src_pids = lite(stack, tmp / "lite-dev", args.milvus_uri)
    dst_uri, dst_pids = lite(stack, tmp / "lite-prod", args.milvus_uri)
    dev = stack.enter_context(project(tmp / "ws", src_uri, "dev", f"{p}bench_"))
    with step(results, "make synthetic release (setup, not a figure)"):
        make_release(dev, "v1", files=args.rows // 10, chunks_per_file=10, text_chars=args.text_chars)
    for label, compress in (("export plain", False), ("export zstd", True)):
        out = tmp / f"v1.tar{'.zst' if compress else ''}"
        cpu_self, cpu_server = own_cpu(), pids_cpu(src_pids())
        with step(results, label) as entry:
            info = dev.package_export("v1", out, compress=compress, part_mb=args.part_mb)
        entry |= {"rows": info.rows, "parts": info.parts, "bytes": info.bytes, "bytes_per_row": round(info.bytes / info.rows)}
        entry["rows_per_s"] = per_second(info.rows, entry["seconds"])
        entry["cpu_seconds_exporter"] = round(own_cpu() - cpu_self, 1)
        entry["cpu_seconds_milvus"] = round(pids_cpu(src_pids()) - cpu_server, 1)
    export_in_subprocess(tmp, src_uri, results, args.part_mb, p)
    if args.export_only:
        return
    prod = stack.enter_context(project(tmp / "ws-prod", dst_uri, "prod", f"{p}bench_"))
    timed_import(prod, tmp / "v1.tar", results, "import lite → lite", args.rows, dst_pids())
    if args.promote:
        target = stack.enter_context(project(tmp / "ws-prod2", dst_uri, "prod2", f"{p}bench2_"))
        with step(results, "promote lite → lite") as entry:
            promoted = dev.promote("v1", target)
        entry |= {"rows_per_s": per_second(promoted.rows, entry["seconds"]), "phases": promoted.phases, "state": promoted.state}
    if args.server:
        server = stack.enter_context(MilvusServer(tmp / "milvus-server"))
        remote = stack.enter_context(project(tmp / "ws-server", server.uri, "prod", f"{p}bench_", {"MILVUS_TOKEN": "root:Milvus"}))
        timed_import(remote, tmp / "v1.tar", results, "import lite → server", args.rows, server.pids())


def export_in_subprocess(tmp: Path, uri: str, results: dict[str, Any], part_mb: float, prefix: str) -> None:
    """``kbrelease package export`` as its own process: its peak RSS is the memory an export needs."""
    import subprocess

    config = tmp / "dev.yaml"
    config.write_text(
        f"workspace: {tmp / 'ws'}\ndefault_environment: dev\nenvironments:\n"
        f"  dev: {{milvus_uri: '{uri}', db_prefix: {prefix}bench_, registry_db: {prefix}bench_registry}}\n",
        encoding="utf-8",
    )
    # /usr/bin/time forks from its own small process: a child forked from this one would
    # count this process's pages in its peak RSS until it execs.
    rss_file = tmp / "cli.rss"
    command = [sys.executable, "-m", "kbrelease.cli", "-c", str(config), "package", "export", "v1", "-o", str(tmp / "cli.tar"), "--part-mb", str(part_mb)]
    gnu_time = shutil.which("time", path="/usr/bin")
    with step(results, "export plain (kbrelease CLI process)") as entry:
        subprocess.run([gnu_time, "-f", "%M", "-o", str(rss_file), *command] if gnu_time else command, env=src_env(), check=True)
    entry["cli_peak_rss_mb"] = round(int(rss_file.read_text().split()[-1]) / 1024, 1) if gnu_time else None
    (tmp / "cli.tar").unlink()


def rebuild(args: argparse.Namespace, tmp: Path, results: dict[str, Any], stack: ExitStack) -> None:
    from kbrelease.embedding.local_text import LocalTextEmbedder

    p = args.db_prefix
    uri, pids = lite(stack, tmp / "lite-rebuild", args.milvus_uri)
    config = write_config(tmp / "rebuild", {"workspace": str(tmp / "ws-rebuild"), "sources": source_entries(args.rebuild_text, None)})
    overrides = {"milvus.uri": uri, "milvus.db_prefix": f"{p}rb_", "milvus.registry_db": f"{p}rb_registry", "cache.enabled": False, "environment": "dev"}
    with step(results, "load local text model (rebuild only)"):
        model = LocalTextEmbedder()
    dev = stack.enter_context(KbRelease(load_config(config, env={}, overrides=overrides), text_embedder=model))
    dev.sync()
    name = "rebuild: build + verify with the local embedder"
    cpu_self, cpu_server = own_cpu(), pids_cpu(pids())
    with step(results, name) as entry:
        record = dev.verify(dev.build("v1").name)
    rows = sum(c.rows for c in record.sources.values())
    entry |= {"rows": rows, "rows_per_s": per_second(rows, entry["seconds"], 1)}
    entry["cpu_seconds_builder"] = round(own_cpu() - cpu_self, 1)
    entry["cpu_seconds_milvus"] = round(pids_cpu(pids()) - cpu_server, 1)
    exported = dev.package_export("v1", tmp / "rebuilt.tar")
    results["package of the real release"] = {"rows": rows, "bytes": exported.bytes, "bytes_per_row": round(exported.bytes / rows)}
    prod = stack.enter_context(project(tmp / "ws-rebuild-prod", uri, "prod", f"{p}rbp_"))
    timed_import(prod, tmp / "rebuilt.tar", results, "import of the same release", rows, pids())
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
    parser.add_argument("--milvus-uri", default=None, help="http://host:port of a running Milvus for every environment (default: Lite servers of its own)")
    parser.add_argument("--db-prefix", default="", help="put before every database name (to share a Milvus)")
    add_smoke(parser)
    args = parser.parse_args()
    if args.smoke:  # no Milvus 2.3.5 (--server): CI's milvus_server tests cover that import
        args.rows, args.text_chars, args.promote, args.server, args.part_mb = 20, 50, True, False, 1
        args.db_prefix = f"smoke_pkg_{os.getpid()}_"
    results: dict[str, Any] = {"rows": args.rows, "cpus": os.cpu_count(), "load_at_start": loadavg()}
    with tempfile.TemporaryDirectory(prefix="kbpkg-") as tmp_name, ExitStack() as stack:
        tmp = Path(tmp_name)
        if args.smoke:
            args.rebuild_text = smoke_corpus(tmp / "corpus", images=0) / "text"
        if not args.skip_synthetic:
            synthetic(args, tmp, results, stack)
        if args.rebuild_text:
            rebuild(args, tmp, results, stack)
    emit(results, args.json_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
