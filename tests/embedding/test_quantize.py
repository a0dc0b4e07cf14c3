"""text.quantize: int8: the bundled model with int8 Linear layers, its own identity, vectors close to float32."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kbrelease import KbRelease, load_config
from kbrelease.cache.embeddings import namespace
from kbrelease.embedding.base import RecordedEmbedder
from kbrelease.embedding.factory import make_text_embedder
from kbrelease.embedding.local_text import LocalTextEmbedder
from kbrelease.errors import ConfigError

from helpers import write_config

pytestmark = pytest.mark.slow

#: Lowest cosine between a chunk's int8 and float32 vectors, measured with
#: bench/quantize_bench.py on 1,024 generated chunks and the example corpus
#: (minimum 0.95, mean 0.98); the threshold leaves room for other texts.
MIN_COSINE = 0.93
MEAN_COSINE = 0.97
#: Lowest cosine between an int8 vector of a text embedded alone and in a batch (measured: 0.92 on 64 generated chunks).
BATCH_COSINE = 0.85


@pytest.fixture(scope="module")
def int8_embedder() -> LocalTextEmbedder:
    return LocalTextEmbedder(quantize="int8")


@pytest.fixture(scope="module")
def example_chunks(int8_embedder: LocalTextEmbedder) -> list[str]:
    """The chunks of the bundled example corpus, as the build makes them."""
    from kbrelease.chunking.text import TextChunker, decode_text

    folder = Path(__file__).resolve().parents[2] / "examples" / "corpus" / "text"
    emb = int8_embedder
    chunker = TextChunker(max_tokens=emb.max_tokens, target_tokens=160, hf_tokenizer=emb.hf_tokenizer, count_tokens=emb.count_tokens)
    texts = []
    for path in sorted(folder.rglob("*")):
        if path.suffix in (".md", ".txt"):
            texts += [c.text for c in chunker.chunk(decode_text(path.read_bytes(), "latin-1").text, markdown=path.suffix == ".md")]
    assert len(texts) > 100
    return texts


def test_int8_has_its_own_identity_and_cache_namespace(local_embedder: LocalTextEmbedder, int8_embedder: LocalTextEmbedder) -> None:
    fp32, int8 = local_embedder.identity, int8_embedder.identity
    assert (int8.kind, int8.model, int8.dim, int8.revision) == (fp32.kind, fp32.model, fp32.dim, fp32.revision)
    assert int8.preprocessing == "maxseq256,int8-dyn-pc" != fp32.preprocessing
    assert namespace(int8) != namespace(fp32)
    assert RecordedEmbedder.of(fp32).compare(int8) == "compatible"  # same model and dimension, other vectors: never mixed
    assert int8_embedder.max_tokens == local_embedder.max_tokens
    assert "quantize='int8'" in repr(int8_embedder)


def test_int8_vectors_are_unit_float32_and_close_to_float32_ones(
    local_embedder: LocalTextEmbedder, int8_embedder: LocalTextEmbedder, example_chunks: list[str]
) -> None:
    int8 = int8_embedder.embed_texts(example_chunks)
    fp32 = local_embedder.embed_texts(example_chunks)
    assert int8.dtype == np.float32 and int8.shape == fp32.shape
    np.testing.assert_allclose(np.linalg.norm(int8, axis=1), 1.0, atol=1e-5)
    cosine = (int8 * fp32).sum(axis=1)
    assert cosine.min() >= MIN_COSINE
    assert cosine.mean() >= MEAN_COSINE
    assert not np.allclose(int8, fp32, atol=1e-3)  # it really is another model


def test_int8_vectors_depend_a_little_on_their_batch_float32_ones_do_not(
    local_embedder: LocalTextEmbedder, int8_embedder: LocalTextEmbedder, example_chunks: list[str]
) -> None:
    """int8 activations share one scale per batch: the reason int8 is opt-in (see quantize_int8)."""
    texts = example_chunks[:24]
    for embedder, low in ((local_embedder, 0.99999), (int8_embedder, BATCH_COSINE)):
        batched = embedder.embed_texts(texts)
        alone = np.concatenate([embedder.embed_texts([t]) for t in texts])
        assert (batched * alone).sum(axis=1).min() >= low


def test_int8_keeps_what_is_similar(int8_embedder: LocalTextEmbedder) -> None:
    cat, kitten, invoice = int8_embedder.embed_texts(
        [
            "The cat sleeps on the warm windowsill.",
            "A kitten is napping in the sunny window.",
            "Quarterly invoices must be filed with the finance department.",
        ]
    )
    assert float(cat @ kitten) > float(cat @ invoice) + 0.3


def test_int8_finds_each_chunk_from_one_of_its_sentences(int8_embedder: LocalTextEmbedder, example_chunks: list[str]) -> None:
    """A retrieval check: the first sentence of a chunk finds that chunk among the top 5."""
    docs = int8_embedder.embed_texts(example_chunks)
    picked = [(i, t.split(". ")[0]) for i, t in enumerate(example_chunks) if len(t.split(". ")[0].split()) >= 8][:40]
    queries = int8_embedder.embed_texts([q for _, q in picked])
    top5 = np.argsort(-(queries @ docs.T), axis=1)[:, :5]
    found = sum(i in row for (i, _), row in zip(picked, top5, strict=True))
    assert found >= 0.9 * len(picked)


def test_an_unknown_mode_or_a_gpu_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"text\.quantize must be one of none, int8"):
        LocalTextEmbedder(quantize="int4")
    with pytest.raises(ConfigError, match=r"text\.quantize"):
        load_config(None, env={}, overrides={"sources": [], "text.quantize": "fp16"})


def test_the_factory_passes_the_setting(tmp_path: Path, corpus: Path) -> None:
    cfg = load_config(write_config(tmp_path, corpus, "text:\n  quantize: int8\n"), env={})
    embedder = make_text_embedder(cfg)
    assert embedder.identity.preprocessing.endswith(",int8-dyn-pc")


def test_switching_to_int8_re_embeds_everything_and_back_reuses_the_float32_vectors(
    tmp_path: Path, corpus: Path, isolated_milvus: dict[str, str], local_embedder: LocalTextEmbedder, int8_embedder: LocalTextEmbedder, image_embedder: Any
) -> None:
    cfg = load_config(write_config(tmp_path, corpus), env={}, overrides=isolated_milvus)
    with KbRelease(cfg, text_embedder=local_embedder, image_embedder=image_embedder) as kb:
        v1 = kb.publish().release.sources["docs"]
    with KbRelease(cfg, text_embedder=int8_embedder, image_embedder=image_embedder) as kb:
        v2 = kb.publish().release.sources["docs"]
        hits = kb.search("how do I reset the gripper", k=3)
    assert v2.rows == v1.rows
    assert (v2.embedded, v2.reused) == (v2.rows, 0)  # no float32 vector is served as int8
    assert hits and all(h.release == "v2" for h in hits)
    with KbRelease(cfg, text_embedder=local_embedder, image_embedder=image_embedder) as kb:
        back = kb.publish()  # same files, another identity than the live release's: a new build
        v3 = back.release.sources["docs"]
    assert not back.unchanged
    assert (v3.embedded, v3.reused) == (0, v1.rows)  # each mode keeps its own entries


# --- bf16 ---------------------------------------------------------------------

#: Lowest cosine between a chunk's bf16 and float32 vectors (measured with
#: bench/quantize_bench.py --mode bf16: mean 0.9999, min 0.9999 on 1,024 generated chunks).
BF16_MIN_COSINE = 0.998
#: Lowest cosine between a bf16 vector of a text embedded alone and in a batch (measured: 1.0000 on 64 generated
#: chunks with bench/quantize_bench.py, 0.996 on 120 raw generated paragraphs of uneven length).
BF16_BATCH_COSINE = 0.99


@pytest.fixture(scope="module")
def bf16_embedder() -> LocalTextEmbedder:
    return LocalTextEmbedder(quantize="bf16")


def test_bf16_has_its_own_identity_and_float32_unit_vectors_close_to_float32(
    local_embedder: LocalTextEmbedder, bf16_embedder: LocalTextEmbedder, example_chunks: list[str]
) -> None:
    fp32 = local_embedder.identity
    assert bf16_embedder.identity.preprocessing == "maxseq256,bf16" != fp32.preprocessing
    assert namespace(bf16_embedder.identity) != namespace(fp32)
    assert "quantize='bf16'" in repr(bf16_embedder)
    bf16 = bf16_embedder.embed_texts(example_chunks)
    ref = local_embedder.embed_texts(example_chunks)
    assert bf16.dtype == np.float32 and bf16.shape == ref.shape
    np.testing.assert_allclose(np.linalg.norm(bf16, axis=1), 1.0, atol=1e-5)
    assert (bf16 * ref).sum(axis=1).min() >= BF16_MIN_COSINE
    assert not np.array_equal(bf16, ref)  # it really runs in bf16


def test_bf16_vectors_depend_only_slightly_on_their_batch(bf16_embedder: LocalTextEmbedder, example_chunks: list[str]) -> None:
    texts = example_chunks[:24]
    batched = bf16_embedder.embed_texts(texts)
    alone = np.concatenate([bf16_embedder.embed_texts([t]) for t in texts])
    assert (batched * alone).sum(axis=1).min() >= BF16_BATCH_COSINE


def test_bf16_without_native_support_warns_that_it_is_slower(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A CPU without AVX512_BF16/AMX cannot be produced here, so the capability probe is replaced."""
    import kbrelease.embedding.local_text as local_text

    monkeypatch.setattr(local_text, "cpu_has_native_bf16", lambda: False)
    with caplog.at_level("WARNING", logger="kbrelease.embedding.local_text"):
        LocalTextEmbedder(quantize="bf16", device="cpu")
    assert "no native bfloat16" in caplog.text and "text.quantize: none" in caplog.text


def test_the_identity_derived_without_a_model_names_the_precision_too(
    local_embedder: LocalTextEmbedder, int8_embedder: LocalTextEmbedder, bf16_embedder: LocalTextEmbedder
) -> None:
    """Package import and `kbrelease check` compare this identity: a bf16 build must match a bf16 config, not a float32 one."""
    from kbrelease.embedding.identity import configured_identity

    for mode, embedder in (("none", local_embedder), ("int8", int8_embedder), ("bf16", bf16_embedder)):
        cfg = load_config(None, env={}, overrides={"sources": [], "text.quantize": mode})
        assert configured_identity(cfg, "text") == embedder.identity
