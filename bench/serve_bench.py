"""Load on the search service over loopback: service overhead vs a direct pymilvus search, and a switch under load.

What it sets up, in a temporary folder (deleted at the end unless ``--keep``), for each
row count in ``--rows``:

* the store engine ``--engine`` (``store.engine``), started by kbrelease itself exactly as
  users get it (``kbrelease.store.engines``), with that engine's index (``INDEXES``):
  ``lite`` is the embedded Milvus Lite server, ``milvus-local`` the Milvus 2.3.5 standalone
  of the PyPI ``milvus`` package; ``--milvus-uri`` uses a server someone else runs instead
  (engine ``server``);
* releases ``v1`` and ``v2`` of ``--rows`` rows each (20 per file), written and verified
  by ``tests/synthetic.py`` with kbrelease's own schema, ``MilvusStore.seal`` and a data
  index; the vectors are random unit vectors (search cost does not depend on what the
  vectors mean) but the releases are stamped with the local MiniLM's identity, so the
  service embeds every query with the real model, as in production. The seconds of each
  (rows inserted + seal/index + verify: publishing without the embedding) are reported,
  then the seconds of ``kb.switch("v2")`` (v1 live before);
* ``kbrelease serve`` as a real uvicorn process (``--replicas N`` starts N of them
  behind nginx, for the switch measurement).

Then, for each concurrency in ``--concurrency`` (default 1 and 8), in alternating rounds
so machine-load drift hits both sides alike:

* **direct**: in this process, the same model embeds the query and ``MilvusClient.search``
  (the same collection, limit and output fields as the service) answers it;
* **service**: ``GET /api/v1/search?q=...&k=5`` over HTTP keep-alive connections.

Overhead = service p50 − direct p50 (and p99) at the same concurrency. Each client thread
runs its own queries back to back (closed loop); QPS counts completed requests.
``--service-only`` skips the direct side (the service's own latency at a size).

After the load: the RSS of the store's server (its whole process group, as ``kbrelease
store status`` reports it) and of the service process(es).

**Switch under load** (the load of ``kbrelease loadtest``: :class:`kbrelease.service.loadtest.LoadTest`):
``--switch-seconds`` of load at ``--switch-concurrency``, the live
pointer moved v1 → v2 in the middle by another client (the library, as ``kbrelease switch``
does); reports failed requests, p99 in the 2.5 s after the switch vs. before, and when the
last response from v1 came back.

Examples::

    python bench/serve_bench.py --rows 10000
    python bench/serve_bench.py --engine milvus-local --rows 10000 100000 --concurrency 1 8 --queries 200 --rounds 2
    python bench/serve_bench.py --engine milvus-local --rows 100000 --service-only
    python bench/serve_bench.py --rows 10000 --replicas 3 --skip-overhead   # switch through nginx

Prints one JSON object per measurement, then markdown tables (one summary line per engine and
row count: publish s, switch s, store and service RSS, service p50/p99 at each concurrency);
``--json-out`` saves all.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from _common import (  # bench/ is the script's folder, first on sys.path
    MANAGED_ENGINES,
    add_smoke,
    emit,
    engine_config,
    free_port,
    group_rss_mb,
    loadavg,
    managed_engine,
    percentile,
    store_server,
    tests_on_path,
    write_config,
)
from search_bench import wait_until_idle

from kbrelease.service.loadtest import DEFAULT_QUERIES

QUERIES = list(DEFAULT_QUERIES)  # the load test's own queries (kbrelease.service.loadtest)
OUTPUT_FIELDS = ["file", "file_id", "chunk_index", "heading", "text", "start"]


@dataclass
class Stats:
    side: str
    concurrency: int
    requests: int
    failed: int
    seconds: float
    qps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, side: str, concurrency: int, latencies: list[float], failed: int, seconds: float, extra: dict[str, Any]) -> Stats:
        ms = [x * 1000 for x in latencies]
        return cls(
            side,
            concurrency,
            len(ms) + failed,
            failed,
            round(seconds, 2),
            round(len(ms) / seconds, 1) if seconds else 0.0,
            round(percentile(ms, 50), 2),
            round(percentile(ms, 95), 2),
            round(percentile(ms, 99), 2),
            round(statistics.fmean(ms), 2) if ms else float("nan"),
            extra,
        )


def closed_loop(concurrency: int, per_thread: int, one: Callable[[int, int], float | None]) -> tuple[list[float], int, float]:
    """``concurrency`` threads each doing ``per_thread`` calls of ``one(thread, i)`` (seconds, or None on failure)."""
    latencies: list[float] = []
    failed = 0
    lock = threading.Lock()

    def worker(t: int) -> None:
        nonlocal failed
        for i in range(per_thread):
            took = one(t, i)
            with lock:
                if took is None:
                    failed += 1
                else:
                    latencies.append(took)

    started = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(t,)) for t in range(concurrency)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return latencies, failed, time.perf_counter() - started


# --- setup ---------------------------------------------------------------------------
def bench_config(folder: Path, engine: str, uri: str | None, query_threads: int = 1, prefix: str = "kbserve_") -> Path:
    """``folder/kbrelease.yaml``: ``engine`` started by kbrelease (or the server at ``uri``), the service's threads."""
    return write_config(folder, {**engine_config(folder, engine, uri, prefix), "service": {"query_threads": query_threads}})


def make_release(kb: Any, name: str, rows: int, seed: int) -> None:
    """A verified release of ``rows`` random rows (20 per file) in one text source, stamped with the configured
    text model's identity: ``tests/synthetic.py``, the package bench's and the import tests' releases."""
    tests_on_path()
    from synthetic import make_release as synthetic_release

    synthetic_release(kb, name, files=max(1, rows // 20), chunks_per_file=20, seed=seed, text_chars=600)


@contextlib.contextmanager
def serve_processes(cfg: Path, replicas: int) -> Iterator[list[tuple[str, int]]]:
    """``(url, pid)`` of ``replicas`` ``kbrelease serve`` processes (each the leader of its own process group), ready."""
    ports = [free_port() for _ in range(replicas)]
    env = {**os.environ, "KBRELEASE_ADMIN_TOKEN": "bench-admin"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "kbrelease.cli", "-c", str(cfg), "serve", "--port", str(p)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        for p in ports
    ]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    try:
        deadline = time.monotonic() + 300
        for url, proc in zip(urls, procs, strict=True):
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"kbrelease serve on {url} exited with {proc.returncode}")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{url} not ready")
                time.sleep(0.2)
        yield [(url, proc.pid) for url, proc in zip(urls, procs, strict=True)]
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


@contextlib.contextmanager
def nginx_in_front(folder: Path, urls: list[str]) -> Iterator[str]:
    from kbrelease.service.nginx import render_nginx_conf

    port = free_port()
    prefix = folder / "nginx"
    prefix.mkdir(exist_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(render_nginx_conf([u.removeprefix("http://") for u in urls], port, worker_processes=1))
    proc = subprocess.Popen(
        ["nginx", "-p", str(prefix), "-c", str(conf), "-e", "stderr", "-g", "daemon off;"], stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        for _ in range(100):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


# --- measurements ----------------------------------------------------------------------
def overhead(kb: Any, url: str, concurrency: int, queries: int, rounds: int, service_only: bool = False) -> list[Stats]:
    """Direct (embed + MilvusClient.search in this process) vs the service, in alternating rounds (the service alone
    with ``service_only``)."""
    from pymilvus import MilvusClient

    record = kb.resolve(None)
    client = MilvusClient(uri=kb.store.uri, db_name=record.database)
    # The same model driven the same way as in the service (batched, service.query_threads threads per call),
    # so the difference between the sides is the service itself.
    kb.coalesce_text_queries(kb.cfg.service.query_threads)
    embedder = kb.query_text_embedder  # the service's (state.py); kb.text_embedder would load the build's model, uncoalesced
    search_params = kb.store.index.search_params(5)
    sides: tuple[str, ...] = ("service",) if service_only else ("direct", "service")
    per_thread = max(1, queries // rounds // concurrency)

    direct_search: list[float] = []

    def direct(t: int, i: int) -> float | None:
        q = QUERIES[(t * 7 + i) % len(QUERIES)]
        started = time.perf_counter()
        vec = embedder.embed_texts([q])[0].tolist()
        embedded = time.perf_counter()
        # As MilvusStore.search asks: the engine's index parameters, Bounded consistency (Strong waits for a time tick).
        client.search("docs", data=[vec], limit=5, output_fields=OUTPUT_FIELDS, search_params=search_params, consistency_level="Bounded")
        done = time.perf_counter()
        direct_search.append((done - embedded) * 1000)
        return done - started

    http = [httpx.Client(base_url=url, timeout=30) for _ in range(concurrency)]
    server_side: list[tuple[float, float, float, float]] = []

    def service(t: int, i: int) -> float | None:
        q = QUERIES[(t * 7 + i) % len(QUERIES)]
        started = time.perf_counter()
        try:
            resp = http[t].get("/api/v1/search", params={"q": q, "k": 5})
        except httpx.HTTPError:
            return None
        took = time.perf_counter() - started
        if resp.status_code != 200:
            return None
        body = resp.json()
        server_side.append((body["embed_ms"], body["search_ms"], body["took_ms"], took * 1000 - body["embed_ms"] - body["search_ms"]))
        return took

    fns: dict[str, Callable[[int, int], float | None]] = {"direct": direct, "service": service}
    for side in sides:  # warm both paths (first calls allocate)
        closed_loop(concurrency, 3, fns[side])
    server_side.clear()
    direct_search.clear()
    results: dict[str, tuple[list[float], int, float]] = {"direct": ([], 0, 0.0), "service": ([], 0, 0.0)}
    for _ in range(rounds):
        for side in sides:
            fn = fns[side]
            if side == "service":  # fresh connections: uvicorn closes keep-alive ones idle for 5 s (the direct round)
                for c in http:
                    c.close()
                http[:] = [httpx.Client(base_url=url, timeout=30) for _ in range(concurrency)]
            lat, failed, secs = closed_loop(concurrency, per_thread, fn)
            acc = results[side]
            results[side] = (acc[0] + lat, acc[1] + failed, acc[2] + secs)
    for c in http:
        c.close()
    client.close()
    emb, srch, took, rest = (sorted(x[i] for x in server_side) for i in range(4))
    inside = {
        "service_embed_p50_ms": round(percentile(emb, 50), 2),
        "service_search_p50_ms": round(percentile(srch, 50), 2),
        "service_took_p50_ms": round(percentile(took, 50), 2),
        # Everything but the model and Milvus: HTTP, routing, validation, release resolution, JSON, log, metrics.
        "service_rest_p50_ms": round(percentile(rest, 50), 2),
        "service_rest_p99_ms": round(percentile(rest, 99), 2),
    }
    out = [Stats.of("service", concurrency, *results["service"], extra=inside)]
    if not service_only:
        out.insert(0, Stats.of("direct", concurrency, *results["direct"], extra={"direct_search_p50_ms": round(percentile(direct_search, 50), 2)}))
    return out


def switch_under_load(kb: Any, url: str, replicas: list[str], concurrency: int, seconds: float) -> dict[str, Any]:
    """Load through ``url``; the live pointer moves v1 → v2 halfway; who failed, p99 before/after, when v1 stopped."""
    from kbrelease.service.loadtest import LoadTest  # the load of `kbrelease loadtest`

    live = kb.registry.pointer().live
    target = "v2" if live == "v1" else "v1"
    load = LoadTest(url, concurrency, QUERIES, k=5).start()
    t0 = load.started
    time.sleep(seconds / 2)
    t_switch = time.monotonic()
    kb.switch(target)  # another client moves the pointer, as `kbrelease switch` does
    switch_call = time.monotonic() - t_switch
    followed: dict[str, float] = {}
    while len(followed) < len(replicas) and time.monotonic() - t_switch < 10:
        for r in replicas:
            if r not in followed and httpx.get(f"{r}/api/v1/live", timeout=5).json()["live"] == target:
                followed[r] = round(time.monotonic() - t_switch, 3)
        time.sleep(0.01)
    time.sleep(max(0.0, seconds / 2 - (time.monotonic() - t_switch)))
    load.stop()
    outcomes = [(t0 + o.at, o.seconds, o.status, o.release) for o in load.outcomes]
    before = [d * 1000 for s, d, st, _ in outcomes if s < t_switch - 0.5 and s > t0 + 1.0]
    during = [d * 1000 for s, d, st, _ in outcomes if t_switch <= s < t_switch + 2.5]
    old_after = [s + d - t_switch for s, d, st, rel in outcomes if rel == live and s + d > t_switch]
    old_started = [s - t_switch for s, d, st, rel in outcomes if rel == live and s + d > t_switch]
    return {
        "measure": "switch_under_load",
        "replicas": len(replicas),
        "concurrency": concurrency,
        "requests": len(outcomes),
        "failed": sum(1 for o in outcomes if o[2] != 200),
        "switch_call_ms": round(switch_call * 1000, 1),
        "replicas_on_new_release_after_s": sorted(followed.values()),
        "last_old_release_answer_after_s": round(max(old_after), 3) if old_after else 0.0,
        # A request resolves its release when it starts: this is how stale the replicas were.
        "last_old_release_request_started_after_s": round(max(old_started), 3) if old_started else 0.0,
        "p50_ms_steady": round(percentile(before, 50), 1),
        "p99_ms_steady": round(percentile(before, 99), 1),
        "p50_ms_switch_window": round(percentile(during, 50), 1),
        "p99_ms_switch_window": round(percentile(during, 99), 1),
        "qps": round(len(outcomes) / (time.monotonic() - t0), 1),
    }


def run_rows(args: argparse.Namespace, rows: int) -> list[dict[str, Any]]:
    """Everything for one row count, in a folder of its own with a fresh engine: releases, publish and switch
    seconds, overhead (or the service alone), memory, the switch under load."""
    from kbrelease import KbRelease, load_config

    engine = "server" if args.milvus_uri else args.engine
    folder = Path(tempfile.mkdtemp(prefix="kbserve-bench-"))
    results: list[dict[str, Any]] = []
    try:
        cfg = load_config(bench_config(folder, args.engine, args.milvus_uri, args.query_threads, args.db_prefix), env={})
        with managed_engine(cfg), KbRelease(cfg) as kb:
            cfg_path = folder / "kbrelease.yaml"
            load_before = loadavg()
            started = time.perf_counter()
            make_release(kb, "v1", rows, seed=1)
            publish_v1 = time.perf_counter() - started
            kb.switch("v1")
            started = time.perf_counter()
            make_release(kb, "v2", rows, seed=2)
            publish_v2 = time.perf_counter() - started
            server = store_server(cfg)
            server_pid = int(server["pid"]) if server else None
            settle = wait_until_idle(server_pid, timeout=0 if args.smoke else 600)
            started = time.perf_counter()
            kb.switch("v2")  # the size of the releases: what a switch costs at it
            switch_s = time.perf_counter() - started
            setup = {
                "measure": "release",
                "engine": engine,
                "rows": rows,
                "index": kb.store.index.asdict(),
                # rows inserted + seal (flush, index, load) + verify: publishing without the embedding
                "publish_v1_s": round(publish_v1, 2),
                "publish_v2_s": round(publish_v2, 2),
                "switch_s": round(switch_s, 4),
                "settled_s": None if settle is None else round(settle, 1),
                "store_rss_mb_after_publish": group_rss_mb(server_pid) if server_pid else None,
                "load_before": load_before,
                "loadavg": loadavg(),
            }
            print(json.dumps(setup), flush=True)
            results.append(setup)
            with serve_processes(cfg_path, args.replicas) as served:
                urls = [url for url, _ in served]
                front = contextlib.nullcontext(urls[0]) if len(urls) == 1 else nginx_in_front(folder, urls)
                with front as url:
                    if not args.skip_overhead:
                        for conc in args.concurrency:
                            for s in overhead(kb, urls[0], conc, args.queries, args.rounds, args.service_only):
                                row = {"measure": "overhead", "engine": engine, "rows": rows, "loadavg": loadavg(), **asdict(s)}
                                print(json.dumps(row), flush=True)
                                results.append(row)
                    memory = {
                        "measure": "memory",
                        "engine": engine,
                        "rows": rows,
                        # after the load: the store's whole process group (`kbrelease store status`), each service process
                        "store_rss_mb": group_rss_mb(server_pid) if server_pid else None,
                        "service_rss_mb": [group_rss_mb(pid) for _, pid in served],
                        "loadavg": loadavg(),
                    }
                    print(json.dumps(memory), flush=True)
                    results.append(memory)
                    if not args.skip_switch:
                        switch = switch_under_load(kb, url, urls, args.switch_concurrency, args.switch_seconds)
                        sw = {"engine": engine, "rows": rows, "loadavg": loadavg(), **switch}
                        print(json.dumps(sw), flush=True)
                        results.append(sw)
    finally:
        if args.keep:
            print(f"# kept {folder}", file=sys.stderr)
        else:
            shutil.rmtree(folder, ignore_errors=True)
    return results


def summary(results: list[dict[str, Any]]) -> str:
    """One markdown line per (engine, rows): publish and switch seconds, RSS, the service's p50/p99 per concurrency."""
    concs = sorted({r["concurrency"] for r in results if r["measure"] == "overhead"})
    head = ["engine", "rows", "publish v1 s", "switch s", "store RSS MB", "service RSS MB"]
    head += [f"service p50 / p99 ms (c={c})" for c in concs] + [f"service QPS (c={c})" for c in concs] + ["load avg before → after"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 2) + "---|"]
    for setup in (r for r in results if r["measure"] == "release"):
        key = (setup["engine"], setup["rows"])
        same = [r for r in results if (r.get("engine"), r.get("rows")) == key]
        mem = next((r for r in same if r["measure"] == "memory"), {})
        svc = {r["concurrency"]: r for r in same if r["measure"] == "overhead" and r["side"] == "service"}
        last = same[-1]["loadavg"]
        service_rss = "+".join(str(x) for x in mem.get("service_rss_mb", [])) or "-"
        cells = [setup["engine"], f"{setup['rows']:,}", setup["publish_v1_s"], setup["switch_s"], mem.get("store_rss_mb") or "-", service_rss]
        cells += [f"{svc[c]['p50_ms']} / {svc[c]['p99_ms']}" if c in svc else "-" for c in concs]
        cells += [svc[c]["qps"] if c in svc else "-" for c in concs]
        cells.append(f"{setup['load_before']} → {last}")
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--engine", choices=MANAGED_ENGINES, default="lite", help="store.engine kbrelease starts and searches (default lite)")
    ap.add_argument("--rows", type=int, nargs="+", default=[10_000], help="rows per release, rounded down to whole files of 20 (default 10,000)")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8], help="client threads (default: 1 8)")
    ap.add_argument("--queries", type=int, default=240, help="queries per side and concurrency (default 240)")
    ap.add_argument("--rounds", type=int, default=4, help="alternating direct/service rounds (default 4)")
    ap.add_argument("--replicas", type=int, default=1, help="service replicas; >1 puts nginx in front (switch measurement)")
    ap.add_argument("--switch-seconds", type=float, default=10.0)
    ap.add_argument("--switch-concurrency", type=int, default=4)
    ap.add_argument("--skip-overhead", action="store_true")
    ap.add_argument("--service-only", action="store_true", help="measure the service alone (no direct side)")
    ap.add_argument("--skip-switch", action="store_true", help="no switch-under-load measurement")
    ap.add_argument("--query-threads", type=int, default=1, help="service.query_threads of the service and the direct side (default 1)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    ap.add_argument("--json-out", type=Path)
    ap.add_argument("--milvus-uri", default=None, help="http://host:port of a running Milvus (engine 'server'; default: --engine started by kbrelease)")
    ap.add_argument("--db-prefix", default="kbserve_", help="prefix of the bench's databases (to share a Milvus)")
    add_smoke(ap)
    args = ap.parse_args(argv)
    if args.smoke:
        args.rows, args.concurrency, args.queries, args.rounds, args.replicas = [40], [1], 4, 1, 1
        args.switch_seconds, args.switch_concurrency, args.keep = 2.0, 1, False
        args.db_prefix = f"smoke_serve_{os.getpid()}_"

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    print(f"# load average at the start: {loadavg()}", file=sys.stderr)
    results: list[dict[str, Any]] = []
    for rows in args.rows:
        results.extend(run_rows(args, rows))
    emit(results, args.json_out)
    print("\n| engine | rows | concurrency | side | QPS | p50 ms | p95 ms | p99 ms | failed | load avg |\n|---|---:|---:|---|---:|---:|---:|---:|---:|---|")
    for r in results:
        if r["measure"] == "overhead":
            cells = [r["engine"], f"{r['rows']:,}", r["concurrency"], r["side"], r["qps"], r["p50_ms"], r["p95_ms"], r["p99_ms"], r["failed"], r["loadavg"]]
            print("| " + " | ".join(str(c) for c in cells) + " |")
    by_conc: dict[tuple[str, int, int], dict[str, dict[str, Any]]] = {}
    for r in results:
        if r["measure"] == "overhead":
            by_conc.setdefault((r["engine"], r["rows"], r["concurrency"]), {})[r["side"]] = r
    for (engine, rows, conc), sides in sorted(by_conc.items()):
        if {"direct", "service"} <= sides.keys():
            d, sv = sides["direct"], sides["service"]
            x = sv["extra"]
            print(
                f"{engine} {rows:,} rows, concurrency {conc}: service - direct p50 {sv['p50_ms'] - d['p50_ms']:+.2f} ms, "
                f"p99 {sv['p99_ms'] - d['p99_ms']:+.2f} ms; "
                f"service time outside model and Milvus p50 {x['service_rest_p50_ms']} ms, p99 {x['service_rest_p99_ms']} ms; "
                f"Milvus search p50 direct {d['extra']['direct_search_p50_ms']} ms, in the service {x['service_search_p50_ms']} ms"
            )
    print("\n" + summary(results))
    print(f"# load average at the end: {loadavg()}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
