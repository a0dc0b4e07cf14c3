"""Fixtures for packages: a second environment ("prod") beside the `project` fixture's."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kbrelease import KbRelease, load_config

from .support import MakeTarget
from helpers import write_config

_counter = itertools.count()


@pytest.fixture
def make_target(tmp_path: Path, corpus: Path, lite_server: str, text_embedder: Any, image_embedder: Any) -> Iterator[MakeTarget]:
    """``make_target(env="prod", uri=None, models=True)``: a project of another environment, with its own
    workspace and databases (on the shared Lite server unless ``uri`` is given). ``models=False`` gives
    it no loaded models, like a CLI process that only imports."""
    made: list[KbRelease] = []

    def make(env: str = "prod", uri: str | None = None, models: bool = True, environ: dict[str, str] | None = None) -> KbRelease:
        n = next(_counter)
        folder = tmp_path / f"{env}-{n}"
        folder.mkdir()
        overrides = {"milvus.uri": uri or lite_server, "milvus.db_prefix": f"p{n}_", "milvus.registry_db": f"p{n}_registry", "environment": env}
        cfg = load_config(write_config(folder, corpus), env=environ or {}, overrides=overrides)
        kb = KbRelease(cfg, text_embedder=text_embedder, image_embedder=image_embedder) if models else KbRelease(cfg)
        made.append(kb)
        return kb

    yield make
    for kb in made:
        kb.close()
