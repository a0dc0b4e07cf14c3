"""Seed 000's model variables: IMAGE_EMBEDDING_* select and shape the image encoder; TEXT_EMBEDDING_MODEL is never a label only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from kbrelease import ConfigError, KbRelease, load_config
from kbrelease.cli import app
from kbrelease.embedding.efficientnet_lite import weights_path
from kbrelease.embedding.factory import make_image_embedder, make_text_embedder
from kbrelease.embedding.identity import configured_identity

from helpers import write_config


def test_the_seed_image_variables_with_input_size_384_publish_and_search(
    tmp_path: Path, corpus: Path, isolated_milvus: dict[str, str], text_embedder: Any
) -> None:
    seed_env = {
        "IMAGE_EMBEDDING_MODEL": "efficientnet_lite0",  # the seed's spelling may use either separator
        "IMAGE_EMBEDDING_MODEL_PATH": str(weights_path()),
        "IMAGE_EMBEDDING_DIM": "1280",
        "IMAGE_EMBEDDING_INPUT_SIZE": "384",
    }
    cfg = load_config(write_config(tmp_path, corpus), env=seed_env, overrides=isolated_milvus)
    assert (cfg.image.model_path, cfg.image.dim, cfg.image.input_size) == (str(weights_path()), 1280, 384)
    image = make_image_embedder(cfg)
    assert image.input_size == 384
    assert configured_identity(cfg, "image") == image.identity  # derived without loading the model, the same
    with KbRelease(cfg, text_embedder=text_embedder, image_embedder=image) as kb:
        release = kb.publish().release
        picture = sorted((corpus / "images" / "checkerboard").iterdir())[0]
        hits = kb.search_image(picture, k=1)
    recorded = release.embedders["image"]
    assert (recorded["model"], recorded["dim"]) == ("efficientnet-lite0", 1280)
    assert recorded["preprocessing"].startswith("crop384-")
    assert release.sources["pictures"].rows == release.sources["pictures"].files > 0
    assert hits[0].file == f"checkerboard/{picture.name}" and hits[0].score > 0.99


def test_an_unknown_image_model_lists_the_supported_ones() -> None:
    with pytest.raises(ConfigError) as caught:
        make_image_embedder(load_config(env={"IMAGE_EMBEDDING_MODEL": "clip-vit-b32", "IMAGE_EMBEDDING_DIM": "512"}))
    message = str(caught.value)
    assert "'clip-vit-b32' is not supported" in message
    assert "IMAGE_EMBEDDING_MODEL_PATH, IMAGE_EMBEDDING_INPUT_SIZE" in message and "IMAGE_EMBEDDING_DIM" not in message.split("Supported")[0]
    assert "efficientnet-lite0: bundled" in message and "torch.export" in message
    with pytest.raises(ConfigError, match="'clip-vit-b32' is not supported"):
        configured_identity(load_config(env={"IMAGE_EMBEDDING_MODEL": "clip-vit-b32"}), "image")


def test_a_text_model_name_without_a_way_to_run_it_is_refused(tmp_path: Path, corpus: Path) -> None:
    cfg = load_config(env={"TEXT_EMBEDDING_MODEL": "bge-m3"})
    for call in (lambda: make_text_embedder(cfg), lambda: configured_identity(cfg, "text")):
        with pytest.raises(ConfigError, match=r"text model 'bge-m3' \(TEXT_EMBEDDING_MODEL\) is not the bundled all-MiniLM-L6-v2.*TEXT_EMBEDDING_BASE_URL"):
            call()

    config = write_config(tmp_path, corpus)
    refused = CliRunner().invoke(app, ["-c", str(config), "publish"], env={"TEXT_EMBEDDING_MODEL": "bge-m3"})
    assert refused.exit_code != 0 and "TEXT_EMBEDDING_MODEL_PATH" in refused.stderr
    assert not (tmp_path / "ws" / "releases").exists() or not any((tmp_path / "ws" / "releases").iterdir())  # nothing was built under a false name


def test_a_text_model_name_with_its_folder_records_that_folder(text_embedder: Any) -> None:
    folder = str(text_embedder._folder)
    named = configured_identity(load_config(env={"TEXT_EMBEDDING_MODEL": "my-minilm", "TEXT_EMBEDDING_MODEL_PATH": folder}), "text")
    bundled = configured_identity(load_config(env={"TEXT_EMBEDDING_MODEL": "sentence-transformers/all-MiniLM-L6-v2"}), "text")
    assert named.model == "my-minilm" and named.revision == bundled.revision == text_embedder.identity.revision
