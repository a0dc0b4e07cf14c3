"""Run the real ``kbrelease`` CLI in subprocesses (for the lock and fault-injection tests)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "corpus" / "text"
TEXTS = ["it/vpn-setup.md", "it/password-rotation.md", "facilities/fire-drill.md"]


def text_corpus(dest: Path) -> Path:
    """A few text files of the example corpus (text only: the subprocesses load one small model)."""
    for rel in TEXTS:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(EXAMPLES / rel, dest / rel)
    return dest


def write_config(folder: Path, corpus: Path, milvus: dict[str, str] | None, extra: str = "") -> Path:
    """A config with one text source; ``milvus`` None means the embedded store in the workspace."""
    lines = [f"workspace: {folder / 'ws'}"]
    if milvus is not None:
        lines.append("milvus:")
        lines += [f"  {k.split('.', 1)[1]}: {v}" for k, v in milvus.items()]
    lines += ["sources:", "  - name: docs", f"    path: {corpus}", "    modality: text", extra]
    cfg = folder / "kbrelease.yaml"
    cfg.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return cfg


def cli_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), **extra}


def cli(config: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``kbrelease -c CONFIG ARGS`` to completion."""
    return subprocess.run(
        [sys.executable, "-m", "kbrelease.cli", "-c", str(config), *args], env=env or cli_env(), capture_output=True, text=True, timeout=timeout
    )


def start(config: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "kbrelease.cli", "-c", str(config), *args],
        env=env or cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def killed(result: subprocess.CompletedProcess[Any]) -> bool:
    """Whether the process died of SIGKILL (the fault hook)."""
    return result.returncode == -9
