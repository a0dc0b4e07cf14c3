"""The local text model on ONNX Runtime: the export, its vectors, its identity, and a query path without torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kbrelease import ConfigError, load_config
from kbrelease.embedding.factory import make_onnx_text_embedder, make_query_text_embedder
from kbrelease.embedding.identity import configured_identity
from kbrelease.embedding.onnx_text import OnnxTextEmbedder

REPO = Path(__file__).resolve().parents[2]
TEXTS = [
    "Reset your password from the account page.",
    "The VPN client connects to the office network from home; install it first, then sign in with your badge number and the code sent to your phone.",
    "Fire drill",
    " ".join(["A very long paragraph about the quarterly fire drill and where to gather."] * 40),  # past the model's 256-token limit
    "Ünïcödé, émojis 🚒 and CJK 火災訓練 survive tokenization.",
]


@pytest.fixture(scope="module")
def onnx_fp32(tmp_path_factory: pytest.TempPathFactory) -> OnnxTextEmbedder:
    cfg = load_config(env={}, overrides={"workspace": str(tmp_path_factory.mktemp("ws"))})
    emb = make_onnx_text_embedder(cfg, "none")
    assert isinstance(emb, OnnxTextEmbedder)
    return emb


def test_float32_export_gives_the_torch_models_vectors_in_padded_batches(onnx_fp32: OnnxTextEmbedder, text_embedder: Any) -> None:
    expected = text_embedder.embed_texts(TEXTS)

    got = onnx_fp32.embed_texts(TEXTS)  # one pass: every text padded to the longest
    alone = np.vstack([onnx_fp32.embed_texts([t]) for t in TEXTS])

    assert got.shape == expected.shape == (len(TEXTS), 384)
    assert float((got * expected).sum(axis=1).min()) > 0.9999
    assert float((alone * got).sum(axis=1).min()) > 0.9999  # padding does not change a vector
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert [onnx_fp32.count_tokens(t) for t in TEXTS] == [text_embedder.count_tokens(t) for t in TEXTS]
    assert onnx_fp32.max_tokens == text_embedder.max_tokens


def test_every_runtime_and_precision_has_its_own_identity(onnx_fp32: OnnxTextEmbedder, text_embedder: Any, tmp_path: Path) -> None:
    cfg = load_config(env={}, overrides={"workspace": str(tmp_path)})
    int8 = make_onnx_text_embedder(cfg, "int8")

    keys = {text_embedder.identity.key(), onnx_fp32.identity.key(), int8.identity.key()}

    assert len(keys) == 3
    assert onnx_fp32.identity == configured_identity(cfg, "text", runtime="onnx")
    assert int8.identity == configured_identity(load_config(env={"KBRELEASE_TEXT_RUNTIME": "onnx"}, overrides={"text.quantize": "int8"}), "text")
    assert (onnx_fp32.identity.model, onnx_fp32.identity.dim) == (text_embedder.identity.model, text_embedder.identity.dim)
    cos = (int8.embed_texts(TEXTS) * onnx_fp32.embed_texts(TEXTS)).sum(axis=1)
    assert float(cos.mean()) > 0.98  # int8 MatMuls stay close; docs/benchmarks.md has the corpus-wide figures


def test_bf16_is_refused_on_onnx_runtime(tmp_path: Path) -> None:
    cfg = load_config(env={"KBRELEASE_TEXT_RUNTIME": "onnx"}, overrides={"text.quantize": "bf16", "workspace": str(tmp_path)})
    with pytest.raises(ConfigError, match=r"bf16 is not available with text\.runtime onnx"):
        configured_identity(cfg, "text")
    with pytest.raises(ConfigError, match=r"bf16 is not available with text\.runtime onnx"):
        make_onnx_text_embedder(cfg, "bf16")


def test_queries_use_onnx_runtime_only_where_it_gives_the_builds_vectors(tmp_path: Path) -> None:
    plain = make_query_text_embedder(load_config(env={}, overrides={"workspace": str(tmp_path)}))
    assert isinstance(plain, OnnxTextEmbedder)
    assert (tmp_path / "models" / "onnx" / plain.identity.revision / "model.onnx").is_file()  # cached per model revision
    torch_bf16 = load_config(env={}, overrides={"workspace": str(tmp_path), "text.quantize": "bf16"})
    assert isinstance(make_query_text_embedder(torch_bf16), OnnxTextEmbedder)  # bf16 vectors are within cosine 0.9999 of float32
    torch_int8 = load_config(env={}, overrides={"workspace": str(tmp_path), "text.quantize": "int8"})
    assert not isinstance(make_query_text_embedder(torch_int8), OnnxTextEmbedder)


def test_a_search_in_a_new_process_never_imports_torch(project: Any, tmp_path: Path) -> None:
    """After a publish, a one-off search embeds the query with ONNX Runtime: torch is never imported."""
    project.publish()
    script = f"""
import sys
from kbrelease import KbRelease, load_config
cfg = load_config({str(tmp_path / "kbrelease.yaml")!r}, env={{}}, overrides={{
    "milvus.uri": {project.cfg.milvus.uri!r}, "milvus.db_prefix": {project.cfg.milvus.db_prefix!r},
    "milvus.registry_db": {project.cfg.milvus.registry_db!r}}})
with KbRelease(cfg) as kb:
    hits = kb.search("how do I connect to the VPN from home?", k=3)
print(hits[0].file, "torch" in sys.modules, "sentence_transformers" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=tmp_path)

    assert out.returncode == 0, out.stderr
    first, torch_loaded, st_loaded = out.stdout.split()
    assert first == "it/vpn-setup.md"
    assert (torch_loaded, st_loaded) == ("False", "False")
