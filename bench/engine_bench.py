"""Index choice by measurement: each store engine x index type x search parameter, at 10k and 100k rows (1M with --million).

For each engine (``lite``: the embedded Milvus Lite server; ``milvus-local``: the Milvus
standalone kbrelease runs) and each row count, the script starts the engine the way
kbrelease does (``kbrelease.store.engines``), creates one collection with kbrelease's
schema, upserts random unit 384-d vectors (no model: fast) in ``--batch`` rows per call,
then for each index type (HNSW, IVF_FLAT, FLAT) builds that index (release, drop the
old index, create, load: the first one's time includes the flush) and, for each search
parameter (HNSW ``ef``, IVF ``nprobe``), runs ``--queries`` searches through the library
(``MilvusStore.search``, k = ``--k``) at concurrency 1 and 8 (threads), and reports p50 /
p99 in ms, queries/s at concurrency 8, recall@k against an exact search (numpy), the
insert and index seconds, and the server's RSS (its whole process group).

Queries are data vectors with noise added (cosine about 0.9 to their origin), like a
question close to a chunk it should find. The ``recommended`` entry of each (engine,
rows) is the lowest concurrency-1 p50 with recall@k >= ``--min-recall`` (0.98).

Examples::

    python bench/engine_bench.py --json-out /tmp/engine.json            # 10k and 100k, both engines
    python bench/engine_bench.py --rows 10000 --engines milvus-local
    python bench/engine_bench.py --million                                # adds 1M rows (long: hours on 2 cores)
    python bench/engine_bench.py --rows 1000000 --engines milvus-local --data clustered --indexes HNSW FLAT --hnsw 16,64 --ef 64 128
    python bench/engine_bench.py --smoke
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from _common import MANAGED_ENGINES, add_smoke, emit, group_rss_mb, loadavg, percentile  # bench/ is the script's folder, first on sys.path

ENGINES = MANAGED_ENGINES
DB = "kbengine"
COLLECTION = "bench"
FIELDS = ("file", "file_id", "chunk_index")
LITE_FLAT_MAX_ROWS = 10_000

# index type -> (build params, the search parameter swept and its values); nlist is set per row count
INDEXES: dict[str, tuple[dict[str, Any], str | None, tuple[int, ...]]] = {
    "HNSW": ({"M": 16, "efConstruction": 200}, "ef", (64, 128, 256)),
    "IVF_FLAT": ({}, "nprobe", (32, 128)),
    "FLAT": ({}, None, (0,)),
}


def unit_vectors(n: int, dim: int, rng: np.random.Generator) -> npt.NDArray[np.float32]:
    v = rng.standard_normal((n, dim), dtype=np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v


def clustered_vectors(n: int, dim: int, rng: np.random.Generator, per_cluster: int = 200, spread: float = 1.0) -> npt.NDArray[np.float32]:
    """``n`` unit vectors around ``n / per_cluster`` random centres (cosine ~0.7 to their centre at spread 1.0), like embeddings of
    documents on many topics: approximate indexes are judged on data with neighbourhoods, not on uniform noise (their worst case)."""
    centres = unit_vectors(max(1, n // per_cluster), dim, rng)
    out = np.empty((n, dim), dtype=np.float32)
    step = 100_000
    for lo in range(0, n, step):
        m = min(step, n - lo)
        v = centres[rng.integers(len(centres), size=m)] + spread * rng.standard_normal((m, dim), dtype=np.float32) / np.sqrt(dim)
        out[lo : lo + m] = v / np.linalg.norm(v, axis=1, keepdims=True)
    return out


def queries_near(data: npt.NDArray[np.float32], n: int, rng: np.random.Generator, noise: float = 0.5) -> npt.NDArray[np.float32]:
    """``n`` queries, each a data vector plus noise (cosine ~0.9 to it for noise 0.5)."""
    picks = data[rng.integers(len(data), size=n)]
    q = picks + noise * unit_vectors(n, data.shape[1], rng)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return q.astype(np.float32)


def exact_top(data: npt.NDArray[np.float32], queries: npt.NDArray[np.float32], k: int) -> list[set[int]]:
    out: list[set[int]] = []
    for lo in range(0, len(queries), 25):  # 25 queries x 1M rows of scores at a time: 100 MB
        scores = queries[lo : lo + 25] @ data.T
        out += [set(map(int, row)) for row in np.argpartition(-scores, k, axis=1)[:, :k]]
    return out


def rows_for(vectors: npt.NDArray[np.float32], offset: int) -> list[dict[str, Any]]:
    """Rows with kbrelease's fields (a short text: the index, not the payload, is measured here)."""
    return [
        {
            "id": f"{offset + i:012d}:0",
            "file_id": f"{offset + i:012d}",
            "file": f"f/{offset + i}.md",
            "chunk_index": 0,
            "n_chunks": 1,
            "checksum": f"{offset + i:064x}",
            "vector": vec.tolist(),
            "start": 0,
            "heading": "",
            "text": "bench",
            "metadata": {},
        }
        for i, vec in enumerate(vectors)
    ]


@contextmanager
def engine_uri(engine: str, folder: Path) -> Iterator[tuple[str, Any]]:
    """``(uri, rss())``: the engine started as kbrelease starts it, stopped at the end."""
    if engine == "lite":
        from kbrelease.store.lite import ensure_server, running_server, stop_server
    else:
        from kbrelease.store.milvus_local import ensure_server, running_server, stop_server  # type: ignore[assignment]
    try:
        uri = ensure_server(folder)
        found = running_server(folder)
        pid = int(found["pid"]) if found else 0
        yield uri, (lambda: group_rss_mb(pid) if pid else None)
    finally:
        stop_server(folder)


def build_index(store: Any, index_type: str, params: dict[str, Any], first: bool) -> float:
    """Replace the collection's index with ``index_type`` and load it; seconds (the first also flushes)."""
    c = store.client(DB)
    started = time.perf_counter()
    if first:
        c.flush(COLLECTION)
    c.release_collection(COLLECTION)
    for name in c.list_indexes(COLLECTION):
        c.drop_index(COLLECTION, name)
    spec = c.prepare_index_params()
    spec.add_index(field_name="vector", metric_type="COSINE", index_type=index_type, params=params)
    c.create_index(COLLECTION, spec)
    c.load_collection(COLLECTION)
    return time.perf_counter() - started


def timed_searches(store: Any, queries: npt.NDArray[np.float32], k: int, concurrency: int) -> tuple[list[float], list[list[int]], float]:
    """Latencies (ms), hit row numbers per query, and wall seconds of all ``queries`` at ``concurrency``."""

    def one(q: npt.NDArray[np.float32]) -> tuple[float, list[int]]:
        t = time.perf_counter()
        hits = store.search(DB, COLLECTION, [q.tolist()], k, output_fields=FIELDS)[0]
        return (time.perf_counter() - t) * 1000, [int(h["id"].split(":")[0]) for h in hits]

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        out = list(pool.map(one, queries))
    return [ms for ms, _ in out], [ids for _, ids in out], time.perf_counter() - started


def run_engine_rows(engine: str, rows: int, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    from kbrelease.store.engines import IndexChoice
    from kbrelease.store.milvus import MilvusStore

    rng = np.random.default_rng(rows)
    data = clustered_vectors(rows, args.dim, rng) if args.data == "clustered" else unit_vectors(rows, args.dim, rng)
    queries = queries_near(data, args.queries, rng)
    truth = exact_top(data, queries, args.k)
    nlist = max(16, min(4096, int(4 * np.sqrt(rows))))
    result: dict[str, Any] = {
        "engine": engine,
        "rows": rows,
        "data": args.data,
        "dim": args.dim,
        "k": args.k,
        "queries": args.queries,
        "load_before": loadavg(),
    }
    with engine_uri(engine, workdir / f"{engine}-{rows}") as (uri, rss):
        base = MilvusStore(uri, index=IndexChoice("FLAT"))
        try:
            base.ensure_database(DB)
            base.ensure_collection(DB, COLLECTION, args.dim)
            started = time.perf_counter()
            for lo in range(0, rows, args.batch):
                base.upsert(DB, COLLECTION, rows_for(data[lo : lo + args.batch], lo))
            result["insert_s"] = round(time.perf_counter() - started, 2)
            result["insert_rows_per_s"] = round(rows / result["insert_s"], 1)
            runs = []
            for n, index_type in enumerate(args.indexes):
                build, knob, values = INDEXES[index_type]
                if engine == "lite" and index_type == "FLAT" and rows > LITE_FLAT_MAX_ROWS:
                    runs.append({"index": index_type, "error": "skipped: Lite's brute force runs in Python (~0.2 s a search at 10k rows, linear)"})
                    continue
                build = {**build, "nlist": nlist} if index_type.startswith("IVF") else build
                try:
                    index_s = build_index(base, index_type, build, first=n == 0)
                except Exception as exc:
                    runs.append({"index": index_type, "error": f"{type(exc).__name__}: {str(exc)[:300]}"})
                    continue
                for value in values:
                    search = {knob: value} if knob else {}
                    store = MilvusStore(uri, index=IndexChoice(index_type, build, search))
                    try:
                        store.search(DB, COLLECTION, [queries[0].tolist()], args.k, output_fields=FIELDS)  # warm the client
                        lat1, hits, _ = timed_searches(store, queries, args.k, 1)
                        lat8, _, wall8 = timed_searches(store, queries, args.k, 8)
                    finally:
                        store.close()
                    recall = statistics.fmean(len(truth[i] & set(h)) / args.k for i, h in enumerate(hits))
                    runs.append(
                        {
                            "index": index_type,
                            "build": build,
                            "search": search,
                            "index_s": round(index_s, 2),
                            f"recall@{args.k}": round(recall, 4),
                            "p50_ms_c1": round(percentile(lat1, 50), 2),
                            "p99_ms_c1": round(percentile(lat1, 99), 2),
                            "p50_ms_c8": round(percentile(lat8, 50), 2),
                            "p99_ms_c8": round(percentile(lat8, 99), 2),
                            "qps_c8": round(len(queries) / wall8, 1),
                            "server_rss_mb": rss(),
                        }
                    )
                    print(f"{engine} {rows:,} {index_type} {search}: {runs[-1]}", file=sys.stderr, flush=True)
        finally:
            base.close()
    result["runs"] = runs
    good = [r for r in runs if r.get(f"recall@{args.k}", 0) >= args.min_recall]
    result["recommended"] = min(good, key=lambda r: r["p50_ms_c1"]) if good else None
    result["load_after"] = loadavg()
    return result


def markdown(results: list[dict[str, Any]], k: int) -> str:
    lines = [
        f"| engine | rows | index | build | search | index s | recall@{k} | p50 ms (c=1) | p99 ms (c=1) | p50 ms (c=8) | p99 ms (c=8) "
        "| QPS (c=8) | server RSS MB |",
        "|---|---:|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for res in results:
        for r in res["runs"]:
            if "error" in r:
                lines.append(f"| {res['engine']} | {res['rows']:,} | {r['index']} | - | - | - | {r['error'][:60]} | | | | | | |")
                continue
            mark = "**" if r is res["recommended"] else ""
            build = ", ".join(f"{a}={b}" for a, b in r["build"].items()) or "-"
            search = ", ".join(f"{a}={b}" for a, b in r["search"].items()) or "-"
            lines.append(
                f"| {res['engine']} | {res['rows']:,} | {mark}{r['index']}{mark} | {build} | {search} | {r['index_s']} | {r[f'recall@{k}']} | "
                f"{mark}{r['p50_ms_c1']}{mark} | {r['p99_ms_c1']} | {r['p50_ms_c8']} | {r['p99_ms_c8']} | {r['qps_c8']} | {r['server_rss_mb']} |"
            )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000], help="row counts to measure")
    parser.add_argument("--million", action="store_true", help="also measure 1,000,000 rows (hours and several GB on a small machine)")
    parser.add_argument("--engines", nargs="+", choices=ENGINES, default=list(ENGINES))
    parser.add_argument("--indexes", nargs="+", choices=list(INDEXES), default=list(INDEXES))
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=100, help="timed searches per setting and concurrency")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--batch", type=int, default=2048, help="rows per upsert call")
    parser.add_argument("--min-recall", type=float, default=0.98)
    parser.add_argument(
        "--data", choices=("random", "clustered"), default="random", help="uniform random unit vectors (the worst case) or clustered ones (topics)"
    )
    parser.add_argument("--hnsw", default=None, metavar="M,EFC", help="HNSW build parameters (default 16,200)")
    parser.add_argument("--ef", type=int, nargs="+", default=None, help="HNSW ef values to sweep (default 64 128 256)")
    parser.add_argument("--nprobe", type=int, nargs="+", default=None, help="IVF nprobe values to sweep (default 32 128)")
    parser.add_argument("--json-out", type=Path)
    add_smoke(parser)
    args = parser.parse_args(argv)
    if args.million:
        args.rows = [*args.rows, 1_000_000]
    if args.hnsw or args.ef:
        m, efc = (int(x) for x in (args.hnsw or "16,200").split(","))
        INDEXES["HNSW"] = ({"M": m, "efConstruction": efc}, "ef", tuple(args.ef or INDEXES["HNSW"][2]))
    if args.nprobe:
        INDEXES["IVF_FLAT"] = (INDEXES["IVF_FLAT"][0], "nprobe", tuple(args.nprobe))
    if args.smoke:
        # lite only unless --engines says otherwise: a milvus-local start costs 5-25 s (tests/store/test_engines.py runs one)
        engines = args.engines if "--engines" in (sys.argv[1:] if argv is None else argv) else ["lite"]
        args.rows, args.dim, args.queries, args.indexes, args.engines = [300], 16, 8, ["HNSW", "FLAT"], engines
        INDEXES["HNSW"] = (INDEXES["HNSW"][0], "ef", (64,))
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory(prefix="kbengine-bench-") as tmp:
        for engine in args.engines:
            for rows in args.rows:
                results.append(run_engine_rows(engine, rows, args, Path(tmp)))
    report = {"results": results, "table": markdown(results, args.k), "smoke": args.smoke}
    emit(report, args.json_out)
    print(report["table"], file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
