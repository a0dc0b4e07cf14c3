"""Fixtures for the embedding tests: the session's real model behind a real server."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from kbrelease.embedding.local_text import LocalTextEmbedder

from embed_server import EmbedServer  # tests/ is on sys.path (tests/conftest.py)

TOKEN = "sk-test-0123456789abcdef"


@pytest.fixture(scope="session")
def local_embedder(text_embedder: Any) -> LocalTextEmbedder:
    """The real all-MiniLM-L6-v2, loaded once per session by tests/conftest.py."""
    assert isinstance(text_embedder, LocalTextEmbedder)
    return text_embedder


@pytest.fixture(scope="session")
def _session_server(local_embedder: LocalTextEmbedder) -> Iterator[EmbedServer]:
    with EmbedServer(local_embedder, token=TOKEN) as server:
        yield server


@pytest.fixture
def embed_server(_session_server: EmbedServer) -> EmbedServer:
    """The session's server (bearer token required) with every fault and counter cleared."""
    _session_server.reset()
    return _session_server
