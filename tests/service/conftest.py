"""Fixtures of the service tests: one published project per module, and apps over it."""

from __future__ import annotations

import itertools
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from helpers import write_config

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "corpus"
ADMIN_TOKEN = "adm-7Qz9-secret-token"
API_TOKEN = "api-Lk3x-secret-token"
_n = itertools.count()


def copy_corpus(dest: Path, text: list[str] | None = None, image_folders: tuple[str, ...] = ("stripes", "checkerboard", "red-circles")) -> Path:
    """A writable slice of the example corpus: a few text files and three kinds of images."""
    for rel in text or ["it/vpn-setup.md", "it/password-rotation.md", "facilities/fire-drill.md", "policies/gym-partnership.txt"]:
        (dest / "text" / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(EXAMPLES / "text" / rel, dest / "text" / rel)
    for folder in image_folders:
        (dest / "images" / folder).mkdir(parents=True, exist_ok=True)
        for src in sorted((EXAMPLES / "images" / folder).iterdir())[:3]:
            shutil.copy2(src, dest / "images" / folder / src.name)
    return dest


def isolated(lite_server: str) -> dict[str, str]:
    n = next(_n)
    return {"milvus.uri": lite_server, "milvus.db_prefix": f"svc{n}_", "milvus.registry_db": f"svc{n}_registry"}


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory, lite_server: str, text_embedder: Any, image_embedder: Any) -> Iterator[Any]:
    """A KbRelease with release v1 live (text + images), the session's models, on the shared Lite server."""
    from kbrelease import KbRelease, load_config

    folder = tmp_path_factory.mktemp("service")
    corpus = copy_corpus(folder / "corpus")
    cfg = load_config(write_config(folder, corpus), env={}, overrides=isolated(lite_server))
    with KbRelease(cfg, text_embedder=text_embedder, image_embedder=image_embedder) as kb:
        kb.publish()
        yield kb


def wait_ready(client: Any, timeout: float = 120.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        resp = client.get("/readyz")
        if resp.status_code == 200:
            return dict(resp.json())
        if time.monotonic() > deadline:
            raise AssertionError(f"service not ready: {resp.text}")
        time.sleep(0.05)


def make_client(kb: Any, admin: str | None = ADMIN_TOKEN, api: str | None = None, edit: Callable[[Any], None] | None = None, **service: Any) -> Any:
    """A TestClient over a fresh app on ``kb`` (models shared); ``service`` sets keys of ``service:``."""
    from fastapi.testclient import TestClient

    from kbrelease.service.app import create_app

    cfg = kb.cfg.model_copy(deep=True)
    if edit is not None:
        edit(cfg)
    for key, value in service.items():
        setattr(cfg.service, key, value)
    cfg.service.admin_token = SecretStr(admin) if admin else None
    cfg.service.api_token = SecretStr(api) if api else None
    return TestClient(create_app(cfg, kb=kb))


@pytest.fixture(scope="module")
def client(published: Any) -> Iterator[Any]:
    with make_client(published) as c:
        wait_ready(c)
        yield c
