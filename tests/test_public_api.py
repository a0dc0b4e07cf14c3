"""The public API is the short list in kbrelease.__all__, and importing it stays light."""

from __future__ import annotations

import subprocess
import sys
import types

import kbrelease


def test_every_exported_name_exists() -> None:
    for name in kbrelease.__all__:
        assert getattr(kbrelease, name) is not None, name


def test_nothing_public_is_left_out_of_all() -> None:
    public = {n for n, v in vars(kbrelease).items() if not n.startswith("_") and not isinstance(v, types.ModuleType)}
    public -= {"annotations", "TYPE_CHECKING", "Any"}
    assert public <= set(kbrelease.__all__)


def test_import_does_not_load_heavy_libraries() -> None:
    heavy = "('torch', 'pymilvus', 'pyarrow', 'sentence_transformers', 'boto3', 'fastapi')"
    code = f"import sys, kbrelease, kbrelease.cli; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
