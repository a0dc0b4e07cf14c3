"""Environments: dev, prod, ... each with its own Milvus, token, prefix, port, live pointer and releases."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kbrelease import ConfigError, KbRelease, load_config
from kbrelease.release.build import database_name
from kbrelease.store.lite import stop_server
from kbrelease.workspace import Workspace

from helpers import write_config

ENVIRONMENTS = """default_environment: dev
environments:
  dev:
    service_port: 3003
  prod:
    milvus_uri: http://milvus.prod.internal:19530
    token_env: MILVUS_TOKEN_PROD
    db_prefix: live_
    service_port: 3002
  staging:
    milvus_uri: http://milvus.staging.internal:19530
    token_file: secrets/staging-token
"""


def test_each_environment_has_its_own_milvus_token_prefix_and_port(tmp_path: Path, corpus: Path) -> None:
    path = write_config(tmp_path, corpus, ENVIRONMENTS)
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "staging-token").write_text("root:staging-secret\n", encoding="utf-8")
    env = {"MILVUS_TOKEN_PROD": "root:prod-secret", "MILVUS_TOKEN": "root:generic"}

    dev = load_config(path, env=env)
    prod = load_config(path, env=env, overrides={"environment": "prod"})
    staging = load_config(path, env={**env, "KBRELEASE_ENV": "staging"})

    assert (dev.environment, dev.environment_service_port, dev.service.port) == ("dev", 3003, 3003)  # kbrelease serve listens there
    assert dev.milvus_uri == str(tmp_path / "ws" / "milvus-dev")  # no URI: an embedded store of its own
    assert dev.milvus.token is not None and dev.milvus.token.get_secret_value() == "root:generic"
    assert (prod.milvus_uri, prod.milvus.db_prefix, prod.environment_service_port) == ("http://milvus.prod.internal:19530", "live_", 3002)
    assert prod.milvus.token is not None and prod.milvus.token.get_secret_value() == "root:prod-secret"
    assert staging.milvus.token is not None and staging.milvus.token.get_secret_value() == "root:staging-secret"
    assert staging.environment_service_port is None
    assert database_name(prod, "v3") == "live_prod_v3"
    assert Workspace.of(prod).release_dir("v3") != Workspace.of(dev).release_dir("v3")
    for cfg in (dev, prod, staging):
        for value in ("root:prod-secret", "root:staging-secret", "root:generic"):
            assert value not in repr(cfg) and value not in str(cfg.redacted())


@pytest.mark.parametrize("key", ["token", "milvus_token", "password"])
def test_a_token_written_in_the_config_file_is_refused(tmp_path: Path, corpus: Path, key: str) -> None:
    path = write_config(tmp_path, corpus, f"environments:\n  prod:\n    milvus_uri: http://m:19530\n    {key}: root:oops\n")

    with pytest.raises(ConfigError, match=rf"environments\.prod\.{key}: secrets must never be written in the config file; name the variable"):
        load_config(path, env={}, overrides={"environment": "prod"})


def test_environment_mistakes_are_named(tmp_path: Path, corpus: Path) -> None:
    path = write_config(tmp_path, corpus, ENVIRONMENTS.replace("default_environment: dev\n", ""))

    with pytest.raises(ConfigError, match=r"configures environments \(dev, prod, staging\); choose one with --env NAME"):
        load_config(path, env={})
    with pytest.raises(ConfigError, match=r"unknown environment 'qa': .* configures dev, prod, staging"):
        load_config(path, env={}, overrides={"environment": "qa"})
    with pytest.raises(ConfigError, match=r"reads its Milvus token from \$MILVUS_TOKEN_PROD, which is not set"):
        load_config(path, env={}, overrides={"environment": "prod"})
    with pytest.raises(ConfigError, match=r"token_file .*staging-token cannot be read"):
        load_config(path, env={}, overrides={"environment": "staging"})
    with pytest.raises(ConfigError, match=r"MILVUS_URI \(from the environment\) conflicts with environments\.prod\.milvus_uri"):
        load_config(path, env={"MILVUS_URI": "http://elsewhere:19530", "MILVUS_TOKEN_PROD": "x"}, overrides={"environment": "prod"})
    with pytest.raises(ConfigError, match=r"environment name 'pre-prod' is invalid"):
        load_config(write_config(tmp_path, Path("c"), "environments:\n  pre-prod: {}\n"), env={}, overrides={"environment": "pre-prod"})


def test_without_a_config_file_each_env_gets_its_own_embedded_store(tmp_path: Path) -> None:
    dev = load_config(env={"KBRELEASE_ENV": "dev"}, overrides={"workspace": str(tmp_path / "ws")})
    prod = load_config(env={}, overrides={"workspace": str(tmp_path / "ws"), "environment": "prod"})
    default = load_config(env={}, overrides={"workspace": str(tmp_path / "ws")})

    assert {dev.milvus_uri, prod.milvus_uri, default.milvus_uri} == {str(tmp_path / "ws" / f) for f in ("milvus-dev", "milvus-prod", "milvus")}


@pytest.fixture
def no_config_pair(tmp_path: Path, corpus: Path, text_embedder: Any, image_embedder: Any) -> Iterator[tuple[KbRelease, KbRelease]]:
    """dev and prod with no config file at all: only the seed's variables and --env."""
    env = {"S3_PATH_TEXT": str(corpus / "text")}
    ws = str(tmp_path / "ws")
    dev = KbRelease(load_config(env=env, overrides={"workspace": ws, "environment": "dev"}), text_embedder=text_embedder, image_embedder=image_embedder)
    prod = KbRelease(load_config(env=env, overrides={"workspace": ws, "environment": "prod"}), text_embedder=text_embedder, image_embedder=image_embedder)
    try:
        yield dev, prod
    finally:
        for kb in (dev, prod):
            kb.close()
            stop_server(Path(kb.cfg.milvus_uri))


def test_publishing_in_dev_leaves_prod_untouched_and_promote_copies_it(no_config_pair: tuple[KbRelease, KbRelease], tmp_path: Path) -> None:
    dev, prod = no_config_pair

    published = dev.publish()

    assert published.live == "v1" and published.release.database == "kb_dev_v1"
    assert prod.status() == {"environment": "prod", "live": None, "previous": None, "switched_at": None, "releases": [], "engine": "lite", "advice": []}
    assert (tmp_path / "ws" / "milvus-dev").is_dir() and dev.store.uri != prod.store.uri
    assert "kb_dev_v1" not in prod.store.databases()

    promoted = dev.promote("v1", prod, switch=True)

    assert (promoted.release, promoted.environment, promoted.live) == ("v1", "prod", "v1")
    assert promoted.rows == sum(c.rows for c in published.release.sources.values())
    assert prod.search("how do I connect to the VPN from home", k=1)[0].file == "it/vpn-setup.md"
    assert prod.release("v1").database == "kb_prod_v1"
    assert dev.status()["live"] == "v1" and [r["name"] for r in dev.status()["releases"]] == ["v1"]
    assert (tmp_path / "ws" / "envs" / "prod" / "releases" / "v1" / "index" / "bundle.yaml").is_file()
