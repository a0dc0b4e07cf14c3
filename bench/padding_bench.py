"""Padding waste of the text build: tokens computed vs tokens padded, per batching strategy.

A forward pass of a transformer costs about ``batch × longest text in it`` tokens, so
texts of mixed lengths in one batch pay for padding. This script chunks a real
corpus with kbrelease's own chunker and the packaged model's tokenizer (no model
run, no timing: the figures are exact counts and repeat on any machine), then
counts, for each strategy, the tokens the model would compute:

- ``file order``: forward batches in the order chunks come out of the files;
- ``window N``: N chunks at a time sorted by token length, then forward batches
  (256 = ``text.batch_size × 4``, one model call, sorted inside it: the build before
  ``text.sort_window``; 2048 = the build now, ``text.sort_window``);
- ``window N by characters``: the same window sorted by character length instead
  of tokens (cheaper, and measurably worse: why the build counts tokens);
- ``whole source``: every chunk of the source sorted once.

Usage::

    python bench/padding_bench.py --corpus /usr/share/cmake-3.25/Help --glob '**/*.rst' --json-out /tmp/kbres/padding_cmake.json
    python bench/padding_bench.py --smoke
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_smoke, emit, smoke_corpus, smoke_folder


def padded(lengths: list[int], forward: int) -> int:
    """Tokens computed when ``lengths`` go to the model ``forward`` at a time, each batch padded to its longest."""
    return sum(len(lengths[i : i + forward]) * max(lengths[i : i + forward]) for i in range(0, len(lengths), forward))


def windowed(lengths: list[int], window: int, forward: int) -> int:
    """Tokens computed when each ``window`` of chunks is sorted by length before its forward batches."""
    return sum(padded(sorted(lengths[i : i + window], reverse=True), forward) for i in range(0, len(lengths), window))


def by_chars(lengths: list[int], chars: list[int], window: int, call: int, forward: int) -> int:
    """What the build does: each ``window`` of chunks sorted by character length (no tokenizing), cut into
    model calls of ``call`` chunks, each call sorted by tokens inside (as sentence-transformers does)."""
    total = 0
    for i in range(0, len(lengths), window):
        order = sorted(range(i, min(i + window, len(lengths))), key=lambda j: chars[j], reverse=True)
        for k in range(0, len(order), call):
            total += padded(sorted((lengths[j] for j in order[k : k + call]), reverse=True), forward)
    return total


def chunk_lengths(corpus: Path, pattern: str, target_tokens: int) -> tuple[int, list[int], list[int]]:
    """(files read, token length of every chunk in file order, character length of each) as kbrelease's chunker cuts the corpus."""
    from kbrelease.chunking.text import TextChunker, decode_text
    from kbrelease.embedding.local_text import _resolve_model_folder, load_tokenizer

    folder = _resolve_model_folder(None)
    chunker = TextChunker(max_tokens=256, target_tokens=target_tokens, hf_tokenizer=load_tokenizer(folder / "tokenizer.json", "text.model_path"))
    counter = load_tokenizer(folder / "tokenizer.json", "text.model_path")
    files = sorted(p for p in corpus.glob(pattern) if p.is_file())
    lengths: list[int] = []
    chars: list[int] = []
    for path in files:
        text = decode_text(path.read_bytes()).text
        chunks = chunker.chunk(text, markdown=path.suffix.lower() == ".md")
        if chunks:
            # The tokenizer adds [CLS] and [SEP]; 256 is all-MiniLM-L6-v2's max_seq_length.
            lengths += [min(256, len(e.ids)) for e in counter.encode_batch([c.text for c in chunks])]
            chars += [len(c.text) for c in chunks]
    return len(files), lengths, chars


def measure(corpus: Path, pattern: str, target_tokens: int, forward: int, windows: list[int]) -> dict[str, Any]:
    files, lengths, chars = chunk_lengths(corpus, pattern, target_tokens)
    real = sum(lengths)
    strategies = {"file order": padded(lengths, forward)}
    for window in windows:
        strategies[f"window {window}"] = windowed(lengths, window, forward)
        strategies[f"window {window} by characters, calls of 256"] = by_chars(lengths, chars, window, 256, forward)
    strategies["whole source"] = padded(sorted(lengths, reverse=True), forward)
    return {
        "corpus": str(corpus),
        "glob": pattern,
        "files": files,
        "chunks": len(lengths),
        "chunk_target_tokens": target_tokens,
        "forward_batch": forward,
        "tokens": real,
        "mean_tokens_per_chunk": round(real / max(1, len(lengths)), 1),
        "computed_tokens": strategies,
        "padding_share": {name: round(1 - real / max(1, n), 3) for name, n in strategies.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path)
    parser.add_argument("--glob", default="**/*", help="which files of the corpus (default: all)")
    parser.add_argument("--target-tokens", type=int, default=160, help="text.chunk_target_tokens (default 160)")
    parser.add_argument("--forward", type=int, default=16, help="texts per forward pass (default 16: the CPU default)")
    parser.add_argument(
        "--windows", default="256,2048", help="chunks per sorted window, comma-separated (256 = batch_size 64 × 4: the build before text.sort_window)"
    )
    parser.add_argument("--json-out", type=Path)
    add_smoke(parser)
    args = parser.parse_args()
    windows = [int(w) for w in args.windows.split(",") if w]
    if args.smoke:
        with smoke_folder(True, "kb-padding-") as tmp:
            assert tmp is not None
            emit(measure(smoke_corpus(tmp, images=0), "text/**/*", args.target_tokens, args.forward, windows), args.json_out)
        return
    if args.corpus is None:
        parser.error("--corpus is required (or --smoke)")
    emit(measure(args.corpus, args.glob, args.target_tokens, args.forward, windows), args.json_out)


if __name__ == "__main__":
    main()
