"""Operations: probes and metrics at the root, service info and the log tail under /api/v1."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from kbrelease.errors import KbReleaseError
from kbrelease.service.auth import AdminAccess, ReadAccess
from kbrelease.service.errors import responses
from kbrelease.service.models import HealthOut, InfoOut, LogsOut, ReadyOut, json_response
from kbrelease.service.search import service
from kbrelease.trust.redact import redact_data

probes = APIRouter(tags=["operations"])
router = APIRouter(tags=["operations"])


@probes.get("/healthz", response_model=HealthOut)
async def healthz(request: Request) -> HealthOut:
    """The process is up (liveness). Never touches Milvus or the models."""
    return HealthOut(status="ok", uptime_seconds=round(time.time() - service(request).started_at, 3))


@probes.get("/readyz", response_model=ReadyOut, responses={503: {"model": ReadyOut, "description": "Not ready; `checks` says why."}})
def readyz(request: Request) -> JSONResponse:
    """Ready for traffic: embedders warm, live release resolved, its collections loaded."""
    ready, checks = service(request).readiness()
    # Unauthenticated: the error texts in the checks pass the one redaction (a URL may carry credentials).
    return JSONResponse(ReadyOut(ready=ready, checks=redact_data(checks)).model_dump(), status_code=200 if ready else 503)


@probes.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format."}})
def metrics(request: Request) -> Response:
    """Prometheus metrics: requests and latency per route, embed and search time, live release."""
    return Response(generate_latest(request.app.state.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/info", response_model=InfoOut, dependencies=[ReadAccess], responses=responses(401, 403))
def info(request: Request) -> Response:
    """Versions, environment, live release and the identity of the loaded query embedders."""
    from kbrelease import __version__
    from kbrelease.release.registry import MANIFEST_SCHEMA_VERSION

    svc = service(request)
    embedders: dict[str, dict[str, Any]] = {}
    if svc.warmup.ready.get("text"):
        embedders["text"] = asdict(svc.kb.identity("text"))  # the configured model; queries run on a compatible runtime of it
    if svc.warmup.ready.get("image"):
        embedders["image"] = asdict(svc.kb.image_embedder.identity)
    try:
        live = svc.follower.live_name()
    except KbReleaseError:
        live = None
    out = InfoOut(
        kbrelease_version=__version__,
        manifest_schema_version=MANIFEST_SCHEMA_VERSION,
        environment=svc.cfg.environment,
        live=live,
        embedders=embedders,
    )
    return json_response(out)


@router.get("/logs", response_model=LogsOut, dependencies=[AdminAccess], responses=responses(401, 403, 422))
def logs(
    request: Request,
    limit: int = Query(200, ge=1, le=10_000, description="Most recent records to return."),
    level: str = Query("INFO", pattern="^(DEBUG|INFO|WARNING|ERROR|CRITICAL)$", description="Minimum level."),
    contains: str | None = Query(None, max_length=200, description="Only records whose JSON contains this text."),
) -> Response:
    """The tail of the structured service log (admin token). Secrets are never in it."""
    tail = request.app.state.log_tail
    return json_response(LogsOut(records=tail.tail(limit, logging.getLevelName(level), contains)))
