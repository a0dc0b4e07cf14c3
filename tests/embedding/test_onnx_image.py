"""image.runtime onnx: the bundled EfficientNet-Lite0 exported once, giving torch's vectors, under its own identity."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kbrelease import ConfigError, KbRelease, load_config
from kbrelease.embedding.factory import make_image_embedder
from kbrelease.embedding.identity import configured_identity
from kbrelease.embedding.onnx_image import OnnxImageEmbedder
from kbrelease.images.preprocess import preprocess_image

from helpers import write_config


def _pixels(corpus: Path, emb: Any) -> np.ndarray:
    files = sorted((corpus / "images").rglob("*.png"))
    assert len(files) >= 4
    return np.stack([preprocess_image(f.read_bytes(), emb.input_size, emb.mean, emb.std, 40_000_000) for f in files])


def test_the_export_gives_torchs_vectors_and_is_made_once(tmp_path: Path, corpus: Path, image_embedder: Any) -> None:
    cfg = load_config(None, env={"KBRELEASE_IMAGE_RUNTIME": "onnx"}, overrides={"workspace": str(tmp_path / "ws"), "sources": []})
    onnx = make_image_embedder(cfg)
    assert isinstance(onnx, OnnxImageEmbedder)
    exported = next((tmp_path / "ws" / "models" / "onnx-image").rglob("*.onnx"))
    made = exported.stat().st_mtime_ns

    batch = _pixels(corpus, image_embedder)
    cos = (onnx.embed_arrays(batch) * image_embedder.embed_arrays(batch)).sum(axis=1)

    assert float(cos.min()) > 0.9999  # the same network, another runtime
    assert onnx.embed_arrays(batch[:0]).shape == (0, 1280)
    assert isinstance(make_image_embedder(cfg), OnnxImageEmbedder) and exported.stat().st_mtime_ns == made  # reused, not exported again
    # its own identity: same model and weights, the runtime tagged, derived without loading anything
    assert onnx.identity == configured_identity(cfg, "image")
    assert (onnx.identity.revision, onnx.identity.preprocessing) == (image_embedder.identity.revision, image_embedder.identity.preprocessing + ",ort")


def test_a_release_built_on_onnx_runtime_answers_image_searches(tmp_path: Path, corpus: Path, isolated_milvus: dict[str, str], text_embedder: Any) -> None:
    cfg = load_config(write_config(tmp_path, corpus), env={"KBRELEASE_IMAGE_RUNTIME": "onnx"}, overrides=isolated_milvus)
    with KbRelease(cfg, text_embedder=text_embedder) as kb:
        release = kb.publish().release
        picture = sorted((corpus / "images" / "stripes").iterdir())[0]
        hits = kb.search_image(picture, k=1)

    assert release.embedders["image"]["preprocessing"].endswith(",ort")
    assert hits[0].file == f"stripes/{picture.name}"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"image.device": "cuda"}, r"runs on the CPU"),
        ({"image.model": "my-vit", "image.model_path": __file__, "image.dim": 8, "image.input_size": 64}, r"efficientnet-lite0 only"),
    ],
)
def test_what_onnx_runtime_cannot_run_is_refused_with_the_fix(tmp_path: Path, overrides: dict[str, Any], message: str) -> None:
    cfg = load_config(None, env={"KBRELEASE_IMAGE_RUNTIME": "onnx"}, overrides={"workspace": str(tmp_path), "sources": [], **overrides})
    with pytest.raises(ConfigError, match=message) as err:
        make_image_embedder(cfg)
    assert "image.runtime: torch" in str(err.value)
