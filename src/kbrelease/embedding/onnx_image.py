"""The bundled EfficientNet-Lite0 on ONNX Runtime (``image.runtime: onnx``): the same vectors, faster.

The network is exported once per weights file and input size with
``torch.onnx.export`` (``dynamo=False``; the batch dimension dynamic, the
crop size fixed, so Lite0's TF "SAME" padding is traced as constants) and kept
in ``<workspace>/models/onnx-image/<weights sha>/lite0-<size>.onnx``. From
then on a build or a service that embeds images needs ``onnxruntime`` and not
torch. On 2 cores a build embedded 2.2-2.3x the images per second of torch, with
cosine 1.0000 to torch's vectors (docs/benchmarks.md section 16; tested in
``tests/embedding/test_onnx_image.py``). The identity carries its own ``,ort``
tag, as the text model's export does: the embedding cache and packages keep the
two runtimes' vectors apart, while searches treat them as compatible.
"""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path

import numpy as np
import numpy.typing as npt

from kbrelease.embedding.base import EmbedderIdentity, Vectors, check_pixel_batch, finite_unit_vectors
from kbrelease.errors import ConfigError, EmbeddingError

ORT_TAG = ",ort"
"""Appended to the identity's ``preprocessing``: vectors made by ONNX Runtime."""
_export_lock = threading.Lock()


def image_onnx_file(models_dir: Path, revision: str, input_size: int) -> Path:
    """Where the export of one weights file at one crop size is kept."""
    return models_dir / "onnx-image" / revision / f"lite0-{int(input_size)}.onnx"


def export_lite0_onnx(weights: Path | None, input_size: int, out: Path) -> Path:
    """Export EfficientNet-Lite0's pooled features at ``input_size`` to ``out``. Needs torch once; atomic; idempotent."""
    if out.is_file():
        return out
    with _export_lock:
        if out.is_file():
            return out
        try:
            import torch

            from kbrelease.embedding.efficientnet_lite import load_efficientnet_lite0, weights_path
        except ImportError as exc:
            raise ConfigError("exporting EfficientNet-Lite0 to ONNX needs torch (once per weights file); set image.runtime: torch") from exc

        class _Features(torch.nn.Module):
            def __init__(self, model: torch.nn.Module) -> None:
                super().__init__()
                self.model = model

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                feats: torch.Tensor = self.model.forward_features(x)  # type: ignore[operator]
                return feats

        model = _Features(load_efficientnet_lite0("cpu", weights or weights_path())).eval()
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".export-", suffix=".onnx", dir=out.parent)
        os.close(fd)
        try:
            import warnings

            with warnings.catch_warnings(), torch.inference_mode():
                warnings.simplefilter("ignore")  # the traced padding arithmetic warns that it becomes constant: it is, per crop size
                torch.onnx.export(
                    model,
                    (torch.zeros(1, 3, input_size, input_size),),
                    tmp,
                    input_names=["pixels"],
                    output_names=["features"],
                    dynamic_axes={"pixels": {0: "batch"}, "features": {0: "batch"}},
                    dynamo=False,
                )
            os.replace(tmp, out)
        except Exception as exc:
            Path(tmp).unlink(missing_ok=True)
            raise EmbeddingError(f"cannot export EfficientNet-Lite0 to ONNX ({type(exc).__name__}: {exc}); set image.runtime: torch") from exc
    return out


class OnnxImageEmbedder:
    """:class:`~kbrelease.embedding.base.ImageEmbedder` running an exported Lite0 on ONNX Runtime's CPU provider."""

    def __init__(
        self,
        path: Path,
        identity: EmbedderIdentity,
        input_size: int,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
        threads: int | None = None,
    ) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise EmbeddingError(f"cannot load the ONNX image model {path} ({exc}); delete it to export it again, or set image.runtime: torch") from exc
        self.identity = identity
        self.input_size = input_size
        self.mean, self.std = mean, std

    def embed_arrays(self, batch: npt.NDArray[np.float32]) -> Vectors:
        check_pixel_batch(batch, self.input_size)
        if len(batch) == 0:
            return np.zeros((0, self.identity.dim), dtype=np.float32)
        out = np.asarray(self._session.run(None, {"pixels": np.ascontiguousarray(batch, dtype=np.float32)})[0], dtype=np.float32)
        return finite_unit_vectors(out, "EfficientNet-Lite0")


__all__ = ["ORT_TAG", "OnnxImageEmbedder", "export_lite0_onnx", "image_onnx_file"]
