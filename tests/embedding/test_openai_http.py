"""OpenAITextEmbedder against a real local OpenAI-compatible server."""

from __future__ import annotations

import logging
import socket

import numpy as np
import pytest

from kbrelease.embedding.base import TextEmbedder
from kbrelease.embedding.local_text import LocalTextEmbedder
from kbrelease.embedding.openai_http import OpenAITextEmbedder, embeddings_url
from kbrelease.errors import ConfigError, EmbeddingError, EmbeddingUnavailable

from embed_server import EmbedServer

pytestmark = pytest.mark.slow

MODEL = "all-MiniLM-L6-v2"


def make(server: EmbedServer, **kwargs: object) -> OpenAITextEmbedder:
    """An embedder for ``server`` with its token and near-zero backoff."""
    options: dict[str, object] = {"api_key": server.token, "backoff_base": 0.01}
    options.update(kwargs)
    return OpenAITextEmbedder(server.base_url, MODEL, 384, **options)  # type: ignore[arg-type]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_url_rule_appends_embeddings_to_the_base_url() -> None:
    assert embeddings_url("http://h:8000/v1") == "http://h:8000/v1/embeddings"
    assert embeddings_url("http://h:8000/v1/") == "http://h:8000/v1/embeddings"
    assert embeddings_url("http://h:8000") == "http://h:8000/embeddings"


def test_vectors_match_the_local_model(embed_server: EmbedServer, local_embedder: LocalTextEmbedder) -> None:
    texts = ["The cat sleeps.", "Invoices are due on Friday.", "Rivers flow to the sea."]
    with make(embed_server) as embedder:
        assert isinstance(embedder, TextEmbedder)
        remote = embedder.embed_texts(texts)
        assert embedder.embedded_count == len(texts)
        assert embedder.calls == 1
    assert remote.dtype == np.float32
    assert remote.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(remote, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(remote, local_embedder.embed_texts(texts), atol=1e-5)


def test_batches_run_concurrently_and_keep_order(embed_server: EmbedServer, local_embedder: LocalTextEmbedder) -> None:
    texts = [f"paragraph {i}: " + "lorem ipsum " * (i % 7) for i in range(150)]
    embed_server.delay = 0.05  # so the 4 workers overlap
    with make(embed_server, batch_size=16, concurrency=4) as embedder:
        remote = embedder.embed_texts(texts)
        assert embedder.requests == 10
    assert sorted(embed_server.batch_sizes) == [6] + [16] * 9
    assert embed_server.max_in_flight > 1
    np.testing.assert_allclose(remote, local_embedder.embed_texts(texts), atol=1e-5)


def test_empty_input_sends_nothing(embed_server: EmbedServer) -> None:
    with make(embed_server) as embedder:
        assert embedder.embed_texts([]).shape == (0, 384)
    assert embed_server.requests == 0


@pytest.mark.parametrize("status", [429, 500, 503])
def test_retries_transient_statuses_then_succeeds(embed_server: EmbedServer, status: int) -> None:
    embed_server.fail_next(2, status)
    with make(embed_server, max_retries=3) as embedder:
        vectors = embedder.embed_texts(["hello"])
    assert vectors.shape == (1, 384)
    assert embed_server.requests == 3


def test_gives_up_after_max_retries(embed_server: EmbedServer) -> None:
    embed_server.fail_next(100, 500)
    with (
        make(embed_server, max_retries=2) as embedder,
        pytest.raises(EmbeddingUnavailable, match=r"after 3 attempt.*HTTP 500") as info,
    ):
        embedder.embed_texts(["hello"])
    assert embed_server.base_url in str(info.value)
    assert "text.base_url" in str(info.value)
    assert info.value.transient
    assert embed_server.requests == 3


def test_wrong_dimension_names_text_embedding_dim(embed_server: EmbedServer) -> None:
    embed_server.wrong_dim = 256
    with (
        make(embed_server) as embedder,
        pytest.raises(EmbeddingError, match=r"256-d vectors but TEXT_EMBEDDING_DIM is 384"),
    ):
        embedder.embed_texts(["hello"])
    assert embed_server.requests == 1  # permanent: not retried


def test_configured_dim_differs_from_the_model(embed_server: EmbedServer) -> None:
    with (
        OpenAITextEmbedder(embed_server.base_url, MODEL, 768, api_key=embed_server.token) as emb,
        pytest.raises(EmbeddingError, match=r"384-d vectors but TEXT_EMBEDDING_DIM is 768"),
    ):
        emb.embed_texts(["hello"])


def test_wrong_key_is_refused_and_never_shown(embed_server: EmbedServer, caplog: pytest.LogCaptureFixture) -> None:
    wrong_key = "sk-wrong-very-private-value"
    caplog.set_level(logging.DEBUG)
    with make(embed_server, api_key=wrong_key) as embedder:
        assert wrong_key not in repr(embedder)
        assert "***" in repr(embedder)
        with pytest.raises(EmbeddingError) as info:
            embedder.embed_texts(["hello"])
    message = str(info.value)
    assert not isinstance(info.value, EmbeddingUnavailable)
    assert "401" in message
    assert "TEXT_EMBEDDING_API_KEY" in message
    # The server echoes the key it received; the embedder scrubs it.
    assert wrong_key not in message
    assert wrong_key not in caplog.text
    assert embed_server.requests == 1


def test_missing_key_is_refused(embed_server: EmbedServer) -> None:
    with (
        make(embed_server, api_key=None) as embedder,
        pytest.raises(EmbeddingError, match="401"),
    ):
        embedder.embed_texts(["hello"])


def test_unreachable_port_is_unavailable() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    with (
        OpenAITextEmbedder(url, MODEL, 384, max_retries=2, backoff_base=0.01) as embedder,
        pytest.raises(EmbeddingUnavailable, match=r"127\.0\.0\.1.*ConnectError"),
    ):
        embedder.embed_texts(["hello"])


def test_timeouts_are_retried(embed_server: EmbedServer) -> None:
    embed_server.delay = 0.5
    with (
        make(embed_server, timeout=0.1, max_retries=1) as embedder,
        pytest.raises(EmbeddingUnavailable, match="timed out"),
    ):
        embedder.embed_texts(["hello"])
    assert embed_server.requests == 2


def test_a_url_without_v1_gets_a_hint(embed_server: EmbedServer) -> None:
    base = embed_server.base_url.removesuffix("/v1")
    with (
        OpenAITextEmbedder(base, MODEL, 384, api_key=embed_server.token) as embedder,
        pytest.raises(EmbeddingError, match=r"404.*/v1"),
    ):
        embedder.embed_texts(["hello"])


def test_count_tokens_estimate_and_tokenizer(local_embedder: LocalTextEmbedder) -> None:
    text = "Retrieval quality depends on chunking. " * 20
    with OpenAITextEmbedder("http://127.0.0.1:1/v1", MODEL, 384) as estimate:
        assert estimate.hf_tokenizer is None
        assert estimate.count_tokens("abcdefg") == 3
        assert estimate.count_tokens("é") == 1  # 2 bytes
        assert estimate.count_tokens(text) >= local_embedder.count_tokens(text)

    tokenizer_json = local_embedder._folder / "tokenizer.json"  # the bundled model's
    with OpenAITextEmbedder("http://127.0.0.1:1/v1", MODEL, 384, tokenizer_path=str(tokenizer_json)) as exact:
        assert exact.hf_tokenizer is not None
        assert exact.count_tokens(text) == local_embedder.count_tokens(text)


def test_bad_configuration_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"text\.base_url"):
        OpenAITextEmbedder("127.0.0.1:8000/v1", MODEL, 384)
    with pytest.raises(ConfigError, match="TEXT_EMBEDDING_DIM"):
        OpenAITextEmbedder("http://127.0.0.1:8000/v1", MODEL, 0)
    with pytest.raises(ConfigError, match=r"text\.tokenizer_path"):
        OpenAITextEmbedder("http://h/v1", MODEL, 384, tokenizer_path="/nonexistent/tokenizer.json")
