"""Incremental release benchmark: a full publish, then about 1 % of the text files changed, then a second publish.

The corpus (``make_corpus.py`` output: ``DIR/text`` and ``DIR/images``) is copied
into a temporary run folder, so the original stays as generated. Then:

1. full build: ``KbRelease.publish()`` into a fresh workspace and embedded Milvus
   Lite server, with the embedders wrapped in counting/timing objects;
2. change the copy: ``--edit-share`` of the text files get one paragraph
   rewritten (``make_corpus.py --mutate-share``), ``--add-share`` new text files
   are written, ``--delete-share`` unchanged text files are removed;
3. incremental build in the SAME workspace (warm embedding cache, same
   server): ``kb.sync()``, ``kb.build()``, ``kb.verify(name)``, ``kb.switch(name)``
   timed one by one, embed calls/texts counted, store calls timed
   (``build_bench.instrument``);
4. check: texts embedded == chunk texts of the new release that the old one
   does not have (both collections read back from Milvus);
5. ratio incremental total / full publish seconds (goal: ≤ 5 %).

Model loading and the server start are outside both timings (the models are
loaded once and shared by both runs; they are reported apart).

Example::

    python bench/make_corpus.py --out /tmp/kbbench --paragraphs 10000 --files 500 --images 500
    python bench/incremental_bench.py --corpus /tmp/kbbench --json-out /tmp/kbres/incremental_10k.json
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import build_bench  # bench/ is the script's folder, first on sys.path
import make_corpus
from _common import (
    add_smoke,
    check_corpus,
    cpu_seconds,
    emit,
    finish_run_folder,
    lite_pid,
    loadavg,
    own_cpu,
    parse_sets,
    smoke_corpus,
    smoke_folder,
    smoke_sets,
    source_entries,
    write_config,
)

from kbrelease import KbRelease, load_config
from kbrelease.config import Config
from kbrelease.release.registry import ReleaseRecord

QUERY_LIMIT = 16384


def cpu_now(server_pid: int | None) -> tuple[float, float]:
    """CPU seconds (user + system) so far of this process and of the Lite server."""
    return own_cpu(), cpu_seconds(server_pid) or 0.0


# --- release contents ----------------------------------------------------------


def chunk_texts(kb: KbRelease, record: ReleaseRecord, source: str) -> list[str]:
    """The ``text`` field of every row of ``source`` in ``record``'s database."""
    collection = record.sources[source].collection
    client = kb.store.client(record.database)
    rows = record.sources[source].rows
    if rows <= QUERY_LIMIT:
        return [r["text"] for r in client.query(collection, filter="", output_fields=["text"], limit=QUERY_LIMIT)]
    texts: list[str] = []
    it = client.query_iterator(collection_name=collection, filter="", output_fields=["text"], batch_size=4096)
    try:
        while batch := it.next():
            texts.extend(r["text"] for r in batch)
    finally:
        it.close()
    return texts


def counts_of(record: ReleaseRecord) -> dict[str, dict[str, Any]]:
    return {
        name: {"modality": c.modality, "files": c.files, "rows": c.rows, "embedded": c.embedded, "reused": c.reused, "removed": c.removed, "failed": c.failed}
        for name, c in record.sources.items()
    }


def store_timers(timers: Any) -> dict[str, dict[str, float]]:
    """All timers, keyed ``source/name``."""
    return {f"{src}/{name}": {"seconds": round(secs, 3), "calls": timers.calls[(src, name)]} for (src, name), secs in sorted(timers.seconds.items())}


# --- the run ------------------------------------------------------------------


def bench_config(run_dir: Path, corpus: Path, sets: dict[str, Any], milvus_uri: str | None) -> Config:
    images = corpus / "images"
    data: dict[str, Any] = {"sources": source_entries(corpus / "text", images if images.is_dir() else None)}
    if milvus_uri:
        data["milvus"] = {"uri": milvus_uri}
    return load_config(write_config(run_dir, data), env={}, overrides=sets)


def project(
    cfg: Config, text_model: Any, image_model: Any
) -> tuple[KbRelease, build_bench.Timers, build_bench.TimedTextEmbedder, build_bench.TimedImageEmbedder | None, float]:
    """A KbRelease with timing wrappers around the shared models, its store connected: (kb, timers, text, image, connect seconds)."""
    timers = build_bench.Timers()
    image = build_bench.TimedImageEmbedder(image_model, timers) if image_model is not None else None
    text = build_bench.TimedTextEmbedder(text_model, timers)
    kb = KbRelease(cfg, text_embedder=text, image_embedder=image)
    started = time.perf_counter()
    _ = kb.store
    return kb, timers, text, image, time.perf_counter() - started


def embed_counts(timers: Any, text_emb: Any, image_emb: Any) -> dict[str, Any]:
    calls = {src: n for (src, name), n in timers.calls.items() if name == "embed"}
    secs = {src: round(s, 3) for (src, name), s in timers.seconds.items() if name == "embed"}
    return {"texts": text_emb.items, "images": image_emb.items if image_emb is not None else 0, "calls_by_source": calls, "seconds_by_source": secs}


def run(args: argparse.Namespace) -> dict[str, Any]:
    from kbrelease.embedding.factory import make_image_embedder, make_text_embedder
    from kbrelease.store.lite import stop_server

    base = Path(tempfile.mkdtemp(prefix="kbincr-", dir=args.workdir))
    corpus = base / "corpus"
    result: dict[str, Any] = {"corpus": str(args.corpus), "machine": f"{os.cpu_count()} cores", "load_start": loadavg()}
    server_dir: Path | None = None
    kbs: list[KbRelease] = []
    try:
        shutil.copytree(args.corpus / "text", corpus / "text")
        if (args.corpus / "images").is_dir():
            shutil.copytree(args.corpus / "images", corpus / "images")
        cfg = bench_config(base, corpus, parse_sets(args.set), args.milvus_uri)
        server_dir = None if args.milvus_uri else Path(cfg.milvus_uri)

        started = time.perf_counter()
        text_model = make_text_embedder(cfg)
        image_model = make_image_embedder(cfg) if (corpus / "images").is_dir() else None
        result["model_load_seconds"] = round(time.perf_counter() - started, 3)

        # 1. full build
        kb, timers, text_emb, image_emb, connect_s = project(cfg, text_model, image_model)
        kbs.append(kb)
        result["store_start_seconds"] = round(connect_s, 3)
        server_pid = lite_pid(server_dir) if server_dir is not None else None
        undo = build_bench.instrument(kb, timers)
        load_before = loadavg()
        cpu_before = cpu_now(server_pid)
        try:
            info = kb.publish()
        finally:
            undo()
        cpu_full = [b - a for a, b in zip(cpu_before, cpu_now(server_pid), strict=True)]
        full = info.release
        result["full"] = {
            "release": full.name,
            "load": f"{load_before} → {loadavg()}",
            "publish_seconds": round(info.seconds, 3),
            "sync_seconds": round(info.sync.seconds, 3),
            "build_seconds": round(full.build_seconds, 3),
            "verify_switch_seconds": round(info.seconds - info.sync.seconds - full.build_seconds, 3),
            "cpu_seconds": {"process": round(cpu_full[0], 2), "server": round(cpu_full[1], 2), "total": round(sum(cpu_full), 2)},
            "sources": counts_of(full),
            "embedded_by_wrappers": embed_counts(timers, text_emb, image_emb),
            "timers": store_timers(timers),
        }
        print(f"full publish: {info.seconds:.1f} s", file=sys.stderr)

        # 2. the change
        result["change"] = make_corpus.change_text(corpus, args.edit_share, args.add_share, args.delete_share, args.seed)

        # 3. incremental build, same workspace (warm cache), same server
        kb, timers, text_emb, image_emb, connect_s = project(cfg, text_model, image_model)
        kbs.append(kb)
        undo = build_bench.instrument(kb, timers)
        profiler = cProfile.Profile() if args.profile else None
        load_before = loadavg()
        steps: dict[str, float] = {}
        cpu_before = cpu_now(server_pid)
        try:
            if profiler is not None:
                profiler.enable()
            t0 = time.perf_counter()
            kb.sync()
            t1 = time.perf_counter()
            record = kb.build()
            t2 = time.perf_counter()
            kb.verify(record.name)
            t3 = time.perf_counter()
            kb.switch(record.name)
            t4 = time.perf_counter()
        finally:
            if profiler is not None:
                profiler.disable()
            undo()
        cpu_inc = [b - a for a, b in zip(cpu_before, cpu_now(server_pid), strict=True)]
        steps = {"sync": t1 - t0, "build": t2 - t1, "verify": t3 - t2, "switch": t4 - t3, "total": t4 - t0}
        record = kb.release(record.name)
        reused_rows = sum(c.reused for c in record.sources.values())
        result["incremental"] = {
            "release": record.name,
            "load": f"{load_before} → {loadavg()}",
            "store_connect_seconds": round(connect_s, 3),
            "seconds": {k: round(v, 3) for k, v in steps.items()},
            "verify_switch_seconds": round(steps["verify"] + steps["switch"], 3),
            "cpu_seconds": {"process": round(cpu_inc[0], 2), "server": round(cpu_inc[1], 2), "total": round(sum(cpu_inc), 2)},
            "sources": counts_of(record),
            "embedded_by_wrappers": embed_counts(timers, text_emb, image_emb),
            "reused_rows": reused_rows,
            "rows_copied_per_s": round(reused_rows / steps["build"], 1) if steps["build"] else None,
            "timers": store_timers(timers),
            "build_breakdown": {name: build_bench.source_report(record, name, timers)["breakdown_seconds"] for name in record.sources},
            "prepare_in_workers": {
                name: {k: timers.for_source(name).get(k, {}).get("seconds", 0.0) for k in ("prepare_wall_in_workers", "prepare_cpu_in_workers")}
                for name in record.sources
            },
        }
        if profiler is not None:
            buf = io.StringIO()
            pstats.Stats(profiler, stream=buf).sort_stats(args.profile_sort).print_stats(args.profile_top)
            args.profile.write_text(buf.getvalue())
            result["incremental"]["profile"] = str(args.profile)

        # 4. check: texts embedded == chunk texts that are new
        text_sources = [name for name, c in record.sources.items() if c.modality == "text"]
        check: dict[str, Any] = {}
        for name in text_sources:
            old_texts = chunk_texts(kb, full, name)
            new_texts = chunk_texts(kb, record, name)
            fresh = set(new_texts) - set(old_texts)
            check[name] = {
                "old_rows_read": len(old_texts),
                "new_rows_read": len(new_texts),
                "new_chunk_rows": sum(1 for t in new_texts if t in fresh),
                "new_distinct_texts": len(fresh),
                "dropped_distinct_texts": len(set(old_texts) - set(new_texts)),
                "embedded_in_record": record.sources[name].embedded,
                "texts_sent_to_model": text_emb.items,
                "match": record.sources[name].embedded == len(fresh) == text_emb.items,
            }
        result["check"] = check

        # 5. ratio
        result["ratio_incremental_over_full"] = round(steps["total"] / info.seconds, 4)
        result["ratio_cpu_incremental_over_full"] = round(sum(cpu_inc) / sum(cpu_full), 4) if sum(cpu_full) else None
        result["goal_met"] = steps["total"] <= 0.05 * info.seconds
    finally:
        for kb in kbs:
            kb.close()
        if server_dir is not None:
            stop_server(server_dir)
        finish_run_folder(base, args.keep, result)
    result["load_end"] = loadavg()
    return result


def markdown(result: dict[str, Any]) -> list[str]:
    full, inc = result["full"], result["incremental"]
    s = inc["seconds"]
    lines = [
        "| run | load 1/5/15 | total s | sync s | build s | verify+switch s | embedded (text/images) | reused | removed | rows |",
        "|---|---|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for label, data, total, sync, build, vs in (
        ("full", full, full["publish_seconds"], full["sync_seconds"], full["build_seconds"], full["verify_switch_seconds"]),
        ("incremental", inc, s["total"], s["sync"], s["build"], inc["verify_switch_seconds"]),
    ):
        src = data["sources"]
        emb = " / ".join(str(c["embedded"]) for c in src.values())
        lines.append(
            f"| {label} | {data['load']} | {total:.1f} | {sync:.1f} | {build:.1f} | {vs:.1f} | {emb} | "
            f"{sum(c['reused'] for c in src.values()):,} | {sum(c['removed'] for c in src.values())} | {sum(c['rows'] for c in src.values()):,} |"
        )
    lines.append(f"\nratio incremental/full: {result['ratio_incremental_over_full']:.1%} (goal ≤ 5 %: {'met' if result['goal_met'] else 'not met'})")
    if result.get("ratio_cpu_incremental_over_full") is not None:
        lines.append(f"CPU seconds (this process + Lite server) incremental/full: {result['ratio_cpu_incremental_over_full']:.1%}")
    return lines


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Full publish, ~1 % of text files changed, incremental publish: seconds, embeds, ratio.")
    parser.add_argument("--corpus", type=Path, default=None, help="make_corpus.py output folder (text/, and images/ if any); copied, not changed")
    parser.add_argument("--edit-share", type=float, default=0.005, help="share of text files with one paragraph rewritten")
    parser.add_argument("--add-share", type=float, default=0.0025, help="share of text files added (new files)")
    parser.add_argument("--delete-share", type=float, default=0.0025, help="share of text files deleted")
    parser.add_argument("--seed", type=int, default=7, help="seed for the added/deleted files")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override, e.g. text.batch_size=128 (repeatable)")
    parser.add_argument("--workdir", type=Path, default=None, help="parent of the temporary run folder (default: the system temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the run folder (corpus copy, workspace) afterwards")
    parser.add_argument("--profile", type=Path, default=None, help="cProfile the incremental steps (main thread); write the top functions here")
    parser.add_argument("--profile-sort", default="cumulative", help="pstats sort key for --profile")
    parser.add_argument("--profile-top", type=int, default=40, help="functions in the --profile summary")
    parser.add_argument("--milvus-uri", default=None, help="http://host:port of a running Milvus (default: a fresh embedded Lite server)")
    parser.add_argument("--json-out", type=Path, default=None, help="write the JSON report here too")
    add_smoke(parser)
    args = parser.parse_args(argv)
    if not args.smoke:
        check_corpus(parser, args.corpus)
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with smoke_folder(args.smoke, "kbincr-smoke-") as tmp:
        if tmp is not None:
            args.corpus = smoke_corpus(tmp / "corpus", images=0)
            args.edit_share = args.add_share = args.delete_share = 0.25
            args.workdir, args.keep = tmp, False
            args.set += smoke_sets("incremental")
        result = run(args)
    emit(result, args.json_out)
    print()
    for line in markdown(result):
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
