"""Where a Milvus Lite 3.x search spends its time: cProfile of searches inside the engine.

Fills a collection the way ``search_bench.py`` does (kbrelease's schema, upserts
of 512 rows through ``MilvusStore`` to a ``milvus-lite server``, then
``MilvusStore.seal``), stops the server, opens the same data folder in this
process with ``milvus_lite.db.MilvusLite`` (no gRPC in between), and times
and profiles ``Collection.search`` calls with kbrelease's output fields.

Example::

    python bench/lite_search_profile.py --rows 100000 --out /tmp/kbres/lite-search-100k.txt
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from _common import add_smoke, percentile  # bench/ is the script's folder, first on sys.path
from search_bench import COLLECTION, DB, OUTPUT_FIELDS, rows_for, unit_vectors


def fill(data: Path, rows: int, dim: int, batch: int) -> None:
    from kbrelease.store.lite import ensure_server, stop_server
    from kbrelease.store.milvus import MilvusStore

    store = MilvusStore(ensure_server(data), timeout=600.0)
    try:
        store.ensure_database(DB)
        store.ensure_collection(DB, COLLECTION, dim)
        vectors = unit_vectors(rows, dim, np.random.default_rng(0))
        for lo in range(0, rows, batch):
            store.upsert(DB, COLLECTION, rows_for(vectors[lo : lo + batch], lo, 400))
        store.seal(DB, COLLECTION)
    finally:
        store.close()
        stop_server(data)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="cProfile Milvus Lite 3.x searches in-process.")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=30, help="timed (unprofiled) searches, then as many profiled ones")
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--top", type=int, default=20, help="functions listed")
    parser.add_argument("--out", type=Path, default=None, help="write the summary here too")
    add_smoke(parser)
    args = parser.parse_args(argv)
    if args.smoke:  # the server is its own: the data folder is opened in-process afterwards
        args.rows, args.dim, args.queries, args.top = 60, 8, 3, 5

    from milvus_lite.db import MilvusLite

    tmp = Path(tempfile.mkdtemp(prefix="kblite-prof-"))
    data = tmp / "milvus"
    try:
        fill(data, args.rows, args.dim, args.batch)
        db = MilvusLite(str(data))
        col = db.get_collection(COLLECTION, DB)
        started = time.perf_counter()
        col.load()
        load_s = time.perf_counter() - started
        queries = unit_vectors(5 + 2 * args.queries, args.dim, np.random.default_rng(1))
        fields = list(OUTPUT_FIELDS)
        for q in queries[:5]:
            col.search([q.tolist()], top_k=5, metric_type="COSINE", output_fields=fields)
        times = []
        for q in queries[5 : 5 + args.queries]:
            t = time.perf_counter()
            col.search([q.tolist()], top_k=5, metric_type="COSINE", output_fields=fields)
            times.append((time.perf_counter() - t) * 1000)
        profiler = cProfile.Profile()
        profiler.enable()
        for q in queries[5 + args.queries :]:
            col.search([q.tolist()], top_k=5, metric_type="COSINE", output_fields=fields)
        profiler.disable()
        db.close()
        buf = io.StringIO()
        buf.write(f"rows={args.rows} dim={args.dim}: in-process load {load_s:.1f}s, ")
        buf.write(f"search p50 {percentile(times, 50):.1f} ms, p90 {percentile(times, 90):.1f} ms over {args.queries} queries (no profiler)\n")
        buf.write(f"segments: {len(list((data / 'databases' / DB / 'collections' / COLLECTION).rglob('data_*.parquet')))} data files\n\n")
        pstats.Stats(profiler, stream=buf).sort_stats("tottime").print_stats(args.top)
        text = buf.getvalue()
        print(text)
        if args.out is not None:
            args.out.write_text(text)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
