"""The store engines (``store.engine``): which Milvus holds the releases, which index it builds, when to move.

* ``lite``: the embedded Milvus Lite server of the workspace (:mod:`kbrelease.store.lite`).
* ``milvus-local``: a Milvus standalone server that kbrelease starts, checks and stops
  (:mod:`kbrelease.store.milvus_local`).
* ``server``: the Milvus at ``milvus.uri``, run by someone else.

Every engine holds the same thing (one database per release, the registry, the
live pointer), so the commands do not change with it, and ``kbrelease store
migrate`` moves releases between them as packages, without re-embedding.

The measured numbers behind the advice and the index choice live here, once
(docs/benchmarks.md shows the runs: ``bench/search_bench.py`` and
``bench/engine_bench.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kbrelease.config import Config, Engine
from kbrelease.trust.redact import redact_url

if TYPE_CHECKING:
    from kbrelease.release.registry import ReleaseRecord

LATENCY_GOAL_MS = 25.0
"""Search p50 the store should meet (issue 18; docs/benchmarks.md, goals table)."""

LITE_P50_MS: tuple[tuple[int, float], ...] = ((10_000, 7.2), (100_000, 61.9))
"""Milvus Lite 3.2.2 search p50 in ms by rows (384-d): docs/benchmarks.md section 3, ``bench/search_bench.py``.
It grows linearly: every search rebuilds a newest-version-per-key map over all rows in Python."""


def lite_p50_ms(rows: int) -> float:
    """The embedded store's search p50 at ``rows``, on the measured line."""
    (r0, t0), (r1, t1) = LITE_P50_MS
    return t0 + (rows - r0) * (t1 - t0) / (r1 - r0)


def _rows_at_goal() -> int:
    (r0, t0), (r1, t1) = LITE_P50_MS
    return int(round(r0 + (LATENCY_GOAL_MS - t0) * (r1 - r0) / (t1 - t0), -3))


ADVISE_ROWS = _rows_at_goal()
"""Rows of one collection past which the embedded store misses :data:`LATENCY_GOAL_MS` (about 39,000)."""

MIGRATE_COMMAND = "kbrelease store migrate --to milvus-local"


@dataclass(frozen=True)
class IndexChoice:
    """The vector index an engine builds for a release's collections, and how it is searched."""

    index_type: str
    build: dict[str, Any] = field(default_factory=dict)
    search: dict[str, Any] = field(default_factory=dict)

    def search_params(self, k: int) -> dict[str, Any]:
        """Search parameters for ``k`` hits (HNSW's ``ef`` must be at least k)."""
        params = dict(self.search)
        if "ef" in params:
            params["ef"] = max(int(params["ef"]), k)
        return {"metric_type": "COSINE", "params": params}

    def asdict(self) -> dict[str, Any]:
        return {"index_type": self.index_type, "build": dict(self.build), "search": dict(self.search)}


INDEXES: dict[Engine, IndexChoice] = {
    # Lite: its IVF_FLAT with nprobe 128 was exact (recall@10 1.00) at 10k and 100k rows, 10 ms p50 at 10k, and builds in
    # 2.7 s / 3.8 s where HNSW (M=16, efConstruction=200) took 33 s / 302 s and reached recall 0.94 / 0.56 at ef=256.
    "lite": IndexChoice("IVF_FLAT", {"nlist": 400}, {"nprobe": 128, "ef": 128}),
    # Milvus 2.3: FLAT was the only index with recall@10 >= 0.98 (1.00): 4.2 ms p50 at 10k rows, 14.0 ms at 100k, built in 5 s;
    # HNSW reached 0.91 / 0.52 at ef=256 and IVF_FLAT 0.81 / 0.47 at nprobe=128. Past ~150k rows FLAT leaves the goal (linear): measure.
    "milvus-local": IndexChoice("FLAT", {}, {"ef": 128, "nprobe": 128}),
    "server": IndexChoice("AUTOINDEX"),
}
"""The index of each engine, chosen by ``bench/engine_bench.py`` (the lowest p50 at concurrency 1 among the settings with
recall@10 >= 0.98 against exact search; docs/benchmarks.md, section 14). Searches of a managed engine carry both ``ef``
and ``nprobe`` (each index reads its own, ignores the other; checked on Lite 3.2.2 and Milvus 2.3.5), so releases built
under an earlier default (AUTOINDEX, i.e. HNSW) keep a sound search. A server run by someone else keeps AUTOINDEX and
its own search defaults: its operator (or Zilliz Cloud) tunes it."""


LARGE_INDEXES: dict[Engine, tuple[int, IndexChoice]] = {
    # Milvus 2.3, 1,000,000 clustered 384-d rows: HNSW M=16, efConstruction=64 built in 488 s and, at ef=128, reached recall@10
    # 0.993 at 22.6 ms p50 (c=1, load ~4) where FLAT grows linearly (14 ms at 100k). FLAT stays exact and fast up to this size.
    "milvus-local": (150_000, IndexChoice("HNSW", {"M": 16, "efConstruction": 64}, {"ef": 128, "nprobe": 128})),
}
"""Past ``rows`` in one collection, ``seal`` rebuilds the engine's index as this one (bench/engine_bench.py --data clustered)."""


def index_for(engine: Engine) -> IndexChoice:
    return INDEXES[engine]


def large_index_for(engine: Engine) -> tuple[int, IndexChoice] | None:
    """``(rows, index)``: the index a collection of more than ``rows`` rows gets at seal on this engine, if any."""
    return LARGE_INDEXES.get(engine)


def largest_sources(record: ReleaseRecord | None) -> dict[str, int]:
    """Rows per source of a release (none: {})."""
    return {} if record is None else {name: counts.rows for name, counts in record.sources.items()}


def advice(cfg: Config, rows_by_source: dict[str, int]) -> list[str]:
    """What to say when a source has outgrown the embedded store (nothing on the other engines)."""
    if cfg.store_engine != "lite":
        return []
    limit = cfg.store.advise_rows or ADVISE_ROWS
    (r0, t0), (r1, t1) = LITE_P50_MS
    out = []
    for name, rows in sorted(rows_by_source.items()):
        if rows > limit:
            out.append(
                f"source {name!r} has {rows:,} rows, past the {limit:,} where the embedded store (Milvus Lite) misses the "
                f"{LATENCY_GOAL_MS:.0f} ms search goal: measured {t0:.0f} ms p50 at {r0:,} rows and {t1:.0f} ms at {r1:,}, "
                f"growing linearly (about {lite_p50_ms(rows):.0f} ms here; docs/benchmarks.md). "
                f"Move it to a managed Milvus with `{MIGRATE_COMMAND}`"
            )
    return out


def managed_folder(cfg: Config) -> Path | None:
    """The data folder of the server kbrelease runs for this configuration (lite, milvus-local), or None (server)."""
    return None if cfg.store_engine == "server" else Path(cfg.milvus_uri)


def connect_uri(cfg: Config) -> str:
    """The URI a client connects to: the managed server's (started when needed) or ``milvus.uri``."""
    engine = cfg.store_engine
    if engine == "milvus-local":
        from kbrelease.store.milvus_local import ensure_server

        return ensure_server(Path(cfg.milvus_uri), cfg.store.start_timeout_s)
    if engine == "lite":
        from kbrelease.store.lite import ensure_server as ensure_lite

        return ensure_lite(Path(cfg.milvus_uri), idle_stop_minutes=cfg.store.idle_stop_minutes, servers_dir=cfg.store.servers_path)
    return cfg.milvus_uri


def server_status(cfg: Config) -> dict[str, Any]:
    """The engine, its URI or folder, and the managed server (pid, port, RSS) when one is running."""
    engine = cfg.store_engine
    found: dict[str, Any] | None = None
    folder = managed_folder(cfg)
    if engine == "milvus-local" and folder is not None:
        from kbrelease.store.milvus_local import running_server

        found = running_server(folder)
    elif engine == "lite" and folder is not None:
        from kbrelease.store.lite import running_server as running_lite
        from kbrelease.store.processes import group_rss_bytes

        lite = running_lite(folder)
        if lite is not None:
            found = {**lite, "uri": f"http://127.0.0.1:{lite['port']}", "rss_bytes": group_rss_bytes(int(lite["pid"]))}
    return {"engine": engine, "uri": redact_url(cfg.milvus_uri), "server": found, "index": index_for(engine).asdict()}


def stop_managed(cfg: Config) -> bool:
    """Stop the server kbrelease runs for this configuration; True if one was running (always False for ``server``)."""
    folder = managed_folder(cfg)
    if folder is None:
        return False
    if cfg.store_engine == "milvus-local":
        from kbrelease.store.milvus_local import stop_server

        return stop_server(folder)
    from kbrelease.store.lite import stop_server as stop_lite

    return stop_lite(folder)
