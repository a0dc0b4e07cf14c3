"""Parallel builds: one release built by many processes, each one shard of one source.

::

    kbrelease build --release v3 --prepare                  # freeze the data index, create the database, plan the shards
    kbrelease argo shards --release v3 --source docs        # ["1/3","2/3","3/3"]
    kbrelease build --release v3 --source docs --shard 2/3  # any order, at the same time, retried at will
    kbrelease build --release v3 --finalize                 # merge the shard results into the release record

This is what the steps of the rendered Argo workflow run. The registry record
is written only by ``prepare`` and ``finalize``, never by a shard, so parallel
shards cannot race on it: each shard writes its counts to its own file in the
release folder (``shards/<source>/<i>-of-<n>.json``, atomically), and
``finalize`` merges them. A shard owns a contiguous slice of the frozen data
index (sorted by path), rows have deterministic ids (``<file_id>:<chunk>``)
and are upserted, and a shard first drops partial files of its own slice: a
retried or repeated shard converges to the same rows, and two shards never
touch the same file.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kbrelease.atomic import atomic_write_json
from kbrelease.errors import ConfigError, ReleaseError
from kbrelease.index.data_index import SourceIndex, read_bundle, read_source_index
from kbrelease.release.build import MAX_REPORTED, Builder
from kbrelease.release.manifest import write_manifest
from kbrelease.release.registry import ReleaseRecord, SourceCounts, now_iso

PLAN_FILE = "plan.json"
SHARDS_DIR = "shards"
_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (1-based), written ``2/3``."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        m = _SHARD.match(text)
        if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
            raise ConfigError(f"shard {text!r} is invalid; write I/N with 1 <= I <= N, e.g. --shard 2/3")
        return cls(int(m.group(1)), int(m.group(2)))

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def bounds(self, n: int) -> tuple[int, int]:
        """The slice ``[start, end)`` of ``n`` sorted files that this shard builds."""
        return (self.index - 1) * n // self.count, self.index * n // self.count

    @property
    def file_name(self) -> str:
        return f"{self.index}-of-{self.count}.json"


def shard_count(files: int, shard_files: int) -> int:
    return max(1, math.ceil(files / shard_files))


@dataclass
class BuildPlan:
    """How a prepared release is split: shards per source. Written to ``releases/<r>/plan.json``."""

    release: str
    database: str
    shard_files: int
    sources: dict[str, int]
    """Source name -> number of shards."""
    prepared_at: float = field(default_factory=time.time)

    def shards(self, source: str) -> list[str]:
        if source not in self.sources:
            known = ", ".join(self.sources) or "none"
            raise ConfigError(f"source {source!r} is not in the data index of release {self.release!r} (sources: {known})")
        n = self.sources[source]
        return [str(Shard(i, n)) for i in range(1, n + 1)]

    def asdict(self) -> dict[str, Any]:
        return asdict(self) | {"shards": {s: self.shards(s) for s in self.sources}}


@dataclass
class ShardResult:
    """What one shard built: its counts, written for ``finalize``."""

    release: str
    source: str
    shard: str
    counts: SourceCounts
    seconds: float
    finished_at: str = field(default_factory=now_iso)

    def asdict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        c = self.counts
        return (
            f"release {self.release}, source {self.source}, shard {self.shard}: {c.files} files, "
            f"{c.embedded} embedded, {c.reused} reused, {c.skipped} skipped, {c.failed} failed in {self.seconds:.1f}s"
        )


def read_plan(folder: Path, release: str) -> BuildPlan:
    path = folder / PLAN_FILE
    if not path.is_file():
        raise ReleaseError(f"release {release!r} was not prepared for a parallel build; run `kbrelease build --release {release} --prepare` first")
    data = json.loads(path.read_text(encoding="utf-8"))
    data.pop("shards", None)
    return BuildPlan(**data)


def _require_building(record: ReleaseRecord, what: str) -> None:
    if record.state not in ("building", "failed"):
        raise ReleaseError(f"release {record.name!r} is already {record.state}; {what} only while it is building — releases are immutable, build a new one")


def prepare(builder: Builder, release: str | None, shard_files: int, index_dir: Path | None = None) -> BuildPlan:
    """Open the release (see :meth:`Builder.begin`), create its database and collections, and plan its shards.

    ``index_dir`` is the data index to build (default: the last sync's; a resolved bundle's folder otherwise).

    Always starts a fresh plan: earlier shard results of this release are
    discarded (its complete rows are kept and found again by the shards).
    """
    record = builder.begin(release, index_dir)
    folder = builder.ws.release_dir(record.name)
    bundle = read_bundle(builder.ws.release_index(record.name))
    builder.store.ensure_database(record.database)
    for src in bundle.data_manifest:
        builder.ensure_collection(record.database, src)
    shutil.rmtree(folder / SHARDS_DIR, ignore_errors=True)
    plan = BuildPlan(
        release=record.name,
        database=record.database,
        shard_files=shard_files,
        sources={s.channel: shard_count(s.file_count, shard_files) for s in bundle.data_manifest},
    )
    atomic_write_json(folder / PLAN_FILE, asdict(plan), mkdir=True)
    return plan


def build_shard(builder: Builder, release: str, source: str, shard: Shard) -> ShardResult:
    """Build one shard of one source into the prepared release; safe to run concurrently and to retry."""
    started = time.monotonic()
    folder = builder.ws.release_dir(release)
    plan = read_plan(folder, release)
    record = builder.registry.require(release)
    _require_building(record, "shards can be built")
    expected = plan.shards(source)
    if str(shard) not in expected:
        raise ConfigError(
            f"shard {shard} does not match the plan of release {release!r}: source {source!r} has {len(expected)} shard(s) "
            f"({', '.join(expected)}); see `kbrelease argo shards --release {release} --source {source}`"
        )
    src = read_bundle(builder.ws.release_index(release)).source(source)
    records = read_source_index(builder.ws.release_index(release) / src.index_file)
    start, end = shard.bounds(len(records))
    counts = builder.build_source(release, record.database, src, records[start:end], str(shard))
    result = ShardResult(release, source, str(shard), counts, round(time.monotonic() - started, 3))
    atomic_write_json(folder / SHARDS_DIR / source / shard.file_name, result.asdict(), mkdir=True)
    return result


def _merge(src: SourceIndex, results: list[dict[str, Any]]) -> SourceCounts:
    total = SourceCounts(collection=src.collection, modality=src.modality)
    for item in results:
        c = item["counts"]
        for key in ("files", "embedded", "reused", "skipped", "failed"):
            setattr(total, key, getattr(total, key) + int(c[key]))
        total.failures.extend(c["failures"])
        total.skips.extend(c["skips"])
        total.sparse = total.sparse or bool(c.get("sparse", False))
    total.failures = total.failures[:MAX_REPORTED]
    total.skips = total.skips[:MAX_REPORTED]
    return total


def finalize(builder: Builder, release: str) -> ReleaseRecord:
    """Merge every shard's result into the release record and mark it ``built``; names any shard still missing."""
    folder = builder.ws.release_dir(release)
    record = builder.registry.require(release)
    _require_building(record, "it can be finalized")
    plan = read_plan(folder, release)
    bundle = read_bundle(builder.ws.release_index(release))
    missing: list[tuple[str, str]] = []
    results: dict[str, list[dict[str, Any]]] = {}
    for src in bundle.data_manifest:
        results[src.channel] = []
        for name in plan.shards(src.channel):
            path = folder / SHARDS_DIR / src.channel / Shard.parse(name).file_name
            if path.is_file():
                results[src.channel].append(json.loads(path.read_text(encoding="utf-8")))
            else:
                missing.append((src.channel, name))
    if missing:
        listed = ", ".join(f"{s} {n}" for s, n in missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        first_source, first_shard = missing[0]
        raise ReleaseError(
            f"release {release!r} cannot be finalized: shard(s) not built yet: {listed}; build them "
            f"(e.g. `kbrelease build --release {release} --source {first_source} --shard {first_shard}`), then finalize again"
        )
    builder.use_release(release)
    record.sources = {}
    for src in bundle.data_manifest:
        counts = _merge(src, results[src.channel])
        records = read_source_index(builder.ws.release_index(release) / src.index_file)
        counts.removed = builder.removed_since_live(src, {r.file_id for r in records})
        builder.store.seal(record.database, src.collection)
        counts.rows = builder.store.count(record.database, src.collection)
        record.sources[src.channel] = counts
    record.state = "built"
    record.error = None
    record.build_seconds = round(time.time() - plan.prepared_at, 3)
    builder.registry.put(record)
    write_manifest(folder, record)
    return record
