"""Whole-file writes that a crash or a reader never sees half done.

The content goes to a temporary file beside the target (same folder, so the
rename stays on one filesystem), then ``os.replace`` swaps it in: readers see
the old file or the new one. The temporary name carries the pid and a random
part, because pods that share a volume all run as pid 1 or so.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any


def temp_beside(path: Path) -> Path:
    """A fresh temporary name in ``path``'s folder (hidden, unique across processes and pods)."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def atomic_write(path: Path, data: str | bytes, mkdir: bool = False) -> None:
    """Write ``data`` (text as UTF-8) to ``path`` atomically; ``mkdir`` creates the folder first."""
    if mkdir:
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_beside(path)
    try:
        tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_json(path: Path, data: Any, mkdir: bool = False, **dumps: Any) -> None:
    """``data`` as indented JSON with a final newline, written atomically."""
    atomic_write(path, json.dumps(data, indent=2, ensure_ascii=False, **dumps) + "\n", mkdir)
