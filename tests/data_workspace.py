"""A small synced workspace for data-index tests: two sources, known timestamps, no Milvus needed.

    cfg = make_workspace(tmp_path)            # writes files, kbrelease.yaml, syncs
    kb = KbRelease(cfg)                       # data_index(), index_bundle() work without Milvus

Files: source ``docs`` (text) has ``day-<d>/note-<i>.md`` for days 1-3 of June
2025 (5 per day, timestamp = that day at 10:00 + i minutes) and one
``ünï/cödé.md``; source ``pictures`` (image) has ``cat-<i>.png`` (4 files,
timestamp June 2). Image bytes are not decoded by sync, so they are random.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

JUNE = datetime(2025, 6, 1, tzinfo=UTC)


def day(d: int, minutes: int = 0) -> datetime:
    return JUNE + timedelta(days=d - 1, hours=10, minutes=minutes)


def _write(path: Path, data: bytes, when: datetime) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (when.timestamp(), when.timestamp()))


def make_files(root: Path) -> None:
    for d in (1, 2, 3):
        for i in range(5):
            _write(root / "text" / f"day-{d}" / f"note-{i}.md", f"# Day {d} note {i}\n\nBody {i} of day {d}.\n".encode(), day(d, i))
    _write(root / "text" / "ünï" / "cödé.md", "# Unicode\n\nnaïve café\n".encode(), day(2, 30))
    for i in range(4):
        _write(root / "images" / f"cat-{i}.png", os.urandom(600 + i), day(2, i))


def write_config(tmp_path: Path, extra: str = "", pictures: bool = True) -> Path:
    path = tmp_path / "kbrelease.yaml"
    images = f"""  - name: pictures
    path: {tmp_path / "src" / "images"}
    modality: image
"""
    path.write_text(
        f"""workspace: {tmp_path / "ws"}
sources:
  - name: docs
    path: {tmp_path / "src" / "text"}
    modality: text
    version: "1.2.0"
{images if pictures else ""}{extra}""",
        encoding="utf-8",
    )
    return path


def make_workspace(tmp_path: Path, extra: str = "", env: dict[str, str] | None = None, overrides: dict[str, Any] | None = None, pictures: bool = True) -> Any:
    """Files + config + one sync; returns the loaded Config. ``pictures=False``: only the text source."""
    from kbrelease import load_config
    from kbrelease.sources.sync import sync

    make_files(tmp_path / "src")
    cfg = load_config(write_config(tmp_path, extra, pictures), env=env or {}, overrides=overrides)
    sync(cfg)
    return cfg


def write_spec(folder: Path, text: str, name: str = "weekly_docs") -> Path:
    path = folder / "bundles" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


SPEC = """\
version: v1.0.0-2025.23
type: weekly
sources:
  - source: docs
    version: "1.2.0"
    start_time: 2025-06-02T00:00:00Z
    end_time: 2025-06-03T23:59:59Z
  - channel: pictures
"""


def data_app(cfg: Any) -> Any:
    """A FastAPI app with only the data-index router and the service's error handlers, as the service mounts them."""
    import logging

    from fastapi import FastAPI

    from kbrelease import KbRelease
    from kbrelease.service import errors
    from kbrelease.service.bundles import router

    app = FastAPI()
    errors.install(app, logging.getLogger("kbrelease.test"))
    app.state.kb = KbRelease(cfg)
    app.state.cfg = cfg
    app.include_router(router)
    return app
