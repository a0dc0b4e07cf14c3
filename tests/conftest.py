"""Shared fixtures: real models (loaded once), a real Milvus Lite server, a clean environment."""

from __future__ import annotations

import itertools
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_CORPUS = REPO / "examples" / "corpus"

# text.quantize auto reads the CPU: pinned to "no native bf16" for the whole session (module and session fixtures, the
# servers and CLIs they start included), so that configs resolve to the session's float32 model on every machine.
os.environ["KBRELEASE_CPU_BF16"] = "0"

# Variables that would change what the code under test does.
_ENV_PREFIXES = ("KBRELEASE_", "S3_", "COLLECTION_NAME_", "MILVUS_", "TEXT_EMBEDDING_", "IMAGE_EMBEDDING_", "AWS_", "OPENAI_")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Every test starts with none of kbrelease's variables and a scratch cwd."""
    for name in list(os.environ):
        if name.startswith(_ENV_PREFIXES) and name != "AWS_CA_BUNDLE":
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setenv("KBRELEASE_CPU_BF16", "0")  # see above; tests/embedding/test_quantize_auto.py sets it to 1 for the other branch
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="session")
def text_embedder() -> Any:
    from kbrelease.embedding.local_text import LocalTextEmbedder

    return LocalTextEmbedder()


@pytest.fixture(scope="session")
def image_embedder() -> Any:
    from kbrelease.embedding.efficientnet_lite import EfficientNetLiteEmbedder

    return EfficientNetLiteEmbedder()


@pytest.fixture(scope="session")
def lite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One real Milvus Lite server (gRPC, 127.0.0.1) for the session; tests isolate by database names."""
    from servers import MilvusLiteServer

    with MilvusLiteServer(tmp_path_factory.mktemp("milvus-lite")) as server:
        yield server.uri


@pytest.fixture(scope="module")
def milvus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Milvus server (PyPI `milvus` 2.3.5) on 127.0.0.1, one per test module that asks for it."""
    from servers import MilvusServer

    if not MilvusServer.available():
        pytest.fail("milvus-server is not installed: pip install milvus==2.3.5 (scripts/setup does)")
    with MilvusServer(tmp_path_factory.mktemp("milvus-server")) as server:
        yield server.uri


_counter = itertools.count()


@pytest.fixture
def isolated_milvus(lite_server: str) -> dict[str, str]:
    """Config overrides that give a test its own databases on the shared Lite server."""
    n = next(_counter)
    return {"milvus.uri": lite_server, "milvus.db_prefix": f"t{n}_", "milvus.registry_db": f"t{n}_registry"}


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """A writable copy of a slice of the example corpus: a few text files and images."""
    dest = tmp_path / "corpus"
    text = dest / "text"
    images = dest / "images"
    text.mkdir(parents=True)
    images.mkdir(parents=True)
    for rel in ["it/vpn-setup.md", "it/password-rotation.md", "facilities/fire-drill.md", "policies/gym-partnership.txt"]:
        src = EXAMPLE_CORPUS / "text" / rel
        (text / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, text / rel)
    for folder in ["stripes", "checkerboard"]:
        for src in sorted((EXAMPLE_CORPUS / "images" / folder).iterdir())[:3]:
            (images / folder).mkdir(exist_ok=True)
            shutil.copy2(src, images / folder / src.name)
    return dest


@pytest.fixture
def project(tmp_path: Path, corpus: Path, isolated_milvus: dict[str, str], text_embedder: Any, image_embedder: Any) -> Iterator[Any]:
    """A KbRelease over the `corpus` fixture, on the shared Lite server, with the session's models."""
    from kbrelease import KbRelease, load_config

    from helpers import write_config

    cfg = load_config(write_config(tmp_path, corpus), env={}, overrides=isolated_milvus)
    with KbRelease(cfg, text_embedder=text_embedder, image_embedder=image_embedder) as kb:
        yield kb


# --- tiers -------------------------------------------------------------------------
# The fast tier (`pytest -m fast`, `bash scripts/check --fast`) is every test that needs
# no model, no Milvus server and no subprocess: it runs in well under a minute. A test is
# in it unless it uses one of these fixtures or is marked `slow` or `milvus_server`.
_HEAVY_FIXTURES = frozenset({"text_embedder", "image_embedder", "lite_server", "milvus_server", "isolated_milvus", "project"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        heavy = _HEAVY_FIXTURES.intersection(getattr(item, "fixturenames", ()))
        if not heavy and item.get_closest_marker("slow") is None and item.get_closest_marker("milvus_server") is None:
            item.add_marker(pytest.mark.fast)
