"""The web page: plain HTML, CSS and a little JavaScript from ``static/``; no CDN, works offline."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

STATIC = Path(__file__).parent / "static"

router = APIRouter(include_in_schema=False)


@cache
def _index() -> str:
    return (STATIC / "index.html").read_text(encoding="utf-8")


@router.get("/", response_class=HTMLResponse)
def page() -> HTMLResponse:
    # no-cache: the page is tiny and must pick up a new app.js after an upgrade.
    return HTMLResponse(_index(), headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})
