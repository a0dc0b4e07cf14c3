"""What every rendered object shares: names, labels, images, and the pods' configuration.

Pods get their settings the way the seed workflow's did: a ConfigMap of
environment variables with the seed's names (``S3_PATH_TEXT``,
``MILVUS_URI``, ...), plus the whole ``kbrelease.yaml`` as a mounted file so
any number of sources works. Secrets are only ever *referenced*
(``secretKeyRef`` into the Secret ``deploy.secret_name``), never written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import BaseModel, SecretStr

from kbrelease import __version__
from kbrelease.config import Config
from kbrelease.config.secrets import URL_KEYS, url_credentials, value_at
from kbrelease.errors import ConfigError

WORKSPACE_MOUNT = "/workspace"
CONFIG_MOUNT = "/etc/kbrelease"
CONFIG_FILE = "kbrelease.yaml"
TMP_MOUNT = "/tmp"  # noqa: S108 - an emptyDir in the pod: the root filesystem is read-only
MONITOR_STATE_DIR = f"{TMP_MOUNT}/monitor-state"
"""Where the service's monitor keeps its incidents: writable (the workspace is mounted read-only in the service)."""
RUN_AS_USER = 10001  # the non-root user of the Dockerfile

# Keys of the Secret deploy.secret_name that pods read come from the one
# secrets table (kbrelease.config.secrets.keys_for); all optional, so one
# Secret serves S3 or local sources, a token or none.
# What a URL that reaches a ConfigMap may not carry, and where its credentials belong instead.
_URL_CREDENTIALS_GO_TO = {
    "milvus.uri": "MILVUS_TOKEN (user:password)",
    "text.base_url": "TEXT_EMBEDDING_API_KEY",
    "s3.endpoint_url": "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY",
}


@dataclass(frozen=True)
class Names:
    """Names of the rendered objects, all derived from ``deploy.name``."""

    prefix: str
    namespace: str
    template: str | None = None

    @property
    def config_env(self) -> str:
        return f"{self.prefix}-config"

    @property
    def config_file(self) -> str:
        return f"{self.prefix}-config-file"

    @property
    def pvc(self) -> str:
        return f"{self.prefix}-workspace"

    @property
    def workflow(self) -> str:
        return self.template or f"{self.prefix}-publish"

    @property
    def service(self) -> str:
        return f"{self.prefix}-search"

    @property
    def workflow_account(self) -> str:
        return f"{self.prefix}-workflow"


def names(cfg: Config) -> Names:
    return Names(cfg.deploy.name, cfg.deploy.namespace, cfg.deploy.workflow_template)


def image(cfg: Config, gpu: bool = False) -> str:
    tag = cfg.deploy.tag or __version__
    if gpu:
        tag = cfg.deploy.gpu_tag or f"{tag}-gpu"
    return f"{cfg.deploy.image}:{tag}"


def labels(cfg: Config, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "kbrelease",
        "app.kubernetes.io/instance": cfg.deploy.name,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/version": __version__,
        "app.kubernetes.io/managed-by": "kbrelease",
    }


def selector(cfg: Config, component: str) -> dict[str, str]:
    """The labels that select a component's pods (no version: it changes on upgrade)."""
    return {k: v for k, v in labels(cfg, component).items() if k != "app.kubernetes.io/version"}


def service_port(cfg: Config) -> int:
    """Port of ``kbrelease serve`` (config ``service.port``, else the environment's ``service_port``, else 8000)."""
    return cfg.service.port


def slug(name: str) -> str:
    """A source name as part of an Argo task name (lowercase letters, digits, '-')."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "source"


def check_deployable(cfg: Config) -> list[str]:
    """Refuse configs a cluster cannot run; return warnings about ones it may not."""
    if not cfg.sources:
        raise ConfigError("no sources configured; add 'sources:' to kbrelease.yaml before rendering the deployment")
    uri = cfg.milvus.uri or ""
    if not uri.startswith(("http://", "https://", "tcp://", "grpc://")):
        raise ConfigError(
            "milvus.uri must name a Milvus server that the cluster reaches (e.g. http://milvus.milvus:19530): "
            "the embedded Milvus Lite lives in one process's folder; set milvus.uri or MILVUS_URI and render again"
        )
    for key in URL_KEYS:
        value = value_at(cfg, key)
        if isinstance(value, str) and url_credentials(value):
            raise ConfigError(
                f"{key} carries credentials (user:password@ or a secret query parameter); rendered ConfigMaps are not secret: "
                f"remove them from the URL and put them in the Secret {cfg.deploy.secret_name} as {_URL_CREDENTIALS_GO_TO[key]}"
            )
    warnings = []
    for src in cfg.sources:
        if not src.path.startswith("s3://"):
            warnings.append(
                f"source {src.name!r} reads the local path {src.path}; in the cluster that path must exist inside the pods "
                "(e.g. on the workspace volume), or use an s3:// source"
            )
    return warnings


def _public(model: BaseModel) -> dict[str, Any]:
    """``model_dump(mode="json")`` without any secret field, at any depth."""
    out: dict[str, Any] = {}
    for name, info in type(model).model_fields.items():
        if info.exclude:
            continue
        value = getattr(model, name)
        if isinstance(value, SecretStr) or "SecretStr" in str(info.annotation):
            continue
        if isinstance(value, BaseModel):
            out[name] = _public(value)
        elif isinstance(value, list) and value and isinstance(value[0], BaseModel):
            out[name] = [_public(v) for v in value]
        else:
            out[name] = model.model_dump(mode="json", include={name})[name]
    return out


def cluster_config(cfg: Config) -> dict[str, Any]:
    """The ``kbrelease.yaml`` the pods read: this config, secrets left out, laid out for the cluster."""
    data = _public(cfg)
    data.pop("deploy", None)  # how to deploy is not the pods' business
    data["workspace"] = WORKSPACE_MOUNT
    # Several machines share the cache file on the volume: no WAL (see kbrelease.cache.embeddings).
    data["cache"] = {**data["cache"], "path": None, "journal": "delete"}
    if data["text"].get("quantize") == "auto":
        # Pods land on whatever CPUs the nodes have: `auto` could embed one release's shards in two precisions and make
        # the service's identity differ from the build's. Float32 everywhere unless the config pins bf16 (or int8) itself.
        data["text"]["quantize"] = "none"
    return data


def cluster_config_yaml(cfg: Config) -> str:
    header = "# Rendered by `kbrelease argo render` from kbrelease.yaml; secrets come from the Secret, never from here.\n"
    return header + yaml.safe_dump(cluster_config(cfg), sort_keys=False, allow_unicode=True)


def pod_env(cfg: Config) -> dict[str, str]:
    """Environment variables of every pod (the ConfigMap), with the seed workflow's names."""
    env: dict[str, str] = {
        "KBRELEASE_CONFIG": f"{CONFIG_MOUNT}/{CONFIG_FILE}",
        "KBRELEASE_WORKSPACE": WORKSPACE_MOUNT,
        "KBRELEASE_ENV": cfg.environment,
        "MILVUS_URI": cfg.milvus.uri or "",
        "MILVUS_DB_PREFIX": cfg.milvus.db_prefix,
        "MILVUS_REPLICA_NUMBER": str(cfg.milvus.replica_number),
    }
    first = {m: next((s for s in cfg.sources if s.modality == m), None) for m in ("text", "image")}
    for modality, src in first.items():
        if src is not None:
            env[f"S3_PATH_{modality.upper()}"] = src.path
            env[f"COLLECTION_NAME_{modality.upper()}"] = src.collection_name
    env["TEXT_EMBEDDING_MODEL"] = cfg.text.model
    if cfg.text.embedder == "openai" and cfg.text.base_url:
        env["TEXT_EMBEDDING_BASE_URL"] = cfg.text.base_url
    if cfg.text.dim:
        env["TEXT_EMBEDDING_DIM"] = str(cfg.text.dim)
    env["IMAGE_EMBEDDING_MODEL"] = cfg.image.model
    if cfg.image.dim:
        env["IMAGE_EMBEDDING_DIM"] = str(cfg.image.dim)
    if cfg.image.input_size:
        env["IMAGE_EMBEDDING_INPUT_SIZE"] = str(cfg.image.input_size)
    if cfg.s3.endpoint_url:
        env["S3_ENDPOINT_URL"] = cfg.s3.endpoint_url
    if cfg.s3.region:
        env["AWS_DEFAULT_REGION"] = cfg.s3.region
    # Models come from the image; never from a hub at run time.
    env["HF_HUB_OFFLINE"] = "1"
    env["TRANSFORMERS_OFFLINE"] = "1"
    return env
