"""Any image encoder saved with ``torch.export``, loaded from a local file.

This is how a model other than the bundled EfficientNet-Lite0 is used without
a hub download and without timm/torchvision at run time: export it once where
those libraries live::

    ep = torch.export.export(model.eval(), (torch.zeros(2, 3, 224, 224),),
                             dynamic_shapes={"x": {0: torch.export.Dim("batch")}})
    torch.export.save(ep, "encoder.pt2")

then set ``image.model``, ``image.model_path``,
``image.dim``, ``image.input_size`` and, if it differs from ImageNet's,
``image.mean``/``image.std``. The module takes a ``(n, 3, size, size)``
normalized batch and returns ``(n, dim)`` features (or anything that flattens
to it).
"""

from __future__ import annotations

import hashlib
import pathlib

import numpy as np
import numpy.typing as npt

from kbrelease.embedding.base import EmbedderIdentity, Vectors, l2_normalize
from kbrelease.errors import ConfigError, EmbeddingError


class ExportedImageEmbedder:
    """Implements :class:`~kbrelease.embedding.base.ImageEmbedder` for a ``torch.export`` file (``.pt2``)."""

    def __init__(
        self,
        name: str,
        path: pathlib.Path,
        dim: int,
        input_size: int,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
        device: str | None = None,
    ) -> None:
        import torch

        if not path.is_file():
            raise ConfigError(f"image.model_path {path} does not exist; point it to a file saved with torch.export.save")
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        try:
            self._module = torch.export.load(str(path)).module().to(self.device)
        except Exception as exc:
            raise ConfigError(f"image.model_path {path} is not a torch.export program ({exc}); save it with torch.export.save") from exc
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
        self.input_size = input_size
        self.mean = mean
        self.std = std
        self.identity = EmbedderIdentity(
            kind="image",
            model=name,
            dim=dim,
            revision=digest,
            preprocessing=f"crop{input_size}-mean{','.join(map(str, mean))}-std{','.join(map(str, std))}",
        )

    def embed_arrays(self, batch: npt.NDArray[np.float32]) -> Vectors:
        import torch

        if len(batch) == 0:
            return np.zeros((0, self.identity.dim), dtype=np.float32)
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
        with torch.inference_mode():
            out = self._module(x)
        feats = out.reshape(len(batch), -1).float().cpu().numpy()
        if feats.shape[1] != self.identity.dim:
            raise EmbeddingError(
                f"image model {self.identity.model!r} returned {feats.shape[1]}-d vectors but image.dim / IMAGE_EMBEDDING_DIM "
                f"is {self.identity.dim}; fix the dimension"
            )
        return l2_normalize(feats)
