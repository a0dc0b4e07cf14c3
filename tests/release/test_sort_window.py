"""The text build sorts chunks by token length across files before the model sees them (text.sort_window)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from kbrelease import KbRelease, load_config
from kbrelease.embedding.base import Vectors

from helpers import write_config


class CallRecorder:
    """The real text embedder, keeping the texts of each call it is asked to make."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.identity = real.identity
        self.max_tokens = real.max_tokens
        self.hf_tokenizer = real.hf_tokenizer
        self.calls: list[list[str]] = []

    def count_tokens(self, text: str) -> int:
        return int(self.real.count_tokens(text))

    def embed_texts(self, texts: list[str]) -> Vectors:
        self.calls.append(list(texts))
        return self.real.embed_texts(texts)  # type: ignore[no-any-return]


def test_chunks_of_all_files_reach_the_model_longest_first_and_land_in_their_own_rows(
    tmp_path: Path, isolated_milvus: dict[str, str], text_embedder: Any
) -> None:
    corpus = tmp_path / "corpus"
    (corpus / "text").mkdir(parents=True)
    (corpus / "images").mkdir()
    for i in range(6):
        # Each file mixes short and long paragraphs, so file order interleaves lengths.
        paragraphs = [f"File {i} short note {j}." if j % 2 else f"File {i} long note {j}: " + "the build keeps this text together " * (3 + j) for j in range(6)]
        (corpus / "text" / f"f{i}.txt").write_text("\n\n".join(paragraphs), encoding="utf-8")
    cfg = load_config(
        write_config(tmp_path, corpus, "text:\n  chunk_target_tokens: 12\n  batch_size: 2\n  sort_window: 1000\n"), env={}, overrides=isolated_milvus
    )
    recorder = CallRecorder(text_embedder)
    with KbRelease(cfg, text_embedder=recorder) as kb:
        record = kb.publish().release
        rows = kb.store.client(record.database).query(record.sources["docs"].collection, filter="", output_fields=["file", "text", "vector"], limit=16384)
    lengths = [text_embedder.count_tokens(t) for call in recorder.calls for t in call]
    assert len(recorder.calls) > 2 and all(len(call) <= 8 for call in recorder.calls)  # calls of 4 x batch_size
    assert lengths == sorted(lengths, reverse=True)  # one window: longest first across every file
    assert len(rows) == len({t for call in recorder.calls for t in call})
    for row in rows:
        assert row["text"] in (corpus / "text" / row["file"]).read_text(encoding="utf-8")
        expected = text_embedder.embed_texts([row["text"]])[0]
        assert float(np.dot(np.asarray(row["vector"], dtype=np.float32), expected)) > 0.999  # each vector is its own text's
