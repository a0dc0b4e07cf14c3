"""The embedder protocols: everything the build needs from a model."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

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

    def matches(self, recorded: dict[str, Any]) -> bool:
        """Whether a manifest's recorded identity would give the same vectors as this one."""
        return all(recorded.get(f) == getattr(self, f) for f in ("model", "dim", "revision", "preprocessing"))


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
