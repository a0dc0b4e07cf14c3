"""End-to-end build benchmark: publish a corpus and report where the time and memory go.

One run = one ``KbRelease.publish()`` (sync → build → verify → switch) of a
text folder and/or an image folder into a fresh workspace, with the embedded
Milvus Lite server (or ``--milvus-uri``). The embedders are wrapped in timing
objects that expose the same attributes as the real ones, so the time spent
inside the models is measured exactly; the rest of the build is broken down
by timing kbrelease's own store calls and its read/chunk worker pipeline
(per source, in this process only; nothing in kbrelease is changed).

Reported (JSON, then one markdown line per source):

* files, chunks (text rows), images (image rows), failed/skipped files;
* model load, store start, publish total, sync, build per source, verify+switch seconds;
* chunks/s and images/s over each source's build time;
* embed share: seconds inside ``embed_texts`` / ``embed_arrays`` over the source's build seconds;
* the rest of the build: waiting for the read/chunk workers, upserts, flush/load/count, other;
* peak RSS: ``ru_maxrss`` of this process, the sampled maximum of this process and of the
  Milvus Lite server, and a CSV of RSS over time (``--rss-csv``) for plotting.

Examples::

    python bench/build_bench.py --text examples/corpus/text --images examples/corpus/images
    python bench/make_corpus.py --out /tmp/kbbench --paragraphs 10000 --files 500 --images 500
    python bench/build_bench.py --text /tmp/kbbench/text --images /tmp/kbbench/images \\
        --label 10k --json-out /tmp/build-10k.json --rss-csv /tmp/build-10k-rss.csv
    python bench/build_bench.py --text /tmp/kbbench/text --label 10k-text      # text only
    python bench/build_bench.py --text /tmp/kbbench/text --profile /tmp/build.prof

Each run gets its own workspace (deleted afterwards unless ``--keep``) and,
without ``--milvus-uri``, its own embedded Lite server, stopped at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import os
import platform
import pstats
import resource
import tempfile
import threading
import time
import tracemalloc
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
from _common import (  # bench/ is the script's folder, first on sys.path
    add_smoke,
    cpu_seconds,
    emit,
    finish_run_folder,
    lite_pid,
    loadavg,
    maxrss_mb,
    parse_sets,
    rss_kb,
    smoke_corpus,
    smoke_folder,
    smoke_sets,
    source_entries,
    write_config,
)

from kbrelease import KbRelease, load_config
from kbrelease.config import Config
from kbrelease.embedding.base import EmbedderIdentity, ImageEmbedder, TextEmbedder, Vectors

A = TypeVar("A")
B = TypeVar("B")


# --- timing -------------------------------------------------------------------


class Timers:
    """Seconds and calls per (source, name); the current source is set by the build_source wrapper."""

    def __init__(self) -> None:
        self.seconds: dict[tuple[str, str], float] = defaultdict(float)
        self.calls: dict[tuple[str, str], int] = defaultdict(int)
        self.source = "-"
        self.stage = "sync"  # sync, build, verify+switch: set by the wrappers of kb.build / kb.verify
        self._lock = threading.Lock()

    def add(self, name: str, seconds: float, source: str | None = None) -> None:
        key = (source or self.source, name)
        with self._lock:
            self.seconds[key] += seconds
            self.calls[key] += 1

    @contextlib.contextmanager
    def timed(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - started)

    def for_source(self, source: str) -> dict[str, dict[str, float]]:
        return {name: {"seconds": round(secs, 3), "calls": self.calls[(src, name)]} for (src, name), secs in sorted(self.seconds.items()) if src == source}


class TimedTextEmbedder:
    """A TextEmbedder that times ``embed_texts`` of the wrapped one."""

    def __init__(self, inner: TextEmbedder, timers: Timers) -> None:
        self.inner = inner
        self.timers = timers
        self.identity: EmbedderIdentity = inner.identity
        self.max_tokens: int = inner.max_tokens
        # The chunker uses the model's own tokenizer when there is one.
        self.hf_tokenizer: Any = getattr(inner, "hf_tokenizer", None)
        self.items = 0

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    def embed_texts(self, texts: Sequence[str]) -> Vectors:
        started = time.perf_counter()
        out = self.inner.embed_texts(texts)
        self.timers.add("embed", time.perf_counter() - started)
        self.items += len(texts)
        return out


class TimedImageEmbedder:
    """An ImageEmbedder that times ``embed_arrays`` of the wrapped one."""

    def __init__(self, inner: ImageEmbedder, timers: Timers) -> None:
        self.inner = inner
        self.timers = timers
        self.identity: EmbedderIdentity = inner.identity
        self.input_size: int = inner.input_size
        self.mean: tuple[float, float, float] = inner.mean
        self.std: tuple[float, float, float] = inner.std
        self.items = 0

    def embed_arrays(self, batch: npt.NDArray[np.float32]) -> Vectors:
        started = time.perf_counter()
        out = self.inner.embed_arrays(batch)
        self.timers.add("embed", time.perf_counter() - started)
        self.items += len(batch)
        return out


#: The MilvusStore methods a build calls, timed one by one. A name the store no longer has fails
#: the run (and tests/test_bench_smoke.py) instead of silently timing nothing.
STORE_METHODS = (
    "upsert",
    "seal",
    "ensure_loaded",
    "count",
    "file_rows",
    "iter_rows",
    "ensure_collection",
    "delete_files",
    "drop_database",
    "ensure_database",
    "search",
    "sample",
)
#: Groups of STORE_METHODS in the per-source breakdown.
SETUP_METHODS = ("ensure_collection", "file_rows", "delete_files")
SEAL_METHODS = ("seal", "ensure_loaded", "count")


def instrument(kb: KbRelease, timers: Timers) -> Callable[[], None]:
    """Time kbrelease's store calls, its per-source build and its worker pipeline; return an undo."""
    from kbrelease.release import build as build_mod

    store = kb.store
    for name in STORE_METHODS:
        original = getattr(store, name, None)
        if not callable(original):
            raise SystemExit(f"build_bench: MilvusStore has no method {name!r} any more; update STORE_METHODS in {__file__}")

        def wrapped(*args: Any, _original: Callable[..., Any] = original, _name: str = name, **kwargs: Any) -> Any:
            with timers.timed(f"store.{_name}"):
                return _original(*args, **kwargs)

        setattr(store, name, wrapped)

    originals: dict[str, Any] = {
        "bounded_map": build_mod.bounded_map,
        "build_source": build_mod.Builder.build_source,
        "_prepare_text": build_mod.Builder._prepare_text,
        "_prepare_image": build_mod.Builder._prepare_image,
    }
    orig_map = originals["bounded_map"]

    def bounded_map(fn: Callable[[A], B], items: Iterable[A], workers: int, window: int) -> Iterator[B]:
        gen = orig_map(fn, items, workers, window)
        while True:
            started = time.perf_counter()
            try:
                item = next(gen)
            except StopIteration:
                return
            finally:
                timers.add("wait_for_prepare", time.perf_counter() - started)
            yield item

    def build_source(self: Any, release: str, db: str, src: Any, records: Any = None, shard: str = "") -> Any:
        timers.source = src.channel
        started = time.perf_counter()
        try:
            return originals["build_source"](self, release, db, src, records, shard)
        finally:
            timers.add("build_source", time.perf_counter() - started)
            timers.source = "-"  # verify's store calls are reported apart

    def prepare(kind: str) -> Callable[..., Any]:
        inner = originals[kind]

        def run(self: Any, source: str, rec: Any) -> Any:
            wall, cpu = time.perf_counter(), time.thread_time()
            try:
                return inner(self, source, rec)
            finally:
                timers.add("prepare_wall_in_workers", time.perf_counter() - wall, source)
                timers.add("prepare_cpu_in_workers", time.thread_time() - cpu, source)

        return run

    build_mod.bounded_map = bounded_map
    build_mod.Builder.build_source = build_source  # type: ignore[method-assign]
    build_mod.Builder._prepare_text = prepare("_prepare_text")  # type: ignore[method-assign]
    build_mod.Builder._prepare_image = prepare("_prepare_image")  # type: ignore[method-assign]

    build, verify = kb.build, kb.verify

    def staged(stage: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            timers.stage = stage
            return fn(*args, **kwargs)

        return call

    kb.build = staged("build (other)", build)  # type: ignore[method-assign]
    kb.verify = staged("verify+switch", verify)  # type: ignore[method-assign]

    def undo() -> None:
        del kb.build, kb.verify
        build_mod.bounded_map = originals["bounded_map"]
        for name in ("build_source", "_prepare_text", "_prepare_image"):
            setattr(build_mod.Builder, name, originals[name])

    return undo


# --- memory -------------------------------------------------------------------


@dataclass
class Sample:
    seconds: float
    python_rss_mb: float
    server_rss_mb: float | None
    embedded_items: int
    phase: str
    python_cpu_s: float
    server_cpu_s: float | None


class RssSampler(threading.Thread):
    """Samples RSS and CPU time of this process and of the Lite server every ``interval`` seconds."""

    def __init__(self, interval: float, progress: Callable[[], int]) -> None:
        super().__init__(daemon=True, name="rss-sampler")
        self.interval = interval
        self.progress = progress
        self.server_pid: int | None = None
        self.samples: list[Sample] = []
        self.phase = "start"
        self.phase_of: Callable[[], str] | None = None
        self._stop_event = threading.Event()
        self.t0 = time.perf_counter()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.sample()
            self._stop_event.wait(self.interval)

    def sample(self) -> None:
        pid = os.getpid()
        server = rss_kb(self.server_pid) if self.server_pid else None
        server_cpu = cpu_seconds(self.server_pid) if self.server_pid else None
        self.samples.append(
            Sample(
                seconds=round(time.perf_counter() - self.t0, 3),
                python_rss_mb=round((rss_kb(pid) or 0) / 1024, 1),
                server_rss_mb=round(server / 1024, 1) if server is not None else None,
                embedded_items=self.progress(),
                phase=self.phase_of() if self.phase_of is not None else self.phase,
                python_cpu_s=round(cpu_seconds(pid) or 0.0, 2),
                server_cpu_s=round(server_cpu, 2) if server_cpu is not None else None,
            )
        )

    def stop(self) -> None:
        self._stop_event.set()
        self.join()
        self.sample()

    def write_csv(self, path: Path) -> None:
        names = list(Sample.__dataclass_fields__)
        lines = [",".join(names)]
        lines += [",".join("" if (v := getattr(s, n)) is None else str(v) for n in names) for s in self.samples]
        path.write_text("\n".join(lines) + "\n")

    def peak(self, attr: str, phase: str | None = None) -> float | None:
        values = [float(v) for s in self.samples if (v := getattr(s, attr)) is not None and (phase is None or s.phase == phase)]
        return max(values) if values else None

    def by_phase(self) -> dict[str, dict[str, float | None]]:
        """Peak RSS and CPU seconds (this process, the server) per phase; CPU between two samples goes to the later one's phase."""
        out: dict[str, dict[str, float | None]] = {}
        for prev, cur in zip(self.samples, self.samples[1:], strict=False):
            row = out.setdefault(cur.phase, {"seconds": 0.0, "python_cpu_s": 0.0, "server_cpu_s": 0.0})
            row["seconds"] = (row["seconds"] or 0.0) + cur.seconds - prev.seconds
            row["python_cpu_s"] = (row["python_cpu_s"] or 0.0) + cur.python_cpu_s - prev.python_cpu_s
            if cur.server_cpu_s is not None and prev.server_cpu_s is not None:
                row["server_cpu_s"] = (row["server_cpu_s"] or 0.0) + cur.server_cpu_s - prev.server_cpu_s
        for phase, row in out.items():
            for key, value in row.items():
                row[key] = round(value, 2) if value is not None else None
            row["python_peak_rss_mb"] = self.peak("python_rss_mb", phase)
            row["server_peak_rss_mb"] = self.peak("server_rss_mb", phase)
        return out


# --- the run ------------------------------------------------------------------


def bench_config(run_dir: Path, args: argparse.Namespace) -> Path:
    data: dict[str, Any] = {"sources": source_entries(args.text, args.images)}
    if args.milvus_uri:
        data["milvus"] = {"uri": args.milvus_uri}
    return write_config(run_dir, data)


def source_report(record: Any, name: str, timers: Timers) -> dict[str, Any]:
    counts = record.sources[name]
    t = timers.for_source(name)
    build_s = t.get("build_source", {}).get("seconds", 0.0)
    embed_s = t.get("embed", {}).get("seconds", 0.0)
    accounted = {
        "embed": embed_s,
        "wait_for_prepare": t.get("wait_for_prepare", {}).get("seconds", 0.0),
        "store.upsert": t.get("store.upsert", {}).get("seconds", 0.0),
        "store.setup": sum(t.get(f"store.{n}", {}).get("seconds", 0.0) for n in SETUP_METHODS),
        "store.seal+count": sum(t.get(f"store.{n}", {}).get("seconds", 0.0) for n in SEAL_METHODS),
    }
    accounted["other (row building, tolist, loop)"] = round(build_s - sum(accounted.values()), 3)
    rows = counts.rows
    return {
        "modality": counts.modality,
        "files": counts.files,
        "rows": rows,
        "embedded": counts.embedded,
        "failed": counts.failed,
        "skipped": counts.skipped,
        "build_seconds": round(build_s, 3),
        "rows_per_s": round(rows / build_s, 2) if build_s else None,
        "files_per_s": round(counts.files / build_s, 2) if build_s else None,
        "embed_seconds": round(embed_s, 3),
        "embed_share": round(embed_s / build_s, 4) if build_s else None,
        "embed_calls": t.get("embed", {}).get("calls", 0),
        "breakdown_seconds": {k: round(v, 3) for k, v in accounted.items()},
        "timers": t,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    base = Path(tempfile.mkdtemp(prefix="kbbuild-", dir=args.workdir))
    cfg_path = bench_config(base, args)
    cfg: Config = load_config(cfg_path, env={}, overrides=parse_sets(args.set))
    timers = Timers()
    text_emb: TimedTextEmbedder | None = None
    image_emb: TimedImageEmbedder | None = None
    sampler = RssSampler(args.sample_interval, lambda: (text_emb.items if text_emb else 0) + (image_emb.items if image_emb else 0))
    sampler.start()
    load_before = loadavg()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    wall0 = time.perf_counter()
    result: dict[str, Any] = {"label": args.label, "text": str(args.text or ""), "images": str(args.images or "")}
    kb: KbRelease | None = None
    server_dir: Path | None = None
    try:
        from kbrelease.embedding.factory import make_image_embedder, make_text_embedder

        sampler.phase = "load models"
        started = time.perf_counter()
        if args.text:
            text_emb = TimedTextEmbedder(make_text_embedder(cfg), timers)
        if args.images:
            image_emb = TimedImageEmbedder(make_image_embedder(cfg), timers)
        result["model_load_seconds"] = round(time.perf_counter() - started, 3)

        kb = KbRelease(cfg, text_embedder=text_emb, image_embedder=image_emb)
        sampler.phase = "start store"
        started = time.perf_counter()
        _ = kb.store  # starts (or connects to) Milvus
        result["store_start_seconds"] = round(time.perf_counter() - started, 3)
        if not cfg.milvus.uri:
            server_dir = Path(cfg.milvus_uri)
            sampler.server_pid = lite_pid(server_dir)
        undo = instrument(kb, timers)
        profiler = cProfile.Profile() if args.profile else None
        if args.tracemalloc:
            tracemalloc.start(args.tracemalloc)
            traced_before = tracemalloc.take_snapshot()
        sampler.phase_of = lambda: f"build {timers.source}" if timers.source != "-" else timers.stage
        try:
            if profiler is not None:
                profiler.enable()
            info = kb.publish()
        finally:
            if profiler is not None:
                profiler.disable()
            undo()
        sampler.phase_of = None
        sampler.phase = "done"
        if args.tracemalloc:
            current, peak = tracemalloc.get_traced_memory()
            grown = tracemalloc.take_snapshot().compare_to(traced_before, "lineno")
            tracemalloc.stop()
            result["python_heap_mb"] = {
                "current_after_publish": round(current / 1048576, 1),
                "peak_during_publish": round(peak / 1048576, 1),
                "top_growth": [str(stat) for stat in grown[:10]],
            }
        record = info.release
        result["release"] = record.name
        result["publish_seconds"] = round(info.seconds, 3)
        result["sync_seconds"] = round(info.sync.seconds, 3)
        result["build_seconds"] = round(record.build_seconds, 3)
        result["verify_switch_seconds"] = round(info.seconds - info.sync.seconds - record.build_seconds, 3)
        result["sources"] = {name: source_report(record, name, timers) for name in record.sources}
        result["verify_timers"] = timers.for_source("-")
        if profiler is not None:
            profiler.dump_stats(str(args.profile))
            buf = io.StringIO()
            pstats.Stats(profiler, stream=buf).sort_stats("tottime").print_stats(args.profile_top)
            args.profile.with_suffix(".txt").write_text(buf.getvalue())
            result["profile"] = str(args.profile)
        if sampler.server_pid:
            hwm = rss_kb(sampler.server_pid, "VmHWM")
            result["server_peak_rss_mb_vmhwm"] = round(hwm / 1024, 1) if hwm else None
    finally:
        sampler.stop()
        if kb is not None:
            kb.close()
        if server_dir is not None:
            from kbrelease.store.lite import stop_server

            stop_server(server_dir)
        finish_run_folder(base, args.keep, result, "workspace")
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    result["wall_seconds"] = round(time.perf_counter() - wall0, 3)
    result["cpu_seconds_python"] = round((cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime), 2)
    result["peak_rss_mb"] = maxrss_mb()
    result["peak_rss_sampled_mb"] = sampler.peak("python_rss_mb")
    result["server_peak_rss_sampled_mb"] = sampler.peak("server_rss_mb")
    result["by_phase"] = sampler.by_phase()
    result["load_before"] = load_before
    result["load_after"] = loadavg()
    result["machine"] = f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}"
    if args.rss_csv:
        sampler.write_csv(args.rss_csv)
        result["rss_csv"] = str(args.rss_csv)
    return result


MARKDOWN_HEADER = (
    "| run | source | files | chunks | images | publish s | sync s | build s | chunks/s | images/s | in model | peak RSS MB (py / server) | load 1/5/15 |\n"
    "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"
)


def markdown_lines(result: dict[str, Any]) -> list[str]:
    lines = []
    for name, s in result["sources"].items():
        text = s["modality"] == "text"
        lines.append(
            f"| {result['label']} | {name} ({s['modality']}) | {s['files']:,} | {s['rows'] if text else '-'} | {'-' if text else s['rows']} | "
            f"{result['publish_seconds']:.1f} | {result['sync_seconds']:.1f} | {s['build_seconds']:.1f} | "
            f"{s['rows_per_s'] if text else '-'} | {'-' if text else s['rows_per_s']} | {s['embed_share']:.0%} | "
            f"{result['peak_rss_mb']:.0f} / {result.get('server_peak_rss_sampled_mb') or 0:.0f} | {result['load_before']} → {result['load_after']} |"
        )
    return lines


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Publish a corpus end to end and report time, throughput, model share and memory.")
    parser.add_argument("--text", type=Path, default=None, help="text source folder (.md/.txt)")
    parser.add_argument("--images", type=Path, default=None, help="image source folder (.jpg/.png)")
    parser.add_argument("--label", default="run", help="name of this run in the report")
    parser.add_argument("--milvus-uri", default=None, help="http://host:port of a running Milvus (default: a fresh embedded Lite server)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override, e.g. text.batch_size=128 (repeatable)")
    parser.add_argument("--workdir", type=Path, default=None, help="parent of the temporary workspace (default: the system temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the workspace (and its Milvus data) afterwards")
    parser.add_argument("--sample-interval", type=float, default=0.5, help="seconds between RSS samples")
    parser.add_argument("--rss-csv", type=Path, default=None, help="write the RSS samples here (for bench/plot.py)")
    parser.add_argument("--json-out", type=Path, default=None, help="write the JSON report here too")
    parser.add_argument("--profile", type=Path, default=None, help="cProfile the publish (main thread) into this file, plus a .txt summary")
    parser.add_argument("--profile-top", type=int, default=40, help="functions in the .txt profile summary")
    parser.add_argument(
        "--tracemalloc",
        type=int,
        default=0,
        metavar="FRAMES",
        help="trace Python heap allocations during the publish (frames per trace, e.g. 1): peak Python heap and the lines that grew most",
    )
    add_smoke(parser)
    args = parser.parse_args(argv)
    if not args.smoke and not args.text and not args.images:
        parser.error("give --text and/or --images")
    for name in ("text", "images"):
        path = getattr(args, name)
        if path is not None and not path.is_dir():
            parser.error(f"--{name} {path} is not a folder")
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with smoke_folder(args.smoke, "kbbuild-smoke-") as tmp:
        if tmp is not None:
            corpus = smoke_corpus(tmp / "corpus")
            args.text, args.images, args.label, args.sample_interval = corpus / "text", corpus / "images", "smoke", 0.1
            args.workdir, args.keep = tmp, False
            args.set += smoke_sets("build")
        result = run(args)
    emit(result, args.json_out)
    print()
    print(MARKDOWN_HEADER)
    for line in markdown_lines(result):
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
