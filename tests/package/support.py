"""What the package tests share besides fixtures."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kbrelease import KbRelease

MakeTarget = Callable[..., KbRelease]


def footprint(kb: KbRelease) -> dict[str, Any]:
    """What a target holds: its databases (of its prefix), its registry rows, its release folders."""
    prefix = kb.cfg.milvus.db_prefix
    databases = sorted(d for d in kb.store.databases() if d.startswith(prefix))
    rows = kb.registry.list_raw() if kb.registry.exists() else []
    folders = sorted(str(p.relative_to(kb.cfg.workspace)) for p in kb.cfg.workspace.rglob("*")) if kb.cfg.workspace.exists() else []
    return {"databases": databases, "registry": rows, "workspace": folders}
