"""EfficientNet-Lite0 embedder, on the real weights, on CPU.

No photos are downloaded: the images are drawn with Pillow from fixed seeds. The
one photo check uses scikit-learn's bundled sample image and skips without it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import math
import pathlib

import numpy as np
import numpy.typing as npt
import pytest
import torch
from PIL import Image, ImageDraw, ImageEnhance

from kbrelease.embedding.base import ImageEmbedder
from kbrelease.embedding.efficientnet_lite import (
    FEATURE_DIM,
    MEAN,
    NATIVE_SIZE,
    STD,
    EfficientNetLite0,
    EfficientNetLiteEmbedder,
    load_efficientnet_lite0,
    weights_path,
)
from kbrelease.errors import EmbeddingError

Array = npt.NDArray[np.float32]
CANVAS = 256  # drawn larger than the crop so a shifted crop stays inside


def draw(seed: int) -> Image.Image:
    """A gradient with a dozen random shapes; different seeds, different scenes."""
    rng = np.random.default_rng(seed)
    top, bottom = rng.integers(0, 256, (2, 3))
    t = np.linspace(0.0, 1.0, CANVAS)[:, None, None]
    grad = (top * (1 - t) + bottom * t) * np.ones((1, CANVAS, 1))
    img = Image.fromarray(grad.astype(np.uint8))
    pen = ImageDraw.Draw(img)
    for _ in range(14):
        x, y = (int(v) for v in rng.integers(-40, CANVAS, 2))
        w, h = (int(v) for v in rng.integers(20, 140, 2))
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        box = (x, y, x + w, y + h)
        match int(rng.integers(0, 4)):
            case 0:
                pen.ellipse(box, fill=colour)
            case 1:
                pen.rectangle(box, fill=colour)
            case 2:
                pen.line(box, fill=colour, width=int(rng.integers(3, 15)))
            case _:
                corners = [(int(a), int(b)) for a, b in rng.integers(0, CANVAS, (3, 2))]
                pen.polygon(corners, fill=colour)
    return img


def checkerboard(cells: int) -> Image.Image:
    idx = np.arange(CANVAS) // (CANVAS // cells)
    board = ((idx[:, None] + idx[None, :]) % 2 * 255).astype(np.uint8)
    return Image.fromarray(board).convert("RGB")


def to_array(img: Image.Image, offset: int = 16) -> Array:
    """Crop NATIVE_SIZE at ``offset`` and normalize the way the embedder expects."""
    crop = img.crop((offset, offset, offset + NATIVE_SIZE, offset + NATIVE_SIZE))
    pixels = np.asarray(crop, dtype=np.float32) / np.float32(255.0)
    x = (pixels - np.array(MEAN, np.float32)) / np.array(STD, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32)


def jpeg(img: Image.Image, quality: int = 80) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


@pytest.fixture(scope="module")
def embedder() -> EfficientNetLiteEmbedder:
    return EfficientNetLiteEmbedder(device="cpu")


@pytest.fixture(scope="module")
def model(embedder: EfficientNetLiteEmbedder) -> EfficientNetLite0:
    return embedder._model


@pytest.fixture(scope="module")
def gallery() -> list[Image.Image]:
    return [draw(seed) for seed in range(10)]


def test_weights_load_strictly_and_in_order() -> None:
    model = load_efficientnet_lite0("cpu")
    source = torch.load(weights_path(), map_location="cpu", weights_only=True)
    assert not model.training
    # Ends of the positional mapping land where lukemelas put them.
    torch.testing.assert_close(model.features[0].weight, source["_conv_stem.weight"])
    torch.testing.assert_close(model.classifier.weight, source["_fc.weight"])
    torch.testing.assert_close(model.classifier.bias, source["_fc.bias"])
    assert sum(p.numel() for p in model.parameters()) == 4_652_008


def test_unusable_weights_raise_embedding_error(tmp_path: pathlib.Path) -> None:
    source = torch.load(weights_path(), map_location="cpu", weights_only=True)
    source["_fc.weight"] = source["_fc.weight"][:10]  # a 10-class head
    bad = tmp_path / "wrong.pth"
    torch.save(source, bad)
    with pytest.raises(EmbeddingError, match=r"wrong\.pth"):
        load_efficientnet_lite0("cpu", bad)
    with pytest.raises(EmbeddingError, match=r"missing\.pth"):
        load_efficientnet_lite0("cpu", tmp_path / "missing.pth")


def test_identity_and_protocol(embedder: EfficientNetLiteEmbedder) -> None:
    assert isinstance(embedder, ImageEmbedder)
    digest = hashlib.sha256(weights_path().read_bytes()).hexdigest()
    ident = embedder.identity
    assert (ident.kind, ident.model, ident.dim) == ("image", "efficientnet-lite0", 1280)
    assert ident.revision == digest[:12]
    assert ident.preprocessing == "crop224-mean0.5,0.5,0.5-std0.5,0.5,0.5"
    assert (embedder.input_size, embedder.mean, embedder.std) == (224, MEAN, STD)


def test_features_unit_norm_and_deterministic(embedder: EfficientNetLiteEmbedder, gallery: list[Image.Image]) -> None:
    batch = np.stack([to_array(img) for img in gallery[:3]])
    first = embedder.embed_arrays(batch)
    assert first.shape == (3, FEATURE_DIM) and first.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(embedder.embed_arrays(batch), first)
    # A row does not depend on what else is in the batch.
    np.testing.assert_allclose(embedder.embed_arrays(batch[1:2])[0], first[1], atol=1e-4)


def test_forward_shapes(model: EfficientNetLite0) -> None:
    x = torch.zeros(2, 3, NATIVE_SIZE, NATIVE_SIZE)
    with torch.inference_mode():
        assert model.forward_features(x).shape == (2, FEATURE_DIM)
        assert model(x).shape == (2, 1000)


def test_bad_batches(embedder: EfficientNetLiteEmbedder) -> None:
    empty = embedder.embed_arrays(np.zeros((0, 3, 224, 224), np.float32))
    assert empty.shape == (0, FEATURE_DIM)
    with pytest.raises(EmbeddingError, match="batch"):
        embedder.embed_arrays(np.zeros((1, 3, 200, 200), np.float32))


def test_perturbed_copies_are_nearest_neighbours(embedder: EfficientNetLiteEmbedder, gallery: list[Image.Image]) -> None:
    refs = embedder.embed_arrays(np.stack([to_array(img) for img in gallery]))
    for i in (0, 3, 7):
        img = gallery[i]
        copies = [
            to_array(img, offset=20),  # crop shifted by 4 px
            to_array(ImageEnhance.Brightness(img).enhance(1.15)),
            to_array(jpeg(img)),
        ]
        sims = embedder.embed_arrays(np.stack(copies)) @ refs.T
        assert list(sims.argmax(axis=1)) == [i, i, i], sims.round(3)


def test_classifier_is_not_degenerate(model: EfficientNetLite0, gallery: list[Image.Image]) -> None:
    images = gallery + [checkerboard(cells) for cells in (4, 8, 16, 32)]
    x = torch.from_numpy(np.stack([to_array(img) for img in images]))
    with torch.inference_mode():
        logp = model(x).log_softmax(dim=1)
    entropy = -(logp.exp() * logp).sum(dim=1)
    # Uniform over 1000 classes is ln(1000) ~ 6.9 nats; random weights sit near it.
    assert int((entropy < 0.5 * math.log(1000)).sum()) >= 3, entropy
    assert len(set(logp.argmax(dim=1).tolist())) >= 3


def _sample_photo(name: str) -> pathlib.Path:
    spec = importlib.util.find_spec("sklearn")  # locate without importing sklearn
    origin = spec.origin if spec else None
    path = pathlib.Path(origin or ".").parent / "datasets" / "images" / name
    if not path.is_file():
        pytest.skip(f"scikit-learn sample image {name} not installed")
    return path


@pytest.mark.parametrize(("name", "label"), [("flower.jpg", 985), ("china.jpg", 698)])
def test_sample_photo_top1(model: EfficientNetLite0, name: str, label: int) -> None:
    """daisy / palace. With ImageNet mean/std instead of 0.5 the daisy is lost."""
    img = Image.open(_sample_photo(name)).convert("RGB")
    scale = CANVAS / min(img.size)
    size = (round(img.width * scale), round(img.height * scale))
    img = img.resize(size, Image.Resampling.BICUBIC)
    left, top = (img.width - NATIVE_SIZE) // 2, (img.height - NATIVE_SIZE) // 2
    arr = to_array(img.crop((left, top, img.width, img.height)), offset=0)
    with torch.inference_mode():
        logits = model(torch.from_numpy(arr)[None])
    assert int(logits.argmax()) == label
