"""Config: the YAML file, the seed's environment variables, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from kbrelease import ConfigError, load_config
from kbrelease.config import STARTER, write_starter


def test_seed_environment_variables_alone_describe_two_sources(tmp_path: Path) -> None:
    env = {
        "S3_PATH_TEXT": "s3://kb/text",
        "S3_PATH_IMAGE": str(tmp_path / "images"),
        "COLLECTION_NAME_TEXT": "kb_text",
        "COLLECTION_NAME_IMAGE": "kb_image",
        "MILVUS_URI": "http://127.0.0.1:19530",
        "MILVUS_TOKEN": "root:s3cret",
        "TEXT_EMBEDDING_BASE_URL": "http://127.0.0.1:8000/v1",
        "TEXT_EMBEDDING_MODEL": "bge-m3",
        "TEXT_EMBEDDING_DIM": "1024",
        "IMAGE_EMBEDDING_MODEL": "efficientnet-lite0",
        "IMAGE_EMBEDDING_DIM": "1280",
    }

    cfg = load_config(env=env)

    assert [(s.name, s.modality, s.path, s.collection_name) for s in cfg.sources] == [
        ("text", "text", "s3://kb/text", "kb_text"),
        ("image", "image", str(tmp_path / "images"), "kb_image"),
    ]
    assert cfg.milvus_uri == "http://127.0.0.1:19530"
    assert cfg.text.embedder == "openai"
    assert (cfg.text.model, cfg.text.dim, cfg.image.dim) == ("bge-m3", 1024, 1280)
    assert cfg.milvus.token is not None and cfg.milvus.token.get_secret_value() == "root:s3cret"
    assert "s3cret" not in repr(cfg) and "s3cret" not in str(cfg.redacted())


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    path = tmp_path / "kbrelease.yaml"
    path.write_text("sources:\n  - {name: notes, path: ./notes, modality: text}\nmilvus:\n  db_prefix: a_\n", encoding="utf-8")

    cfg = load_config(path, env={"MILVUS_DB_PREFIX": "b_", "S3_PATH_TEXT": "s3://bucket/notes"})

    assert cfg.milvus.db_prefix == "b_"
    assert cfg.sources[0].name == "notes"
    assert cfg.sources[0].path == "s3://bucket/notes"


def test_relative_paths_resolve_against_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "kbrelease.yaml"
    path.write_text("workspace: ws\nsources:\n  - {name: notes, path: ./notes, modality: text}\n", encoding="utf-8")

    cfg = load_config(path, env={})

    assert cfg.sources[0].path == str(tmp_path / "sub" / "notes")
    assert cfg.workspace == tmp_path / "sub" / "ws"


def test_unknown_key_is_named_with_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "kbrelease.yaml"
    path.write_text("sources: []\ntext:\n  chunk_sise: 10\n", encoding="utf-8")

    with pytest.raises(ConfigError) as err:
        load_config(path, env={})

    assert "text.chunk_sise: unknown key; remove it or check its spelling" in str(err.value)


def test_bad_value_names_the_key(tmp_path: Path) -> None:
    path = tmp_path / "kbrelease.yaml"
    path.write_text("sources:\n  - {name: docs, path: x, modality: video}\n", encoding="utf-8")

    with pytest.raises(ConfigError, match=r"sources\.0\.modality"):
        load_config(path, env={})


def test_token_in_the_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "kbrelease.yaml"
    path.write_text("milvus:\n  token: root:Milvus\n", encoding="utf-8")

    with pytest.raises(ConfigError, match="MILVUS_TOKEN") as err:
        load_config(path, env={})
    assert "root:Milvus" not in str(err.value)


def test_openai_embedder_needs_a_dimension() -> None:
    with pytest.raises(ConfigError, match="TEXT_EMBEDDING_DIM"):
        load_config(env={"TEXT_EMBEDDING_BASE_URL": "http://127.0.0.1:9/v1"})


def test_duplicate_collections_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "kbrelease.yaml"
    path.write_text(
        "sources:\n  - {name: a, path: x, modality: text, collection: c}\n  - {name: b, path: y, modality: text, collection: c}\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match="collection 'c' is fed by two sources"):
        load_config(path, env={})


def test_missing_explicit_file_says_how_to_create_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="kbrelease init"):
        load_config(tmp_path / "nope.yaml", env={})


def test_init_writes_a_starter_that_loads(tmp_path: Path) -> None:
    path = write_starter(tmp_path / "kbrelease.yaml")

    cfg = load_config(path, env={})

    assert [s.name for s in cfg.sources] == ["docs", "images"]
    assert path.read_text(encoding="utf-8") == STARTER
    with pytest.raises(ConfigError, match="--force"):
        write_starter(path)


def test_the_starter_is_generated_from_the_model_so_it_names_every_key() -> None:
    from pydantic import BaseModel

    from kbrelease.config import Config

    for name, field in Config.model_fields.items():
        if field.exclude or name == "environment":
            continue
        assert f"{name}:" in STARTER, name
        default = field.default_factory() if field.default_factory is not None else field.default  # type: ignore[call-arg]
        if isinstance(default, BaseModel):
            for key, sub in type(default).model_fields.items():
                if not sub.exclude and "SecretStr" not in str(sub.annotation):
                    assert f"#   {key}: " in STARTER, f"{name}.{key}"
    assert "token:" not in STARTER and "api_token" not in STARTER  # secrets are never in the file
