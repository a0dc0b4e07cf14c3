"""The configured embedders' identity, computed without loading a model, is the loaded models' identity."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kbrelease import ConfigError, load_config
from kbrelease.embedding.identity import configured_identity


def test_it_equals_the_identity_of_the_loaded_models(text_embedder: Any, image_embedder: Any) -> None:
    cfg = load_config(env={})

    assert configured_identity(cfg, "text") == text_embedder.identity
    assert configured_identity(cfg, "image") == image_embedder.identity


def test_an_openai_endpoint_is_named_by_its_model_and_dimension() -> None:
    cfg = load_config(env={"TEXT_EMBEDDING_BASE_URL": "http://127.0.0.1:9/v1", "TEXT_EMBEDDING_MODEL": "bge-m3", "TEXT_EMBEDDING_DIM": "1024"})

    ident = configured_identity(cfg, "text")

    assert (ident.model, ident.dim, ident.revision) == ("bge-m3", 1024, "")


def test_a_wrong_dimension_is_refused_as_the_factory_would(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"gives 384-d vectors but text\.dim / TEXT_EMBEDDING_DIM is 512"):
        configured_identity(load_config(env={"TEXT_EMBEDDING_DIM": "512"}), "text")
    with pytest.raises(ConfigError, match=r"gives 1280-d vectors but image\.dim / IMAGE_EMBEDDING_DIM is 512"):
        configured_identity(load_config(env={"IMAGE_EMBEDDING_DIM": "512"}), "image")
