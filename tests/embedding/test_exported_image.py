"""Any image encoder from a local torch.export file: built, published and searched."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from kbrelease import ConfigError, EmbeddingError, KbRelease, load_config
from kbrelease.embedding.factory import make_image_embedder

from helpers import write_config


class TinyEncoder(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 16, 5, stride=2)
        self.fc = torch.nn.Linear(16 * 4 * 4, 32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.nn.functional.adaptive_avg_pool2d(torch.relu(self.conv(x)), 4)
        return self.fc(h.flatten(1))


@pytest.fixture
def encoder_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.pt2"
    program = torch.export.export(TinyEncoder().eval(), (torch.zeros(2, 3, 64, 64),), dynamic_shapes={"x": {0: torch.export.Dim("batch")}})
    torch.export.save(program, str(path))
    return path


def test_an_exported_encoder_publishes_and_searches(
    tmp_path: Path, corpus: Path, encoder_file: Path, isolated_milvus: dict[str, str], text_embedder: Any
) -> None:
    extra = f"image:\n  model: tiny-encoder\n  model_path: {encoder_file}\n  dim: 32\n  input_size: 64\n"
    cfg = load_config(write_config(tmp_path, corpus, extra), env={}, overrides=isolated_milvus)
    with KbRelease(cfg, text_embedder=text_embedder) as kb:
        info = kb.publish()
        picture = sorted((corpus / "images" / "checkerboard").iterdir())[0]
        hits = kb.search_image(picture, k=1)

    assert info.release.embedders["image"]["model"] == "tiny-encoder"
    assert info.release.embedders["image"]["dim"] == 32
    assert info.release.sources["pictures"].rows == 6
    assert hits[0].file == f"checkerboard/{picture.name}"


def test_unknown_models_need_a_local_file(tmp_path: Path, encoder_file: Path) -> None:
    with pytest.raises(ConfigError, match="never downloaded"):
        make_image_embedder(load_config(env={"IMAGE_EMBEDDING_MODEL": "clip-vit-b32"}))
    with pytest.raises(EmbeddingError, match=r"returned 32-d vectors but image.dim / IMAGE_EMBEDDING_DIM is 64"):
        cfg = load_config(env={"IMAGE_EMBEDDING_MODEL": "tiny", "IMAGE_EMBEDDING_DIM": "64"})
        cfg.image.model_path, cfg.image.input_size = str(encoder_file), 64
        make_image_embedder(cfg).embed_arrays(torch.zeros(1, 3, 64, 64).numpy())
