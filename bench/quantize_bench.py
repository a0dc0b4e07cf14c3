"""The local text model in float32 and in int8 or bf16 (``text.quantize``): CPU per chunk and how close the vectors stay.

Both embedders are loaded in this process; the corpus is chunked with
kbrelease's chunker (same tokenizer, ``text.chunk_target_tokens``), then the
same chunks are embedded in calls of ``4 × text.batch_size`` texts (as the
build does), alternating float32 and int8 (or bf16) passes so that both see the same
machine load. Reported per pass: CPU ms per chunk and chunks per CPU second;
then the cosine between each chunk's reduced-precision and float32 vectors (min, 1st
percentile, mean), how much such a vector depends on the texts batched with
it (the same chunks embedded one call per chunk vs in build-sized calls), and
whether each chunk's nearest neighbours among the chunks stay the same
(top-5 overlap against float32, chunk against chunk).

Example::

    python bench/quantize_bench.py --text /tmp/kbbench2500/text --limit 1024 --passes 2
    python bench/quantize_bench.py --text /tmp/kbbench2500/text --limit 1024 --passes 2 --mode bf16
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
    from kbrelease.chunking.text import TextChunker, decode_text

    chunker = TextChunker(max_tokens=emb.max_tokens, target_tokens=target, hf_tokenizer=emb.hf_tokenizer, count_tokens=emb.count_tokens)
    texts: list[str] = []
    for path in sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".md", ".txt")):
        decoded = decode_text(path.read_bytes(), encoding)
        texts.extend(c.text for c in chunker.chunk(decoded.text, markdown=path.suffix.lower() == ".md"))
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


def run(args: argparse.Namespace) -> dict[str, Any]:
    from kbrelease.embedding.local_text import LocalTextEmbedder

    cfg = load_config(None, env={}, overrides={"sources": []})
    started = time.perf_counter()
    fp32 = LocalTextEmbedder(batch_size=cfg.text.batch_size)
    mode = args.mode
    low = LocalTextEmbedder(batch_size=cfg.text.batch_size, quantize=mode)
    load_s = time.perf_counter() - started
    texts = chunks_of(args.text, fp32, cfg.text.chunk_target_tokens, cfg.text.fallback_encoding)
    if args.limit:
        texts = texts[: args.limit]
    call = 4 * cfg.text.batch_size
    result: dict[str, Any] = {
        "chunks": len(texts),
        "tokens_per_chunk": round(float(np.mean([fp32.count_tokens(t) for t in texts])), 1),
        "mode": mode,
        "identities": {"none": fp32.identity.key(), mode: low.identity.key()},
        "models_load_seconds": round(load_s, 2),
        "passes": [],
    }
    vectors: dict[str, Matrix] = {}
    for i in range(args.passes):
        for name, emb in (("none", fp32), (mode, low)) if i % 2 == 0 else ((mode, low), ("none", fp32)):
            vecs, stats = embed_all(emb, texts, call)
            vectors.setdefault(name, vecs)
            result["passes"].append({"quantize": name, **stats})
            print(json.dumps(result["passes"][-1]), flush=True)
    for name in ("none", mode):
        runs = [p["cpu_ms_per_chunk"] for p in result["passes"] if p["quantize"] == name]
        result[f"cpu_ms_per_chunk_{name}"] = round(sum(runs) / len(runs), 1)
    result[f"cpu_speedup_{mode}"] = round(result["cpu_ms_per_chunk_none"] / result[f"cpu_ms_per_chunk_{mode}"], 3)
    result[f"cosine_{mode}_vs_fp32"] = cosine_stats(vectors[mode], vectors["none"])
    result[f"top5_neighbour_overlap_{mode}_vs_fp32"] = top_overlap(vectors[mode], vectors["none"])
    alone = np.concatenate([low.embed_texts([t]) for t in texts[: args.alone]])
    result[f"cosine_{mode}_alone_vs_batched"] = cosine_stats(alone, vectors[mode][: args.alone])
    alone32 = np.concatenate([fp32.embed_texts([t]) for t in texts[: args.alone]])
    result["cosine_fp32_alone_vs_batched"] = cosine_stats(alone32, vectors["none"][: args.alone])
    return result


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="float32 vs int8/bf16 local text model: CPU per chunk and vector closeness.")
    parser.add_argument("--text", type=Path, default=None, help="a text folder (.md/.txt); required unless --smoke")
    parser.add_argument("--mode", choices=("int8", "bf16"), default="int8", help="the reduced precision to compare with float32")
    parser.add_argument("--limit", type=int, default=1024, help="chunks to embed (0: all)")
    parser.add_argument("--passes", type=int, default=2, help="passes per mode, alternating")
    parser.add_argument("--alone", type=int, default=64, help="chunks also embedded one per call (batch dependence)")
    parser.add_argument("--json-out", type=Path, default=None, help="write the JSON report here too")
    add_smoke(parser)
    args = parser.parse_args(argv)
    if args.text is None and not args.smoke:
        parser.error("--text is required")
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
