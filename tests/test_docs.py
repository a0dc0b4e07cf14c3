"""The docs are generated from the code and mention every command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_generated_docs_are_up_to_date() -> None:
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "gen_docs.py"), "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_readme_first_screen_has_the_two_commands() -> None:
    first_screen = "\n".join((REPO / "README.md").read_text(encoding="utf-8").splitlines()[:20])
    assert "bash scripts/demo" in first_screen
    assert "bash scripts/test" in first_screen
    assert "bash scripts/test" in (REPO / ".ci" / "run").read_text(encoding="utf-8")


def test_every_command_is_in_the_usage_guide() -> None:
    from kbrelease.cli import app

    usage = (REPO / "docs" / "usage.md").read_text(encoding="utf-8")
    names = [c.name or (c.callback.__name__ if c.callback else "") for c in app.registered_commands]
    for name in names:
        assert f"kbrelease {name.rstrip('_')}" in usage, name
