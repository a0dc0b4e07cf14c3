"""The local text model per runtime and precision (``text.runtime``, ``text.quantize``): CPU per chunk and how close the vectors stay.

Every variant (torch float32 as the reference, plus e.g. torch bf16, torch
int8, ONNX Runtime float32 and int8) is built the way the build builds it and
loaded in this process; the corpus (any format kbrelease reads) is chunked with
kbrelease's chunker (same tokenizer, ``text.chunk_target_tokens``), then the
same chunks are embedded in calls of ``4 × text.batch_size`` texts (as the
build does), one pass per variant in turn, the order reversed on every other
pass, so that all see the same machine load. Reported per pass: CPU ms per chunk and chunks per CPU second;
then the cosine between each chunk's reduced-precision and float32 vectors (min, 1st
percentile, mean), how much such a vector depends on the texts batched with
it (the same chunks embedded one call per chunk vs in build-sized calls), and
whether each chunk's nearest neighbours among the chunks stay the same
(top-5 overlap against float32, chunk against chunk).

Example::

    python bench/quantize_bench.py --text /tmp/kbbench2500/text --limit 1024 --passes 2
    python bench/quantize_bench.py --text /tmp/realdocs/cmake/text --limit 0 --variants torch:bf16,torch:int8,onnx:none,onnx:int8
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from _common import add_smoke, emit, loadavg, own_cpu, percentile, smoke_corpus, smoke_folder  # bench/ is the script's folder, first on sys.path

from kbrelease import load_config

Matrix = npt.NDArray[np.float32]


def chunks_of(folder: Path, emb: Any, target: int, encoding: str) -> list[str]:
    """The chunks of every document under ``folder`` (any format kbrelease reads), as the build cuts them."""
    from kbrelease.chunking.formats import SUFFIXES, ReadOptions, read_document
    from kbrelease.chunking.text import TextChunker

    chunker = TextChunker(max_tokens=emb.max_tokens, target_tokens=target, hf_tokenizer=emb.hf_tokenizer, count_tokens=emb.count_tokens)
    options = ReadOptions(fallback_encoding=encoding)
    texts: list[str] = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES):
        doc = read_document(path.name, path.read_bytes(), options)
        texts.extend(c.text for c in chunker.chunk_sections(doc.sections, markdown=doc.markdown))
    return texts


def embed_all(emb: Any, texts: Sequence[str], call: int) -> tuple[Matrix, dict[str, Any]]:
    load_before = loadavg()
    c0, t0 = own_cpu(), time.perf_counter()
    parts = [emb.embed_texts(texts[i : i + call]) for i in range(0, len(texts), call)]
    cpu, wall = own_cpu() - c0, time.perf_counter() - t0
    stats = {
        "wall_seconds": round(wall, 2),
        "cpu_seconds": round(cpu, 2),
        "cpu_ms_per_chunk": round(1000 * cpu / len(texts), 1),
        "chunks_per_cpu_second": round(len(texts) / cpu, 2),
        "cores_used": round(cpu / wall, 2),
        "load": f"{load_before} → {loadavg()}",
    }
    return np.concatenate(parts), stats


def cosine_stats(a: Matrix, b: Matrix) -> dict[str, float]:
    cos = (a * b).sum(axis=1)
    return {"min": round(float(cos.min()), 4), "p1": round(percentile(cos.tolist(), 1), 4), "mean": round(float(cos.mean()), 4)}


def top_overlap(a: Matrix, b: Matrix, k: int = 5) -> float:
    """Mean share of each row's k nearest rows (itself excluded) that both matrices agree on."""

    def top(m: Matrix) -> npt.NDArray[np.intp]:
        sims = m @ m.T
        np.fill_diagonal(sims, -2.0)
        return np.argsort(-sims, axis=1)[:, :k]

    ta, tb = top(a), top(b)
    return round(float(np.mean([len(set(x) & set(y)) / k for x, y in zip(ta, tb, strict=True)])), 4)


def make_variant(workspace: Path, variant: str) -> Any:
    """A text embedder for ``runtime:quantize`` (e.g. ``torch:bf16``, ``onnx:int8``), built the way the build builds it."""
    from kbrelease.embedding.factory import make_text_embedder

    runtime, _, quantize = variant.partition(":")
    cfg = load_config(None, env={}, overrides={"sources": [], "workspace": str(workspace), "text": {"runtime": runtime, "quantize": quantize or "none"}})
    return make_text_embedder(cfg)


def run(args: argparse.Namespace) -> dict[str, Any]:
    import tempfile

    cfg = load_config(None, env={}, overrides={"sources": []})
    variants = ["torch:none", *[v for v in args.variants if v != "torch:none"]]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="kbquant-models-") as models:
        embedders = {v: make_variant(Path(models), v) for v in variants}
        for emb in embedders.values():
            emb.embed_texts(["warm up"])  # loads the model (and makes the ONNX export once)
    load_s = time.perf_counter() - started
    fp32 = embedders["torch:none"]
    texts = chunks_of(args.text, fp32, cfg.text.chunk_target_tokens, cfg.text.fallback_encoding)
    if args.limit:
        texts = texts[: args.limit]
    call = 4 * cfg.text.batch_size
    result: dict[str, Any] = {
        "chunks": len(texts),
        "tokens_per_chunk": round(float(np.mean([fp32.count_tokens(t) for t in texts])), 1),
        "variants": variants,
        "native_bf16": _native_bf16(),
        "identities": {v: e.identity.key() for v, e in embedders.items()},
        "models_load_seconds": round(load_s, 2),
        "passes": [],
    }
    vectors: dict[str, Matrix] = {}
    for i in range(args.passes):
        for name in variants if i % 2 == 0 else list(reversed(variants)):
            vecs, stats = embed_all(embedders[name], texts, call)
            vectors.setdefault(name, vecs)
            result["passes"].append({"variant": name, **stats})
            print(json.dumps(result["passes"][-1]), flush=True)
    table: dict[str, dict[str, Any]] = {}
    for name in variants:
        runs = [p["cpu_ms_per_chunk"] for p in result["passes"] if p["variant"] == name]
        row: dict[str, Any] = {"cpu_ms_per_chunk": round(sum(runs) / len(runs), 1)}
        if name != "torch:none":
            row["cosine_vs_fp32"] = cosine_stats(vectors[name], vectors["torch:none"])
            row["top5_neighbour_overlap_vs_fp32"] = top_overlap(vectors[name], vectors["torch:none"])
        alone = np.concatenate([embedders[name].embed_texts([t]) for t in texts[: args.alone]])
        row["cosine_alone_vs_batched"] = cosine_stats(alone, vectors[name][: args.alone])
        table[name] = row
    base = table["torch:none"]["cpu_ms_per_chunk"]
    for row in table.values():
        row["cpu_speedup_vs_torch_fp32"] = round(base / row["cpu_ms_per_chunk"], 3)
    result["variants_table"] = table
    return result


def _native_bf16() -> bool:
    from kbrelease.embedding.local_text import cpu_has_native_bf16

    return cpu_has_native_bf16()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="The local text model per runtime and precision: CPU per chunk and closeness to torch float32.")
    parser.add_argument("--text", type=Path, default=None, help="a text folder (.md/.txt/.rst); required unless --smoke")
    parser.add_argument(
        "--variants",
        default="torch:int8",
        help="comma-separated runtime:quantize pairs compared with torch:none, e.g. torch:bf16,torch:int8,onnx:none,onnx:int8",
    )
    parser.add_argument("--mode", choices=("int8", "bf16"), default=None, help="shorthand for --variants torch:<mode>")
    parser.add_argument("--limit", type=int, default=1024, help="chunks to embed (0: all)")
    parser.add_argument("--passes", type=int, default=2, help="passes per variant, alternating order")
    parser.add_argument("--alone", type=int, default=64, help="chunks also embedded one per call (batch dependence)")
    parser.add_argument("--json-out", type=Path, default=None, help="write the JSON report here too")
    add_smoke(parser)
    args = parser.parse_args(argv)
    if args.text is None and not args.smoke:
        parser.error("--text is required")
    args.variants = [f"torch:{args.mode}"] if args.mode else [v.strip() for v in args.variants.split(",") if v.strip()]
    for v in args.variants:
        runtime, _, quantize = v.partition(":")
        if runtime not in ("torch", "onnx") or quantize not in ("none", "int8", "bf16"):
            parser.error(f"bad variant {v!r}: use runtime:quantize with runtime torch|onnx and quantize none|int8|bf16")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with smoke_folder(args.smoke, "kbquant-smoke-") as tmp:
        if tmp is not None:
            args.text, args.limit, args.passes, args.alone = smoke_corpus(tmp / "corpus", images=0) / "text", 8, 1, 2
        result = run(args)
    emit(result, args.json_out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
