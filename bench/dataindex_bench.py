"""Data-index API throughput and memory over a generated 1,000,000-record index.

Generates a workspace with one resolved bundle (``bench``, version ``v1``) of
``--records`` file records split over two sources (60 % / 40 %), written the
way kbrelease writes them (sorted by path, zstd, 16,384-row groups), then
starts the service's data-index router under uvicorn in a **separate
process** (so its RSS is the service's alone) and measures from this process:

* first-page latency of ``GET /files?limit=100``: p50/p90/max over
  ``--queries`` requests, for no filter, a path prefix deep in the index, a
  cursor in the middle of the index, and a time range (goal: ≤ 100 ms);
* full-stream throughput, records/s, for NDJSON and Arrow IPC at the given
  batch sizes (the reader only splits lines / decodes Arrow; ``--client``
  also times ``DataIndexClient.stream_data``, which builds a ``FileInfo``
  per record);
* the service's RSS during each stream, sampled every 50 ms from
  /proc/<pid>/status (goal: flat, not growing with the index).

    python bench/dataindex_bench.py                       # 1M records, default batches
    python bench/dataindex_bench.py --records 200000 --json-out /tmp/di.json

Prints one JSON object per measurement and a markdown summary.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from _common import add_smoke, emit, free_port, percentile, rss_mb, src_env  # bench/ is the script's folder, first on sys.path

SOURCES = (("images", 0.6, ".jpg"), ("docs", 0.4, ".md"))
T0 = datetime(2025, 6, 1, tzinfo=UTC)


def generate(ws: Path, records: int) -> dict[str, Any]:
    """The bundle folder ws/bundles/bench/v1 with ``records`` rows; returns facts for the queries."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from kbrelease.index.data_index import ROW_GROUP_ROWS, SourceIndex, arrow_schema, table_checksum, write_bundle

    folder = ws / "bundles" / "bench" / "v1"
    folder.mkdir(parents=True)
    (ws / "bundles" / "bench" / "LATEST").write_text("v1\n")
    entries = []
    facts: dict[str, Any] = {}
    for name, share, suffix in SOURCES:
        n = int(records * share)
        # Paths sort like time: 2025/06/DD/HH/<name>_<i>. One file per ~1.3 s.
        times = [T0 + timedelta(seconds=i * 1.3) for i in range(n)]
        paths = [f"{t:%Y/%m/%d/%H}/{name}_{i:07d}{suffix}" for i, t in enumerate(times)]
        table = pa.table(
            {
                "file_id": [hashlib.sha256(f"{name}\0{p}".encode()).hexdigest()[:20] for p in paths],
                "relative_path": paths,
                "timestamp": times,
                "size_bytes": [1000 + i % 5000 for i in range(n)],
                "checksum": [hashlib.sha256(p.encode()).hexdigest() for p in paths],
                "etag": [""] * n,
                "metadata": [json.dumps({"camera_id": ("front", "rear")[i % 2], "seq": i}) for i in range(n)],
            },
            schema=arrow_schema(),
        )
        pq.write_table(table, folder / f"{name}.parquet", compression="zstd", row_group_size=ROW_GROUP_ROWS)
        entries.append(
            SourceIndex(
                name, "image" if suffix == ".jpg" else "text", name, "1.0", f"s3://bench/{name}", f"{name}.parquet", n,
                int(sum(table["size_bytes"].to_pylist())), table_checksum(table),
                {"start_time": times[0].isoformat(), "end_time": times[-1].isoformat()},
            )
        )  # fmt: skip
        facts[name] = {"n": n, "mid_path": paths[n // 2], "mid_prefix": paths[n // 2][:13], "mid_time": times[n // 2]}
    write_bundle(folder, entries, name="bench", meta={"bundle_version": "v1"})
    return facts


def serve(workspace: str, port: int) -> None:
    """The service side: the data-index router alone under uvicorn."""
    import uvicorn
    from fastapi import FastAPI

    from kbrelease import KbRelease, load_config
    from kbrelease.service.bundles import router

    cfg = load_config(None, env={"KBRELEASE_WORKSPACE": workspace})
    app = FastAPI()
    app.state.kb = KbRelease(cfg)
    app.state.cfg = cfg
    app.include_router(router)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


class RssSampler:
    """RSS of the service process every ``every`` seconds while a stream runs."""

    def __init__(self, pid: int, every: float = 0.05) -> None:
        self.pid, self.every = pid, every
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(rss_mb(self.pid) or 0.0)
            self._stop.wait(self.every)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict[str, float]:
        s = self.samples or [0.0]
        tenth = max(1, len(s) // 10)
        return {
            "rss_start_mb": round(s[0], 1),
            "rss_max_mb": round(max(s), 1),
            "rss_first_10pct_mb": round(statistics.mean(s[:tenth]), 1),
            "rss_last_10pct_mb": round(statistics.mean(s[-tenth:]), 1),
        }


def latency(client: httpx.Client, url: str, params: dict[str, Any], queries: int) -> dict[str, Any]:
    times = []
    for _ in range(queries):
        t = time.perf_counter()
        r = client.get(url, params=params)
        times.append((time.perf_counter() - t) * 1000)
        assert r.status_code == 200, r.text
        assert r.json()["count"] > 0, params
    return {"p50_ms": round(percentile(times, 50), 1), "p90_ms": round(percentile(times, 90), 1), "max_ms": round(max(times), 1)}


def stream(client: httpx.Client, pid: int, fmt: str, batch_size: int, expected: int) -> dict[str, Any]:
    import pyarrow as pa

    headers = {"Accept": "application/vnd.apache.arrow.stream"} if fmt == "arrow" else {}
    records = 0
    nbytes = 0
    with RssSampler(pid) as sampler:
        t = time.perf_counter()
        with client.stream("GET", "/api/v1/bundles/bench/stream", params={"batch_size": batch_size}, headers=headers) as response:
            assert response.status_code == 200, response.read()
            if fmt == "arrow":
                chunks = response.iter_bytes()

                class Reader:
                    buf = b""

                    def read(self, n: int = -1) -> bytes:
                        while len(self.buf) < n or n < 0:
                            try:
                                self.buf += next(chunks)
                            except StopIteration:
                                break
                        out, self.buf = (self.buf, b"") if n < 0 else (self.buf[:n], self.buf[n:])
                        return out

                    closed = False

                for batch in pa.ipc.open_stream(Reader()):  # type: ignore[arg-type]
                    records += batch.num_rows
                    nbytes += batch.nbytes
            else:
                from kbrelease.index.client import _lines

                for line in _lines(response.iter_bytes()):
                    nbytes += len(line)
                    if line.startswith(b'{"batch"'):
                        at = line.index(b'"count":') + 8
                        records += int(line[at : line.index(b",", at)])
        seconds = time.perf_counter() - t
    assert records == expected, (records, expected)
    return _rate(fmt, batch_size, records, seconds) | sampler.summary()


def client_stream(base: str, pid: int, batch_size: int, expected: int) -> dict[str, Any]:
    from kbrelease.index.client import DataIndexClient

    with DataIndexClient(base) as client, RssSampler(pid) as sampler:
        t = time.perf_counter()
        records = sum(len(b) for b in client.stream_data("bench", batch_size=batch_size))
        seconds = time.perf_counter() - t
    assert records == expected
    return _rate("client.stream_data", batch_size, records, seconds) | sampler.summary()


def _rate(fmt: str, batch_size: int, records: int, seconds: float) -> dict[str, Any]:
    return {"format": fmt, "batch_size": batch_size, "records": records, "seconds": round(seconds, 2), "records_per_s": int(records / seconds)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=30)
    ap.add_argument("--batches", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--client", action="store_true", help="also time DataIndexClient.stream_data")
    ap.add_argument("--json-out", type=Path)
    ap.add_argument("--serve", nargs=2, metavar=("WORKSPACE", "PORT"), help=argparse.SUPPRESS)
    add_smoke(ap)
    args = ap.parse_args()
    if args.smoke:
        args.records, args.queries, args.batches, args.client = 200, 3, [50], True
    if args.serve:
        serve(args.serve[0], int(args.serve[1]))
        return 0

    from kbrelease.index.query import Cursor, FileFilter, IndexQuery

    ws = Path(tempfile.mkdtemp(prefix="kb-dibench-"))
    out: list[dict[str, Any]] = []
    proc = None
    try:
        t = time.perf_counter()
        facts = generate(ws, args.records)
        print(json.dumps({"generated_records": args.records, "seconds": round(time.perf_counter() - t, 1)}), flush=True)
        folder = ws / "bundles" / "bench" / "v1"
        index_mb = sum(p.stat().st_size for p in folder.glob("*.parquet")) / 1e6
        query = IndexQuery(folder)
        mid = facts["images"]
        cursor = Cursor("images", mid["mid_path"], FileFilter().fingerprint(query.bundle)).encode()

        port = free_port()
        proc = subprocess.Popen([sys.executable, __file__, "--serve", str(ws), str(port)], env=src_env())
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=120) as client:
            for _ in range(200):
                try:
                    if client.get("/api/v1/bundles").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            idle_rss = rss_mb(proc.pid) or 0.0
            hour_later = mid["mid_time"] + timedelta(hours=1)
            cases = {
                "first page, no filter": {"limit": 100},
                "first page, prefix mid-index": {"limit": 100, "source": "images", "prefix": mid["mid_prefix"]},
                "page after a mid-index cursor": {"limit": 100, "cursor": cursor},
                "first page, time range mid-index": {"limit": 100, "start_time": mid["mid_time"].isoformat(), "end_time": hour_later.isoformat()},
            }  # fmt: skip
            for label, params in cases.items():
                res = {"measure": label} | latency(client, "/api/v1/bundles/bench/files", params, args.queries)
                print(json.dumps(res), flush=True)
                out.append(res)
            for fmt in ("ndjson", "arrow"):
                for bs in args.batches:
                    res = {"measure": "stream"} | stream(client, proc.pid, fmt, bs, args.records)
                    print(json.dumps(res), flush=True)
                    out.append(res)
            if args.client:
                res = {"measure": "stream"} | client_stream(base, proc.pid, args.batches[-1], args.records)
                print(json.dumps(res), flush=True)
                out.append(res)
        meta = {"records": args.records, "index_mb": round(index_mb, 1), "service_idle_rss_mb": round(idle_rss, 1), "loadavg": os.getloadavg()}
        emit({"meta": meta, "results": out}, args.json_out)
        print("\n| measure | p50 ms | p90 ms | max ms |\n|---|---|---|---|")
        for r in out:
            if "p50_ms" in r:
                print(f"| {r['measure']} | {r['p50_ms']} | {r['p90_ms']} | {r['max_ms']} |")
        print("\n| stream | batch | records/s | seconds | service RSS start → max (MB) | first 10 % → last 10 % (MB) |\n|---|---|---|---|---|---|")
        for r in out:
            if r.get("measure") == "stream":
                print(
                    f"| {r['format']} | {r['batch_size']} | {r['records_per_s']:,} | {r['seconds']} | {r['rss_start_mb']} → {r['rss_max_mb']} | "
                    f"{r['rss_first_10pct_mb']} → {r['rss_last_10pct_mb']} |"
                )
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
        shutil.rmtree(ws, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
