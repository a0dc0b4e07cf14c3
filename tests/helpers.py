"""Helpers shared by tests (importable; conftest modules are not)."""

from __future__ import annotations

from pathlib import Path


def write_config(folder: Path, corpus: Path, extra: str = "") -> Path:
    cfg = folder / "kbrelease.yaml"
    cfg.write_text(
        f"""workspace: {folder / "ws"}
sources:
  - name: docs
    path: {corpus / "text"}
    modality: text
  - name: pictures
    path: {corpus / "images"}
    modality: image
{extra}""",
        encoding="utf-8",
    )
    return cfg
