"""Release endpoints: the list with states and counts, one manifest, the live one, the admin switch/rollback, and the canary split."""

from __future__ import annotations

import time
from dataclasses import asdict

from fastapi import APIRouter, Path, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from kbrelease.release.registry import Pointer
from kbrelease.service.auth import AdminAccess, ReadAccess
from kbrelease.service.errors import responses
from kbrelease.service.models import LiveOut, ManifestOut, PointerOut, ReleasesOut, json_response
from kbrelease.service.search import NAME_PATTERN, service

router = APIRouter(tags=["releases"])


@router.get("/releases", response_model=ReleasesOut, dependencies=[ReadAccess], responses=responses(401, 403, 503))
def releases(request: Request) -> Response:
    """Every release of the environment with its state and per-source counts, and the live pointer."""
    return json_response(ReleasesOut.model_validate(service(request).kb.status()))


@router.get("/releases/{name}", response_model=ManifestOut, dependencies=[ReadAccess], responses=responses(401, 403, 404, 422, 503))
def manifest(request: Request, name: str = Path(pattern=NAME_PATTERN)) -> Response:
    """The manifest (RELEASE_INFO) of one release: counts, models, chunking, verification."""
    svc = service(request)
    record = svc.kb.release(name)
    pointer = svc.follower.snapshot().pointer
    return json_response(ManifestOut.model_validate({**record.asdict(), "state": record.display_state(pointer)}))


@router.get("/live", response_model=LiveOut, dependencies=[ReadAccess], responses=responses(401, 403, 503))
def live(request: Request) -> Response:
    """The live pointer as THIS replica sees it (re-read at most every service.live_refresh_seconds)."""
    svc = service(request)
    snap = svc.follower.snapshot()
    checked = time.time() - (time.monotonic() - snap.read_at)
    p = snap.pointer
    out = LiveOut(
        environment=p.environment,
        live=p.live,
        previous=p.previous,
        switched_at=p.switched_at,
        checked_at=round(checked, 3),
        refresh_seconds=svc.follower.refresh_seconds,
    )
    return json_response(out)


def _moved(request: Request, pointer: Pointer, action: str) -> PointerOut:
    svc = service(request)
    svc.follower.refresh()  # this replica serves the new release at once; the others within the refresh time
    request.state.release = pointer.live
    svc.log.info(action, extra={"live": pointer.live, "previous": pointer.previous})
    return PointerOut(**{k: v for k, v in asdict(pointer).items() if k in PointerOut.model_fields})


@router.post("/releases/{name}/switch", response_model=PointerOut, dependencies=[AdminAccess], responses=responses(401, 403, 404, 409, 422, 503))
async def switch(request: Request, name: str = Path(pattern=NAME_PATTERN)) -> PointerOut:
    """Make a verified release live (admin token). Every replica follows within the refresh time."""
    pointer = await run_in_threadpool(service(request).kb.switch, name)
    return _moved(request, pointer, "switch")


@router.post("/rollback", response_model=PointerOut, dependencies=[AdminAccess], responses=responses(401, 403, 409, 503))
async def rollback(request: Request) -> PointerOut:
    """Switch back to the previous live release (admin token)."""
    pointer = await run_in_threadpool(service(request).kb.rollback)
    return _moved(request, pointer, "rollback")


class CanaryIn(BaseModel):
    """A canary split: ``share`` of the searches that pin no release go to ``release``."""

    model_config = {"extra": "forbid"}

    release: str = Field(pattern=NAME_PATTERN, description="A verified release that is not live yet.")
    share: float = Field(0.1, ge=0, le=1, description="Share of unpinned searches it answers.")


class CanaryOut(BaseModel):
    release: str | None = None
    share: float = 0.0


@router.get("/canary", response_model=CanaryOut, dependencies=[ReadAccess], responses=responses(401, 403))
def canary(request: Request) -> CanaryOut:
    """The canary split this replica applies (none: every unpinned search goes to the live release)."""
    current = service(request).canary
    return CanaryOut(release=current.release, share=current.share) if current else CanaryOut()


@router.put("/canary", response_model=CanaryOut, dependencies=[AdminAccess], responses=responses(401, 403, 404, 409, 422, 503))
async def set_canary(request: Request, body: CanaryIn) -> CanaryOut:
    """Send a share of the live traffic to a candidate release (admin token); this replica only, until it restarts."""
    from kbrelease.config import CanaryConfig

    svc = service(request)
    await run_in_threadpool(svc.follower.resolve, body.release)  # a release that cannot answer is refused now, not per request
    svc.canary = CanaryConfig(release=body.release, share=body.share)
    svc.log.info("canary", extra={"release": body.release, "share": body.share})
    return CanaryOut(release=body.release, share=body.share)


@router.delete("/canary", response_model=CanaryOut, dependencies=[AdminAccess], responses=responses(401, 403))
def clear_canary(request: Request) -> CanaryOut:
    """Stop the canary split (admin token)."""
    svc = service(request)
    svc.canary = None
    svc.log.info("canary stopped")
    return CanaryOut()
