"""Fixtures of the deployment tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy.rendering import CONFIG, render_cli


@pytest.fixture
def rendered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return render_cli(tmp_path, CONFIG, monkeypatch)
