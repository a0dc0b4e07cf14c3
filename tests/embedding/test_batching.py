"""Concurrent one-query embeddings share model calls, with the same vectors as one at a time."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest

from kbrelease.embedding.base import EmbedderIdentity
from kbrelease.embedding.batching import BatchingTextEmbedder
from kbrelease.errors import EmbeddingError


def test_concurrent_queries_ride_together_and_get_their_own_vectors(text_embedder: Any) -> None:
    batching = BatchingTextEmbedder(text_embedder)
    queries = [f"question number {i} about the vpn and the printer" for i in range(24)]
    expected = text_embedder.embed_texts(queries)
    got: dict[int, Any] = {}
    start = threading.Barrier(len(queries))

    def ask(i: int) -> None:
        start.wait()
        got[i] = batching.embed_texts([queries[i]])[0]

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(queries))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(len(queries)):
        np.testing.assert_allclose(got[i], expected[i], atol=1e-5)
    assert batching.coalesced == len(queries) and batching.batches < len(queries)  # fewer model calls than queries
    assert batching.identity == text_embedder.identity
    assert batching.hf_tokenizer is text_embedder.hf_tokenizer  # transparent for the build's chunker


def test_large_calls_go_straight_to_the_model_and_errors_reach_every_caller() -> None:
    class Failing:
        identity = EmbedderIdentity("text", "broken", 3)
        max_tokens = 10

        def __init__(self) -> None:
            self.calls: list[int] = []

        def count_tokens(self, text: str) -> int:
            return len(text)

        def embed_texts(self, texts: list[str]) -> Any:
            self.calls.append(len(texts))
            if len(texts) <= 4:
                raise EmbeddingError("model is down")
            return np.zeros((len(texts), 3), dtype=np.float32)

    inner = Failing()
    batching = BatchingTextEmbedder(inner)
    assert batching.embed_texts(["a"] * 10).shape == (10, 3) and inner.calls == [10]
    with pytest.raises(EmbeddingError, match="model is down"):
        batching.embed_texts(["q"])


def test_the_worker_thread_count_does_not_leak_to_other_threads(text_embedder: Any) -> None:
    import torch

    before = torch.get_num_threads()
    seen: list[int] = []
    batching = BatchingTextEmbedder(text_embedder, threads=1)
    batching.embed_texts(["one query"])
    thread = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    thread.start()
    thread.join()
    assert torch.get_num_threads() == before and seen == [before]
