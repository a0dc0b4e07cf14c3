"""The models alone: how fast kbrelease's embedders run on a corpus with no pipeline around them.

Text: every file is decoded and chunked with kbrelease's own chunker (same
model tokenizer, same ``text.chunk_target_tokens``), then the chunks are
embedded in calls of ``4 × text.batch_size`` texts, in file order, as the build
does. Images: every file is preprocessed with kbrelease's
``preprocess_image`` and embedded in batches of ``image.batch_size``. Nothing
runs beside the model (no worker threads, no Milvus), so comparing chunks/s
here with ``build_bench.py`` shows what the pipeline costs around the model.

Examples::

    python bench/embed_bench.py --text /tmp/kbbench/text --images /tmp/kbbench/images
    python bench/embed_bench.py --text /tmp/kbbench/text --limit 1024 --batch-size 16 32 64 128
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from _common import add_smoke, emit, loadavg, own_cpu, rss_mb, smoke_corpus, smoke_folder  # bench/ is the script's folder, first on sys.path

from kbrelease import load_config


def own_rss_mb() -> float:
    return round(rss_mb(os.getpid()) or 0.0, 1)


def text_bench(folder: Path, batch_sizes: Sequence[int], limit: int | None, target_tokens: int | None, passes: int = 1) -> dict[str, Any]:
    from kbrelease.chunking.text import TextChunker, decode_text
    from kbrelease.embedding.local_text import LocalTextEmbedder

    cfg = load_config(None, env={}, overrides={"sources": []})
    target = target_tokens or cfg.text.chunk_target_tokens
    started = time.perf_counter()
    emb_batch = batch_sizes[0]
    emb = LocalTextEmbedder(batch_size=emb_batch)
    load_s = time.perf_counter() - started
    chunker = TextChunker(max_tokens=emb.max_tokens, target_tokens=target, hf_tokenizer=emb.hf_tokenizer, count_tokens=emb.count_tokens)
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".md", ".txt"))
    started = time.perf_counter()
    texts: list[str] = []
    for path in files:
        decoded = decode_text(path.read_bytes(), cfg.text.fallback_encoding)
        texts.extend(c.text for c in chunker.chunk(decoded.text, markdown=path.suffix.lower() == ".md"))
    chunk_s = time.perf_counter() - started
    if limit:
        texts = texts[:limit]
    tokens = np.asarray([emb.count_tokens(t) for t in texts])
    out: dict[str, Any] = {
        "files": len(files),
        "chunks": len(texts),
        "tokens_per_chunk": {"mean": round(float(tokens.mean()), 1), "p50": float(np.percentile(tokens, 50)), "max": int(tokens.max())},
        "model_load_seconds": round(load_s, 2),
        "read_and_chunk_seconds_one_thread": round(chunk_s, 2),
        "runs": [],
    }
    for bs in batch_sizes:
        if bs != emb_batch:
            # text.batch_size sets the call size (4 x batch_size texts) and, through the embedder's
            # constructor, its forward batch: a new embedder, as a build with that setting has.
            emb, emb_batch = LocalTextEmbedder(batch_size=bs), bs
        call = 4 * bs
        load_before = loadavg()
        cpu0, started = own_cpu(), time.perf_counter()
        rss_per_pass = []  # RSS after each call, max and last per pass: does the model's memory settle?
        for _ in range(passes):
            seen = []
            for lo in range(0, len(texts), call):
                emb.embed_texts(texts[lo : lo + call])
                seen.append(own_rss_mb())
            rss_per_pass.append({"max_mb": max(seen), "last_mb": seen[-1]})
        secs = (time.perf_counter() - started) / passes
        cpu = (own_cpu() - cpu0) / passes
        out["runs"].append(
            {
                "batch_size": bs,
                "forward_batch": emb.forward_batch,
                "seconds": round(secs, 2),
                "chunks_per_s": round(len(texts) / secs, 2),
                "tokens_per_s": round(float(tokens.sum()) / secs, 1),
                "cpu_cores_busy": round(cpu / secs, 2),
                "rss_per_pass": rss_per_pass,
                "load": f"{load_before} → {loadavg()}",
            }
        )
    return out


def image_bench(folder: Path, limit: int | None) -> dict[str, Any]:
    from kbrelease.embedding.factory import make_image_embedder
    from kbrelease.images.preprocess import preprocess_image

    cfg = load_config(None, env={}, overrides={"sources": []})
    started = time.perf_counter()
    emb = make_image_embedder(cfg)
    load_s = time.perf_counter() - started
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[: limit or None]
    started = time.perf_counter()
    arrays = [preprocess_image(p.read_bytes(), emb.input_size, emb.mean, emb.std, cfg.image.max_pixels) for p in files]
    prep_s = time.perf_counter() - started
    load_before = loadavg()
    cpu0, started = own_cpu(), time.perf_counter()
    bs = cfg.image.batch_size
    for lo in range(0, len(arrays), bs):
        emb.embed_arrays(np.stack(arrays[lo : lo + bs]))
    secs = time.perf_counter() - started
    cpu = own_cpu() - cpu0
    return {
        "images": len(files),
        "model_load_seconds": round(load_s, 2),
        "preprocess_seconds_one_thread": round(prep_s, 2),
        "embed_seconds": round(secs, 2),
        "images_per_s": round(len(files) / secs, 2),
        "cpu_cores_busy": round(cpu / secs, 2),
        "batch_size": bs,
        "load": f"{load_before} → {loadavg()}",
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Throughput of kbrelease's embedders alone, on a corpus.")
    parser.add_argument("--text", type=Path, default=None, help="text folder")
    parser.add_argument("--images", type=Path, default=None, help="image folder")
    parser.add_argument("--batch-size", type=int, nargs="+", default=[64], help="text.batch_size values to try (64 is the default)")
    parser.add_argument("--target-tokens", type=int, default=None, help="text.chunk_target_tokens (default: the config default)")
    parser.add_argument("--limit", type=int, default=None, help="at most this many chunks / images")
    parser.add_argument("--passes", type=int, default=1, help="embed the text chunks this many times (RSS is reported per pass)")
    parser.add_argument("--json-out", type=Path, default=None)
    add_smoke(parser)
    args = parser.parse_args(argv)
    with smoke_folder(args.smoke, "kbembed-smoke-") as tmp:
        if tmp is not None:
            corpus = smoke_corpus(tmp / "corpus")
            args.text, args.images, args.limit, args.passes, args.batch_size = corpus / "text", corpus / "images", 8, 1, [4]
        if not args.text and not args.images:
            parser.error("give --text and/or --images")
        result: dict[str, Any] = {"machine": f"{os.cpu_count()} cores"}
        if args.text:
            result["text"] = text_bench(args.text, args.batch_size, args.limit, args.target_tokens, args.passes)
        if args.images:
            result["images"] = image_bench(args.images, args.limit)
    emit(result, args.json_out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
