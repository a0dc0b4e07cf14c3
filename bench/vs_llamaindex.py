"""kbrelease against LlamaIndex on the same corpus: full build time, CPU, recall@5.

``kbrelease`` runs one kbrelease publish (sync → build → verify → switch) of a
corpus's ``text/`` into a fresh workspace and embedded Milvus Lite server,
measured like ``llamaindex_bench.py`` measures LlamaIndex (wall seconds, CPU
seconds of this process and of the Lite server, model load and server start
apart), then asks the same queries (``llamaindex_bench.make_queries``) through
``KbRelease.search``. ``compare`` alternates runs of both systems, each in a
fresh process, and prints the table of docs/benchmarks.md ("Against
LlamaIndex"); ``table`` prints it from saved JSON reports.

Examples::

    python bench/make_corpus.py --out /tmp/kbbench10k-text --paragraphs 10000 --files 500 --images 0
    python bench/vs_llamaindex.py kbrelease --corpus /tmp/kbbench10k-text --json-out /tmp/kbres/kb.json
    python bench/vs_llamaindex.py kbrelease --corpus /tmp/kbbench10k-text --set text.quantize=int8
    python bench/vs_llamaindex.py compare --corpus /tmp/kbbench10k-text --rounds 2 \\
        --llama-python /work/llamavenv/bin/python --out-dir /tmp/kbres/vs10k
    python bench/vs_llamaindex.py table /tmp/kbres/vs10k/*.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import llamaindex_bench as li  # bench/ is the script's folder, first on sys.path (standard-library helpers only)
from _common import BENCH, add_smoke, emit, finish_run_folder, lite_pid, loadavg, parse_sets, smoke_corpus, smoke_prefix, source_entries, write_config


class KeepingTextEmbedder:
    """A TextEmbedder that remembers the texts it was given (their tokens are counted after the run)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.identity = inner.identity
        self.max_tokens = inner.max_tokens
        self.hf_tokenizer = getattr(inner, "hf_tokenizer", None)
        self.texts: list[str] = []
        self.seconds = 0.0

    def count_tokens(self, text: str) -> int:
        return int(self.inner.count_tokens(text))

    def embed_texts(self, texts: Sequence[str]) -> Any:
        self.texts.extend(texts)
        started = time.perf_counter()
        try:
            return self.inner.embed_texts(texts)
        finally:
            self.seconds += time.perf_counter() - started


def run_kbrelease(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from kbrelease import KbRelease, load_config
    from kbrelease.embedding.factory import make_text_embedder
    from kbrelease.store.lite import stop_server

    base = Path(tempfile.mkdtemp(prefix="kbvs-", dir=args.workdir))
    text_dir = (args.corpus / "text").resolve()
    overrides = parse_sets(args.set)
    milvus = {"milvus.uri": args.milvus_uri} if args.milvus_uri else {}
    cfg = load_config(write_config(base, {"sources": source_entries(text_dir, None)}), env={}, overrides=overrides | milvus)
    result: dict[str, Any] = {
        "system": "kbrelease",
        "mode": "full",
        "corpus": str(args.corpus),
        "settings": overrides,
        "versions": {"torch": torch.__version__, "python": sys.version.split()[0]},
        "load_start": loadavg(),
    }
    server_dir = None if args.milvus_uri else Path(cfg.milvus_uri)
    kb = None
    try:
        queries = li.load_queries(args.queries_file) if args.queries_file else li.make_queries(text_dir, args.queries, args.seed)
        started = time.perf_counter()
        embedder = KeepingTextEmbedder(make_text_embedder(cfg))
        result["model_load_seconds"] = round(time.perf_counter() - started, 2)
        result["embedder"] = repr(embedder.inner)
        result["identity"] = embedder.identity.key()
        result["torch_threads"] = torch.get_num_threads()
        kb = KbRelease(cfg, text_embedder=embedder)
        started = time.perf_counter()
        _ = kb.store
        result["store_start_seconds"] = round(time.perf_counter() - started, 2)
        meter = li.Meter(lite_pid(server_dir) if server_dir is not None else None)

        meter.start()
        info = kb.publish()
        full = meter.stop()
        full["end_to_end_seconds"] = li.end_to_end_seconds()
        record = info.release
        chunks = record.sources["docs"].rows
        full.update(
            {
                "chunks": chunks,
                "files": record.sources["docs"].files,
                "steps_seconds": {
                    "sync": round(info.sync.seconds, 2),
                    "build": round(record.build_seconds, 2),
                    "verify+switch": round(info.seconds - info.sync.seconds - record.build_seconds, 2),
                },
                "embed_seconds": round(embedder.seconds, 2),
                "texts_embedded": len(embedder.texts),
                "cpu_ms_per_chunk": round(1000 * full["cpu_seconds"]["total"] / chunks, 1),
                "chunks_per_cpu_second": round(chunks / full["cpu_seconds"]["total"], 2),
            }
        )
        tokens = [embedder.count_tokens(t) for t in embedder.texts]
        full["embedded_tokens"] = {"total": sum(tokens), "mean": round(sum(tokens) / len(tokens), 1), "max": max(tokens)}
        result["full"] = full
        print(f"kbrelease full: {full['wall_seconds']} s wall, {full['cpu_seconds']['total']} CPU s, {chunks} chunks", file=sys.stderr)

        started = time.perf_counter()
        answers = [[(h.file, h.text) for h in kb.search(q.text, k=li.TOP_K)] for q in queries]
        result["recall"] = li.recall_at_k(queries, answers)
        result["per_query"] = li.per_query(queries, answers)
        result["recall_seconds"] = round(time.perf_counter() - started, 2)
        print(f"kbrelease recall@5: {json.dumps(result['recall'])}", file=sys.stderr)
    finally:
        if kb is not None:
            kb.close()
        if server_dir is not None:
            stop_server(server_dir)
        finish_run_folder(base, args.keep, result)
    result["load_end"] = loadavg()
    return result


# --- the table ----------------------------------------------------------------------


def label(r: dict[str, Any]) -> str:
    if r["system"] == "llamaindex":
        extra = ", docstore + caches" if r["mode"] == "incremental" else ""
        return f"LlamaIndex (batch {r['embed_batch_size']}, chunk {r['chunk_size']}/{r['chunk_overlap']}{extra})"
    extra = ", ".join(f"{k}={v}" for k, v in r.get("settings", {}).items())
    return f"kbrelease{f' ({extra})' if extra else ''}"


def _recall_cells(rec: dict[str, dict[str, float]]) -> str:
    return " | ".join(f"{kind}: {r['file_recall']:.3f} / {r['passage_recall']:.3f}" for kind, r in sorted(rec.items()))


def table(results: Sequence[dict[str, Any]]) -> list[str]:
    lines = [
        "| run | system | chunks | tokens/chunk | end to end s | wall s (sync → live) | CPU s (process + server) | CPU ms/chunk "
        "| recall@5 per query kind (file / passage) | load 1/5/15 before → after |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for i, r in enumerate(results, 1):
        f, rec = r["full"], r["recall"]
        cpu = f["cpu_seconds"]
        e2e = f.get("end_to_end_seconds")
        lines.append(
            f"| {i} | {label(r)} | {f['chunks']:,} | {f['embedded_tokens']['mean']} | {'' if e2e is None else f'{e2e:.1f}'} | {f['wall_seconds']:.1f} | "
            f"{cpu['total']:.1f} ({cpu['process']:.1f} + {cpu['server']:.1f}) | {f['cpu_ms_per_chunk']:.1f} | "
            f"{_recall_cells(rec)} | {f['load']} |"
        )
    by: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        by.setdefault(label(r), []).append(r)
    lines.append("")
    lines.append("| system | runs | mean end-to-end s | mean wall s | mean CPU s | mean CPU ms/chunk |")
    lines.append("|---|---:|---:|---:|---:|---:|")
    means: dict[str, tuple[float, float, float]] = {}
    for name, rs in by.items():
        n = len(rs)
        e2es = [r["full"].get("end_to_end_seconds") for r in rs]
        e2e = sum(e for e in e2es if e is not None) / n if all(e is not None for e in e2es) else float("nan")
        wall = sum(r["full"]["wall_seconds"] for r in rs) / n
        cpu = sum(r["full"]["cpu_seconds"]["total"] for r in rs) / n
        ms = sum(r["full"]["cpu_ms_per_chunk"] for r in rs) / n
        means[name] = (e2e, wall, cpu)
        lines.append(f"| {name} | {n} | {e2e:.1f} | {wall:.1f} | {cpu:.1f} | {ms:.1f} |")
    lis = [k for k in means if k.startswith("LlamaIndex")]
    for name, (e2e, wall, cpu) in means.items():
        for other in lis:
            if name != other and not name.startswith("LlamaIndex"):
                oe, ow, oc = means[other]
                lines.append(
                    f"\n{name} vs {other}: {oe / e2e:.2f}× end to end, {ow / wall:.2f}× on wall seconds (sync → live), "
                    f"{oc / cpu:.2f}× on CPU seconds (goal ≥ 2× end to end)"
                )
    return lines


def compare(args: argparse.Namespace) -> list[dict[str, Any]]:
    out_dir: Path = args.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    results = []
    kb_variants = [s.split(",") if s else [] for s in (args.kb_sets or [""])]
    for round_ in range(args.first_round, args.first_round + args.rounds):
        plan: list[tuple[str, list[str]]] = [(f"kb{j}", sets) for j, sets in enumerate(kb_variants)]
        plan.insert(1 if round_ % 2 else 0, ("li", []))  # odd rounds start with kbrelease, even ones with LlamaIndex
        for name, sets in plan:
            path = out_dir / f"r{round_}-{name}.json"
            if name == "li":
                cmd = [args.llama_python, str(BENCH / "llamaindex_bench.py"), "--corpus", str(args.corpus), "--queries", str(args.queries)]
            else:
                cmd = [sys.executable, str(BENCH / "vs_llamaindex.py"), "kbrelease", "--corpus", str(args.corpus), "--queries", str(args.queries)]
                for s in sets:
                    cmd += ["--set", s]
            if args.queries_file:
                cmd += ["--queries-file", str(args.queries_file)]
            cmd += ["--json-out", str(path)]
            print(f"round {round_}: {' '.join(cmd)}", file=sys.stderr, flush=True)
            env = {**os.environ, "KB_BENCH_T0": repr(time.time())}  # end to end: from just before the process starts
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env)
            results.append(json.loads(path.read_text()))
    return results


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="kbrelease against LlamaIndex: full build time, CPU seconds, recall@5.")
    sub = parser.add_subparsers(dest="command")
    one = sub.add_parser("kbrelease", help="one kbrelease publish of CORPUS/text, then recall@5")
    one.add_argument("--corpus", type=Path, required=True, help="make_corpus.py output folder")
    one.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override, e.g. text.quantize=int8 (repeatable)")
    one.add_argument("--queries", type=int, default=200, help="queries per kind (sentence, words)")
    one.add_argument("--seed", type=int, default=0, help="seed of the queries")
    one.add_argument("--queries-file", type=Path, default=None, help="hand-written queries of a real corpus (bench/queries/*.json)")
    one.add_argument("--workdir", type=Path, default=None, help="parent of the temporary workspace")
    one.add_argument("--keep", action="store_true", help="keep the workspace")
    one.add_argument("--json-out", type=Path, default=None, help="write the JSON report here too")
    one.add_argument("--milvus-uri", default=None, help="http://host:port of a running Milvus (default: a fresh embedded Lite server)")
    both = sub.add_parser("compare", help="alternate runs of kbrelease and LlamaIndex, then print the table")
    both.add_argument("--corpus", type=Path, required=True, help="make_corpus.py output folder")
    both.add_argument("--llama-python", required=True, help="python of the LlamaIndex virtualenv, e.g. /work/llamavenv/bin/python")
    both.add_argument("--rounds", type=int, default=2, help="runs of each system")
    both.add_argument("--kb-sets", action="append", default=None, metavar="K=V[,K=V]", help="a kbrelease variant per option (repeatable)")
    both.add_argument("--queries", type=int, default=200, help="queries per kind")
    both.add_argument("--queries-file", type=Path, default=None, help="hand-written queries of a real corpus (bench/queries/*.json)")
    both.add_argument("--first-round", type=int, default=1, help="number of the first round (to continue a series; even rounds start with LlamaIndex)")
    both.add_argument("--out-dir", type=Path, required=True, help="folder for the JSON reports (one per run)")
    prep = sub.add_parser("prepare", help="copy a real corpus named by a queries file (bench/queries/*.json) into OUT/text")
    prep.add_argument("--queries-file", type=Path, required=True, help="bench/queries/*.json: its source_path and source_globs name the files")
    prep.add_argument("--out", type=Path, required=True, help="corpus folder to write (OUT/text/...)")
    tab = sub.add_parser("table", help="print the table from JSON reports")
    tab.add_argument("reports", type=Path, nargs="+", help="JSON files written by either bench")
    # --smoke: `kbrelease` on a tiny corpus, then `table` of it beside a LlamaIndex-shaped copy; `compare` needs LlamaIndex, not run.
    add_smoke(parser)
    parser.add_argument("--milvus-uri", dest="smoke_milvus_uri", default=None, help="with --smoke: http://host:port of a running Milvus")
    parser.add_argument("--json-out", dest="smoke_json_out", type=Path, default=None, help="with --smoke: write the kbrelease report here too")
    args = parser.parse_args(argv)
    if args.smoke:
        args.command = "smoke"
    elif args.command is None:
        parser.error("give a command: kbrelease, compare, table (or --smoke)")
    return args


def smoke(args: argparse.Namespace) -> list[dict[str, Any]]:
    """``kbrelease`` on a tiny corpus, then the table of it beside a LlamaIndex-shaped report made from it."""
    with tempfile.TemporaryDirectory(prefix="kbvs-smoke-") as tmp:
        one = argparse.Namespace(
            corpus=smoke_corpus(Path(tmp) / "corpus", images=0),
            set=[f"{k}={v}" for k, v in smoke_prefix("vs").items()],
            queries=3,
            seed=0,
            queries_file=None,
            workdir=Path(tmp),
            keep=False,
            milvus_uri=args.smoke_milvus_uri,
        )
        result = run_kbrelease(one)
    fixture = json.loads(json.dumps(result)) | {"system": "llamaindex", "mode": "full", "embed_batch_size": 10, "chunk_size": li.CHUNK_SIZE}
    fixture["chunk_overlap"] = li.CHUNK_OVERLAP
    return [result, fixture]


def prepare(queries_file: Path, out: Path) -> dict[str, Any]:
    """Copy the files of a real corpus (a queries file's ``source_path`` + ``source_globs``) into ``out/text``; check that
    every query's file is there and holds its passage, so a query cannot silently test nothing."""
    spec = json.loads(queries_file.read_text(encoding="utf-8"))
    root = Path(spec["source_path"])
    files = sorted({p for pattern in spec["source_globs"] for p in root.glob(pattern) if p.is_file()})
    if not files:
        raise SystemExit(f"{root}: no files match {spec['source_globs']} (install the package named in {queries_file}: {spec['corpus']})")
    text = out / "text"
    text.mkdir(parents=True, exist_ok=True)
    for path in files:
        (text / path.relative_to(root)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, text / path.relative_to(root))
    for q in li.load_queries(queries_file):
        holder = text / q.files[0]
        if not holder.is_file() or li._squash(q.sentence) not in li._squash(holder.read_text(encoding="utf-8")):
            raise SystemExit(f"{queries_file}: query {q.text!r}: {q.files[0]} does not hold its passage {q.sentence!r}")
    return {"corpus": spec["corpus"], "files": len(files), "bytes": sum(p.stat().st_size for p in files), "out": str(out)}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.command == "prepare":
        emit(prepare(args.queries_file, args.out), None)
        return 0
    if args.command == "kbrelease":
        result = run_kbrelease(args)
        emit(result, args.json_out)
        return 0
    if args.command == "smoke":
        results = smoke(args)
        emit(results[0], args.smoke_json_out)
        for line in table(results):
            print(line)
        return 0
    results = compare(args) if args.command == "compare" else [json.loads(p.read_text()) for p in args.reports]
    for line in table(results):
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
