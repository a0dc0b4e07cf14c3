"""The embedder protocols: everything the build needs from a model."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

Vectors = npt.NDArray[np.float32]
"""A ``(n, dim)`` float32 array, one L2-normalized row per input."""


@dataclass(frozen=True)
class EmbedderIdentity:
    """What makes two embedders produce the same vectors.

    Recorded in every release manifest; the service and the embedding cache
    compare it before they mix vectors.
    """

    kind: str  # "text" or "image"
    model: str
    dim: int
    revision: str = ""
    preprocessing: str = ""

    def key(self) -> str:
        return f"{self.kind}:{self.model}:{self.dim}:{self.revision}:{self.preprocessing}"

    def describe(self) -> str:
        return RecordedEmbedder.of(self).describe()


Comparison = Literal["same", "compatible", "different"]
"""``same``: the same vectors; ``compatible``: the same model and dimension, another revision, runtime or
precision (queries work, vectors drift a little); ``different``: another model or dimension (queries are meaningless)."""


@dataclass(frozen=True)
class RecordedEmbedder:
    """An embedder identity as a manifest, a package or a service recorded it; :meth:`compare` is the one comparison."""

    model: str
    dim: int
    revision: str = ""
    preprocessing: str = ""

    @classmethod
    def from_record(cls, data: Mapping[str, Any] | None) -> RecordedEmbedder:
        """From a manifest's ``embedders[kind]`` (extra keys such as ``max_tokens`` are ignored; missing ones are empty)."""
        data = data or {}
        try:
            dim = int(data.get("dim") or 0)
        except (TypeError, ValueError):
            dim = 0
        return cls(str(data.get("model") or ""), dim, str(data.get("revision") or ""), str(data.get("preprocessing") or ""))

    @classmethod
    def of(cls, identity: EmbedderIdentity) -> RecordedEmbedder:
        return cls(identity.model, identity.dim, identity.revision, identity.preprocessing)

    def compare(self, current: EmbedderIdentity | RecordedEmbedder) -> Comparison:
        """How vectors recorded as ``self`` relate to those ``current`` makes."""
        if self.model != current.model or self.dim != current.dim:
            return "different"
        if self.revision != current.revision or self.preprocessing != current.preprocessing:
            return "compatible"
        return "same"

    def describe(self) -> str:
        return f"{self.model!r} ({self.dim}-d, rev {self.revision or '-'}, {self.preprocessing or '-'})"


@runtime_checkable
class TextEmbedder(Protocol):
    """Turns texts into L2-normalized vectors."""

    identity: EmbedderIdentity
    max_tokens: int
    """Longest input, in model tokens, that the model reads without truncation."""

    def count_tokens(self, text: str) -> int: ...

    def embed_texts(self, texts: Sequence[str]) -> Vectors: ...


@runtime_checkable
class ImageEmbedder(Protocol):
    """Turns preprocessed image tensors into L2-normalized vectors."""

    identity: EmbedderIdentity
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def embed_arrays(self, batch: npt.NDArray[np.float32]) -> Vectors:
        """``batch`` is ``(n, 3, input_size, input_size)``, already normalized."""
        ...


@runtime_checkable
class ImageTextEmbedder(ImageEmbedder, Protocol):
    """An image encoder with a text tower in the same vector space (CLIP-like): text→image search."""

    def embed_texts(self, texts: Sequence[str]) -> Vectors: ...


def l2_normalize(vectors: npt.NDArray[np.floating]) -> Vectors:
    """Row-wise L2 normalization; zero rows stay zero."""
    arr = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    out: Vectors = (arr / norms).astype(np.float32, copy=False)
    return out


def check_pixel_batch(batch: npt.NDArray[np.float32], input_size: int) -> None:
    """Refuse a batch that is not ``(n, 3, input_size, input_size)`` (the image embedders' one input shape)."""
    from kbrelease.errors import EmbeddingError

    want = (3, input_size, input_size)
    if batch.ndim != 4 or tuple(batch.shape[1:]) != want:
        raise EmbeddingError(f"expected a (n, {', '.join(map(str, want))}) batch, got {batch.shape}")


def finite_unit_vectors(features: npt.NDArray[np.floating], model: str) -> Vectors:
    """``features`` L2-normalized, refused if any is NaN or infinite (a model fed badly normalized pixels)."""
    from kbrelease.errors import EmbeddingError

    if not np.isfinite(features).all():
        raise EmbeddingError(f"{model} returned non-finite features; check the input normalization")
    return l2_normalize(features)
