"""text.quantize auto: bf16 where the CPU computes it natively and the model runs there on torch, float32 elsewhere."""

from __future__ import annotations

from pathlib import Path

import pytest

from kbrelease import load_config
from kbrelease.embedding.factory import make_query_text_embedder
from kbrelease.embedding.identity import configured_identity
from kbrelease.embedding.local_text import cpu_flags_native_bf16, effective_quantize
from kbrelease.embedding.onnx_text import OnnxTextEmbedder


@pytest.mark.parametrize(
    ("native", "quantize", "runtime", "device", "expected"),
    [
        ("1", "auto", "torch", "cpu", "bf16"),
        ("0", "auto", "torch", "cpu", "none"),
        ("1", "auto", "onnx", "cpu", "none"),  # ONNX Runtime has no bf16 path: float32
        ("1", "auto", "torch", "cuda", "none"),  # a GPU keeps float32
        ("1", "none", "torch", "cpu", "none"),  # what is set is kept
        ("0", "bf16", "torch", "cpu", "bf16"),
        ("1", "int8", "onnx", "cpu", "int8"),
    ],
)
def test_auto_resolves_by_cpu_runtime_and_device(monkeypatch: pytest.MonkeyPatch, native: str, quantize: str, runtime: str, device: str, expected: str) -> None:
    monkeypatch.setenv("KBRELEASE_CPU_BF16", native)
    assert effective_quantize(quantize, runtime, device) == expected


def test_the_cpu_flags_are_read_without_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KBRELEASE_CPU_BF16", raising=False)
    flags = Path("/proc/cpuinfo").read_text(errors="replace") if Path("/proc/cpuinfo").is_file() else ""
    assert cpu_flags_native_bf16() == ("avx512_bf16" in flags or "amx_bf16" in flags)


def test_auto_is_the_default_and_its_identity_names_the_precision_used(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cfg = load_config(None, env={}, overrides={"workspace": str(tmp_path), "sources": []})
    assert cfg.text.quantize == "auto"
    monkeypatch.setenv("KBRELEASE_CPU_BF16", "1")
    assert configured_identity(cfg, "text").preprocessing == "maxseq256,bf16"
    # a bf16 build's queries are embedded by the float32 ONNX export (cosine 0.9999): no torch in a one-off search
    assert isinstance(make_query_text_embedder(cfg), OnnxTextEmbedder)
    monkeypatch.setenv("KBRELEASE_CPU_BF16", "0")
    assert configured_identity(cfg, "text").preprocessing == "maxseq256"
    pinned = load_config(None, env={"KBRELEASE_TEXT_QUANTIZE": "none"}, overrides={"workspace": str(tmp_path), "sources": []})
    monkeypatch.setenv("KBRELEASE_CPU_BF16", "1")
    assert configured_identity(pinned, "text").preprocessing == "maxseq256"


@pytest.mark.parametrize("junk", ["yes", "2", "true", " ", "1; rm -rf /"])
def test_a_junk_cpu_override_is_ignored_and_the_cpu_flags_decide(monkeypatch: pytest.MonkeyPatch, junk: str) -> None:
    monkeypatch.delenv("KBRELEASE_CPU_BF16", raising=False)
    from_cpu = cpu_flags_native_bf16()
    monkeypatch.setenv("KBRELEASE_CPU_BF16", junk)
    assert cpu_flags_native_bf16() == from_cpu
