"""A publish loads its models in the background while it syncs: the first use gets that model, or the load's own error."""

from __future__ import annotations

from pathlib import Path

import pytest

from kbrelease import load_config
from kbrelease.embedding.identity import configured_identity
from kbrelease.embedding.models import Models
from kbrelease.errors import EmbeddingError


def test_a_preloaded_model_is_the_one_the_first_use_gets(tmp_path: Path) -> None:
    cfg = load_config(None, env={}, overrides={"workspace": str(tmp_path), "sources": []})
    models = Models(cfg)

    models.preload(["image"])
    thread = models._preloading
    assert thread is not None and thread.name == "kbrelease-preload"
    thread.join(timeout=120)

    loaded = models.loaded_image
    assert loaded is not None  # loaded by the thread, before any use asked for it
    assert models.image is loaded
    assert loaded.identity == configured_identity(cfg, "image")
    models.preload(["image"])  # nothing left to load: no second thread
    assert models._preloading is None


def test_a_model_that_fails_to_preload_raises_its_own_error_at_first_use(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-weights.pth"
    cfg = load_config(None, env={}, overrides={"workspace": str(tmp_path), "sources": [], "image": {"model_path": str(missing)}})
    models = Models(cfg)

    models.preload(["image"])

    with pytest.raises(EmbeddingError, match="no-such-weights"):
        _ = models.image
    assert models.loaded_image is None
