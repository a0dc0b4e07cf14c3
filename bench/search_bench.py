"""Search latency (and insert throughput) of the embedded Milvus, as kbrelease uses it.

For each row count (default 10,000 and 100,000) and each engine, the script
creates a collection with kbrelease's own schema (``MilvusStore.ensure_collection``:
384-d FLOAT_VECTOR, COSINE, AUTOINDEX, the same scalar fields), upserts random
unit vectors in ``--batch`` rows per call (kbrelease's ``milvus.insert_batch``),
makes it searchable the way kbrelease does (``MilvusStore.seal``),
times ``--cold-queries`` searches right away, waits for the engine's background index
builds to finish, then runs ``--warmup`` searches followed by ``--queries``
timed searches (k = ``--k``) through ``MilvusStore.search`` and reports p50,
p90, p99 and mean latency in milliseconds, plus the insert rate in rows/s.

Engines:

* ``server``: Milvus Lite 3.x as a ``milvus-lite server`` gRPC process on
  127.0.0.1, started and stopped with ``kbrelease.store.lite`` exactly as
  kbrelease's embedded store runs it (the default when ``milvus.uri`` is unset).
* ``direct``: Milvus Lite 3.x in local-file mode, ``MilvusClient("/path/milvus.db")``
  (pymilvus starts the Lite gRPC server on threads inside this process).
* ``lite25``: Milvus Lite 2.5.x (the C++ one) through a plain ``MilvusClient``
  on a ``.db`` file, in the default database (2.5 has no databases). Needs a
  separate virtualenv with ``milvus-lite==2.5.1`` (see bench/README.md); the
  schema and search call are copied from ``MilvusStore`` so they match. Run
  the script with that venv's Python and ``--engines lite25``.

Examples::

    python bench/search_bench.py                                   # server + direct, 10k and 100k rows
    python bench/search_bench.py --rows 100000 --engines server --json-out /tmp/s.json
    /tmp/ml25/bin/python bench/search_bench.py --engines lite25

One JSON object per (engine, rows) is printed as it finishes, then a markdown
table. ``--json-out`` also writes all results to a file.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from _common import add_smoke, group_cpu_seconds, loadavg, milvus, percentile, rss_mb  # bench/ is the script's folder, first on sys.path

ENGINES = ("server", "direct", "lite25")
DB = "kbbench"
COLLECTION = "bench"
OUTPUT_FIELDS = ("file", "file_id", "chunk_index", "heading", "text", "start")

SearchFn = Callable[[list[float]], list[list[dict[str, Any]]]]
UpsertFn = Callable[[list[dict[str, Any]]], None]


@dataclass
class Result:
    engine: str
    rows: int
    dim: int
    k: int
    queries: int
    warmup: int
    insert_seconds: float
    insert_rows_per_s: float
    flush_load_seconds: float
    cold_p50_ms: float | None
    cold_p90_ms: float | None
    settle_seconds: float | None
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    min_ms: float
    max_ms: float
    top1_self_hit: bool
    versions: dict[str, str] = field(default_factory=dict)
    ready: str = ""
    server_rss_mb: float | None = None
    load_before: str = ""
    load_after: str = ""

    def markdown(self) -> str:
        return (
            f"| {self.engine} | {self.rows:,} | {self.insert_rows_per_s:,.0f} | {self.flush_load_seconds:.1f} | "
            f"{_ms(self.cold_p50_ms)} | {_ms(self.settle_seconds)} | "
            f"{self.p50_ms:.1f} | {self.p90_ms:.1f} | {self.p99_ms:.1f} | {self.load_after} |"
        )


MARKDOWN_HEADER = (
    "| engine | rows | insert rows/s | ready s (seal) | cold p50 ms | settle s | p50 ms | p90 ms | p99 ms | load avg (1/5/15 min) |\n"
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"
)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def unit_vectors(n: int, dim: int, rng: np.random.Generator) -> npt.NDArray[np.float32]:
    v = rng.standard_normal((n, dim), dtype=np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v


def rows_for(vectors: npt.NDArray[np.float32], offset: int, text_chars: int) -> list[dict[str, Any]]:
    """Rows shaped like kbrelease's text rows (same fields, a chunk-sized text)."""
    filler = ("lorem ipsum dolor sit amet " * (text_chars // 27 + 1))[:text_chars]
    out = []
    for i, vec in enumerate(vectors):
        n = offset + i
        file_id = f"{n // 20:016x}"
        out.append(
            {
                "id": f"{file_id}:{n % 20}",
                "file_id": file_id,
                "file": f"topic/file-{n // 20:06d}.md",
                "chunk_index": n % 20,
                "n_chunks": 20,
                "checksum": f"{n:064x}",
                "vector": vec.tolist(),
                "start": 0,
                "heading": "Guide > Section",
                "text": filler,
                "metadata": {"source": "bench", "encoding": "utf-8"},
            }
        )
    return out


def wait_until_idle(pid: int | None, timeout: float, window: float = 2.0, busy: float = 0.05) -> float | None:
    """Seconds until ``pid`` (with the process group it leads) uses under ``busy`` of a core over ``window``
    (background index builds done)."""
    if pid is None or group_cpu_seconds(pid) is None:
        return None
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        before = group_cpu_seconds(pid) or 0.0
        time.sleep(window)
        if (group_cpu_seconds(pid) or 0.0) - before < busy * window:
            return time.perf_counter() - started - window
    return time.perf_counter() - started


# --- engines ----------------------------------------------------------------


@contextlib.contextmanager
def kbrelease_engine(
    kind: str, workdir: Path, dim: int, milvus_uri: str | None = None, db: str = DB
) -> Iterator[tuple[UpsertFn, Callable[[], None], SearchFn, dict[str, Any]]]:
    """Milvus Lite 3.x through kbrelease's MilvusStore, as a server (``milvus_uri``, or one of its own) or in-process."""
    import milvus_lite
    import pymilvus

    from kbrelease.store.milvus import MilvusStore

    info: dict[str, Any] = {"versions": {"milvus_lite": milvus_lite.__version__, "pymilvus": pymilvus.__version__}}
    with contextlib.ExitStack() as stack:
        if kind == "server":
            uri, info["server_pid"] = stack.enter_context(milvus(workdir / "milvus", milvus_uri))
        else:
            uri = str(workdir / "milvus.db")
            info["server_pid"] = os.getpid()
        store = MilvusStore(uri, timeout=120.0)
        try:
            yield from _store_engine(store, db, dim, info, drop=milvus_uri is not None)
        finally:
            store.close()
            if kind != "server":
                # pymilvus keeps the in-process Lite server until exit; stop it before the folder is deleted.
                from milvus_lite.server_manager import server_manager_instance

                server_manager_instance.release_server(uri)


def _store_engine(store: Any, db: str, dim: int, info: dict[str, Any], drop: bool) -> Iterator[tuple[UpsertFn, Callable[[], None], SearchFn, dict[str, Any]]]:
    store.ensure_database(db)
    store.ensure_collection(db, COLLECTION, dim, description="kbrelease search bench")

    def upsert(rows: list[dict[str, Any]]) -> None:
        store.upsert(db, COLLECTION, rows)

    def ready() -> None:
        # What kbrelease does after a source's last insert: flush, release, load (index built).
        store.seal(db, COLLECTION)

    info["ready"] = "MilvusStore.seal"

    def search(vec: list[float]) -> list[list[dict[str, Any]]]:
        hits: list[list[dict[str, Any]]] = store.search(db, COLLECTION, [vec], k=info["k"])
        return hits

    try:
        yield upsert, ready, search, info
    finally:
        if drop:
            store.drop_database(db)  # a server someone else runs keeps no bench data


@contextlib.contextmanager
def lite25_engine(workdir: Path, dim: int) -> Iterator[tuple[UpsertFn, Callable[[], None], SearchFn, dict[str, Any]]]:
    """Milvus Lite 2.5 (C++) with a plain MilvusClient; schema and search copied from MilvusStore."""
    import milvus_lite
    import pymilvus
    from pymilvus import DataType, MilvusClient

    client = MilvusClient(str(workdir / "milvus.db"))
    info: dict[str, Any] = {"versions": {"milvus_lite": getattr(milvus_lite, "__version__", "?"), "pymilvus": pymilvus.__version__}}
    try:
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False, description="kbrelease search bench")
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=128)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        schema.add_field("file_id", DataType.VARCHAR, max_length=64)
        schema.add_field("file", DataType.VARCHAR, max_length=2048)
        schema.add_field("chunk_index", DataType.INT64)
        schema.add_field("n_chunks", DataType.INT64)
        schema.add_field("start", DataType.INT64)
        schema.add_field("heading", DataType.VARCHAR, max_length=2048)
        schema.add_field("text", DataType.VARCHAR, max_length=65535)
        schema.add_field("checksum", DataType.VARCHAR, max_length=80)
        schema.add_field("metadata", DataType.JSON)
        index = client.prepare_index_params()
        index.add_index(field_name="vector", metric_type="COSINE", index_type="AUTOINDEX")
        client.create_collection(COLLECTION, schema=schema, index_params=index, consistency_level="Strong")
        # Milvus Lite 2.5 runs the C++ server as a child process; find it for its RSS.
        children = _child_pids(os.getpid())
        info["server_pid"] = children[0] if children else None

        def upsert(rows: list[dict[str, Any]]) -> None:
            client.upsert(COLLECTION, rows)

        def ready() -> None:
            client.flush(COLLECTION)
            client.load_collection(COLLECTION)

        info["ready"] = "flush + load_collection"

        def search(vec: list[float]) -> list[list[dict[str, Any]]]:
            res = client.search(
                COLLECTION,
                data=[list(map(float, vec))],
                limit=info["k"],
                filter="",
                output_fields=list(OUTPUT_FIELDS),
                search_params={"metric_type": "COSINE"},
            )
            return [[dict(hit) for hit in hits] for hits in res]

        yield upsert, ready, search, info
    finally:
        client.close()


def _child_pids(pid: int) -> list[int]:
    out = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            text = status.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("PPid:") and int(line.split()[1]) == pid:
                out.append(int(status.parent.name))
    return out


# --- the measurement ------------------------------------------------------------


def run_one(engine: str, rows: int, args: argparse.Namespace) -> Result:
    rng = np.random.default_rng(args.seed)
    workdir = Path(tempfile.mkdtemp(prefix=f"kbsearch-{engine}-{rows}-", dir=args.workdir))
    try:
        cm = lite25_engine(workdir, args.dim) if engine == "lite25" else kbrelease_engine(engine, workdir, args.dim, args.milvus_uri, args.db)
        with cm as (upsert, ready, search, info):
            info["k"] = args.k
            vectors = unit_vectors(rows, args.dim, rng)
            started = time.perf_counter()
            for lo in range(0, rows, args.batch):
                upsert(rows_for(vectors[lo : lo + args.batch], lo, args.text_chars))
            insert_s = time.perf_counter() - started
            started = time.perf_counter()
            ready()
            ready_s = time.perf_counter() - started
            # A stored vector must come back first: the collection is searchable and complete.
            probe = int(rng.integers(rows))
            hits = search(vectors[probe].tolist())
            self_hit = bool(hits and hits[0] and hits[0][0]["id"] == rows_for(vectors[probe : probe + 1], probe, 1)[0]["id"])
            queries = unit_vectors(args.cold_queries + args.warmup + args.queries, args.dim, rng)
            # Right after the collection is ready (what a search sees just after a publish): Lite 3.x builds
            # its indexes on a background thread after a flush, and searches meanwhile scan.
            cold = []
            for q in queries[: args.cold_queries]:
                t = time.perf_counter()
                search(q.tolist())
                cold.append((time.perf_counter() - t) * 1000)
            queries = queries[args.cold_queries :]
            pid = info.get("server_pid")
            settle_s = wait_until_idle(int(pid) if pid else None, args.settle_timeout) if args.settle_timeout > 0 else None
            load_before = loadavg()
            for q in queries[: args.warmup]:
                search(q.tolist())
            times = []
            for q in queries[args.warmup :]:
                t = time.perf_counter()
                res = search(q.tolist())
                times.append((time.perf_counter() - t) * 1000)
                if len(res[0]) != args.k:
                    raise SystemExit(f"{engine}: a search returned {len(res[0])} hits, expected {args.k}")
            ms = np.asarray(times)  # mean, min, max
            return Result(
                engine=engine,
                rows=rows,
                dim=args.dim,
                k=args.k,
                queries=args.queries,
                warmup=args.warmup,
                insert_seconds=round(insert_s, 2),
                insert_rows_per_s=round(rows / insert_s, 1),
                flush_load_seconds=round(ready_s, 2),
                cold_p50_ms=round(percentile(cold, 50), 2) if cold else None,
                cold_p90_ms=round(percentile(cold, 90), 2) if cold else None,
                settle_seconds=round(settle_s, 1) if settle_s is not None else None,
                p50_ms=round(percentile(times, 50), 2),
                p90_ms=round(percentile(times, 90), 2),
                p99_ms=round(percentile(times, 99), 2),
                mean_ms=round(float(ms.mean()), 2),
                min_ms=round(float(ms.min()), 2),
                max_ms=round(float(ms.max()), 2),
                top1_self_hit=self_hit,
                versions=info["versions"],
                ready=info.get("ready", ""),
                server_rss_mb=round(r, 1) if pid and (r := rss_mb(int(pid))) is not None else None,
                load_before=load_before,
                load_after=loadavg(),
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Search latency and insert rate of the embedded Milvus (kbrelease's schema).")
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000], help="row counts to measure")
    parser.add_argument("--engines", nargs="+", choices=ENGINES, default=["server", "direct"], help="engines to measure")
    parser.add_argument("--dim", type=int, default=384, help="vector dimension (384: all-MiniLM-L6-v2)")
    parser.add_argument("--queries", type=int, default=200, help="timed queries")
    parser.add_argument("--warmup", type=int, default=10, help="untimed queries first")
    parser.add_argument("--k", type=int, default=5, help="hits per query")
    parser.add_argument("--batch", type=int, default=512, help="rows per upsert call (kbrelease's milvus.insert_batch)")
    parser.add_argument("--text-chars", type=int, default=400, help="characters in each row's text field")
    parser.add_argument(
        "--cold-queries", type=int, default=20, help="queries timed right after the collection is made ready, before the engine settles (0: none)"
    )
    parser.add_argument(
        "--settle-timeout",
        type=float,
        default=300.0,
        help="before the warm-ups, wait up to this long for the engine's background work (index builds) to end; 0: do not wait",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None, help="parent folder for the temporary data (default: the system temp dir)")
    parser.add_argument("--json-out", type=Path, default=None, help="also write every result here as a JSON list")
    parser.add_argument("--milvus-uri", default=None, help="engine server: http://host:port of a running Milvus (default: a fresh embedded Lite server)")
    parser.add_argument("--db", default=DB, help="database of the bench collection (dropped at the end on --milvus-uri)")
    add_smoke(parser)
    args = parser.parse_args(argv)
    if args.smoke:
        args.rows, args.dim, args.queries, args.warmup, args.cold_queries, args.settle_timeout = [60], 8, 5, 1, 2, 0.0
        args.engines = [e for e in args.engines if e != "lite25"]
        args.db = f"{DB}_smoke_{os.getpid()}"
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
    results: list[Result] = []
    for engine in args.engines:
        for rows in args.rows:
            result = run_one(engine, rows, args)
            results.append(result)
            print(json.dumps(asdict(result)), flush=True)
    print(f"\nmachine: {os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}\n")
    print(MARKDOWN_HEADER)
    for result in results:
        print(result.markdown())
    if args.json_out is not None:
        args.json_out.write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
