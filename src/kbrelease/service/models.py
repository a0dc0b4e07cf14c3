"""Response bodies of the API (they make the published OpenAPI spec precise)."""

from __future__ import annotations

from typing import Any

from fastapi import Response
from pydantic import BaseModel, Field

from kbrelease.config import Modality


def json_response(model: BaseModel, status_code: int = 200) -> Response:
    """``model`` as JSON, serialized here by pydantic-core.

    Returned as a Response, FastAPI passes it through; returned as a model from
    a sync endpoint, FastAPI would validate it again on a second trip through
    the thread pool, then encode it generically (~0.2 ms more per search).
    The ``response_model`` of each route still documents the body.
    """
    return Response(model.model_dump_json(), media_type="application/json", status_code=status_code)


# The response models mirror the library's dataclasses (Hit, SourceCounts, the entries of
# KbRelease.status()) field by field, and add what HTTP needs: a description per field for
# the OpenAPI spec, and thumbnail URLs. They are written out rather than generated so that
# mypy and the OpenAPI spec see real classes with their documentation;
# tests/service/test_models.py fails as soon as one drifts from its dataclass.


class HitOut(BaseModel):
    score: float = Field(description="Cosine similarity, higher is closer; in a hybrid or sparse search the reciprocal rank fusion score.")
    file: str = Field(description="Path of the file inside its source.")
    source: str
    release: str
    chunk_index: int = Field(description="Position of the chunk in its file (0 for images).")
    heading: str = Field(description="Heading path of a text chunk ('' for images).")
    text: str = Field(description="The chunk's text ('' for images).")
    start: int = Field(description="Character offset of the chunk in its file.")
    file_id: str
    page: int | None = Field(default=None, description="1-based page of a PDF hit (null for other formats and images).")
    thumbnail_url: str | None = Field(default=None, description="Image hits: URL of a small JPEG of the image.")
    retrievers: list[str] = Field(default_factory=lambda: ["dense"], description="Which retrievers found the hit: dense (vectors), sparse (BM25), or both.")


class SearchOut(BaseModel):
    release: str = Field(description="The release that answered (the live one unless pinned).")
    modality: Modality = Field(description="'text' or 'image': which sources were searched.")
    query: str | None = Field(default=None, description="The text query, if any.")
    k: int
    source: str | None = None
    hits: list[HitOut]
    embed_ms: float = Field(description="Time to embed the query.")
    search_ms: float = Field(description="Time in Milvus.")
    mode: str = Field(default="dense", description="What answered: dense, sparse or hybrid (dense and BM25 lists fused).")
    took_ms: float = Field(description="Time inside the service for the whole request.")


class SourceCountsOut(BaseModel):
    collection: str
    modality: Modality
    files: int
    rows: int
    embedded: int = 0
    reused: int = 0
    removed: int = 0
    skipped: int = 0
    failed: int = 0
    sparse: bool = Field(default=False, description="The source has a BM25 keyword index (built with hybrid: true): searched hybrid by default.")


class QualityOut(BaseModel):
    """What the golden queries measured when the release was verified (quality.golden_queries)."""

    k: int | None = None
    recall: float | None = Field(default=None, description="recall@k: the share of expected files found in the top k.")
    mrr: float | None = None
    gate_passed: bool | None = Field(default=None, description="Whether the release passed the quality gate.")


class ReleaseSummary(BaseModel):
    name: str
    state: str = Field(description="building, built, verified, live, retired, failed or dropped.")
    database: str
    created_at: str
    data_index_checksum: str
    sources: dict[str, SourceCountsOut]
    error: str | None = None
    quality: QualityOut | None = Field(default=None, description="Golden-query recall of the release, when quality.golden_queries is set.")


class ReleasesOut(BaseModel):
    environment: str
    live: str | None
    previous: str | None
    switched_at: str | None
    releases: list[ReleaseSummary]
    engine: str | None = None
    """The store engine (lite, milvus-local, server)."""
    advice: list[str] = []
    """Set when a source of the live release has outgrown the engine: the measured numbers and the command that moves it."""


class ManifestOut(BaseModel):
    """The release manifest (RELEASE_INFO), with its state as seen now."""

    model_config = {"extra": "allow"}

    name: str
    environment: str
    database: str
    state: str
    created_at: str
    data_index_checksum: str
    sources: dict[str, dict[str, Any]]
    embedders: dict[str, dict[str, Any]]


class LiveOut(BaseModel):
    environment: str
    live: str | None = Field(description="The release this replica serves now.")
    previous: str | None
    switched_at: str | None
    checked_at: float = Field(description="Unix time this replica last read the live pointer.")
    refresh_seconds: float


class PointerOut(BaseModel):
    environment: str
    live: str | None
    previous: str | None
    switched_at: str | None


class InfoOut(BaseModel):
    kbrelease_version: str
    manifest_schema_version: int
    environment: str
    live: str | None
    embedders: dict[str, dict[str, Any]] = Field(description="Identity of the loaded query embedders, by modality (model, dim, revision, preprocessing).")


class HealthOut(BaseModel):
    status: str
    uptime_seconds: float


class ReadyOut(BaseModel):
    ready: bool
    checks: dict[str, Any]


class LogsOut(BaseModel):
    records: list[dict[str, Any]] = Field(description="Structured log records, oldest first.")
