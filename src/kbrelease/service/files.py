"""Registered files (seed 001): register for the next release (admin token), read where one stands."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Path, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from kbrelease.release.registrations import MAX_NOTE, MAX_REGISTER
from kbrelease.service.auth import AdminAccess, ReadAccess
from kbrelease.service.errors import responses
from kbrelease.service.search import service

router = APIRouter(tags=["files"])


class FileIn(BaseModel):
    model_config = {"extra": "forbid"}

    source: str = Field(max_length=64, description="A configured source.")
    path: str = Field(max_length=1024, description="Path relative to the source, e.g. it/vpn-setup.md.")
    note: str = Field("", max_length=MAX_NOTE, description="Kept with the registration.")


class RegisterIn(BaseModel):
    model_config = {"extra": "forbid"}

    files: list[FileIn] = Field(min_length=1, max_length=MAX_REGISTER)


class FileOut(BaseModel):
    file_id: str
    source: str
    path: str
    status: Literal["registered", "synced", "embedded", "live", "failed"]
    registered_at: str
    reason: str | None = None
    release: str | None = None
    checksum: str | None = None
    note: str = ""


class RegisterOut(BaseModel):
    files: list[FileOut]


@router.post("/files/register", response_model=RegisterOut, dependencies=[AdminAccess], responses=responses(401, 403, 422, 503))
async def register(request: Request, body: RegisterIn) -> RegisterOut:
    """Register files for the next release (admin token); each answer carries the file's id and status."""
    items = [f.model_dump() for f in body.files]
    found = await run_in_threadpool(service(request).kb.register_files, items)
    return RegisterOut(files=[FileOut(**f.asdict()) for f in found])


@router.get("/files/{file_id}", response_model=FileOut, dependencies=[ReadAccess], responses=responses(401, 403, 404, 503))
async def file_status(request: Request, file_id: str = Path(pattern=r"^[A-Za-z0-9_-]{1,128}$")) -> FileOut:
    """Where a registered file stands: registered, synced, embedded, live, or failed with the reason."""
    found = await run_in_threadpool(service(request).kb.file_status, file_id)
    return FileOut(**found[0].asdict())
