"""Every command that a message, an error or a hint tells the user to run exists, with the options it names.

The advice is read from the source (every string literal and f-string part that
quotes `kbrelease ...` or says "run kbrelease ..."), so a renamed command or flag
fails here before a user follows stale advice.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest
import typer

from kbrelease.cli import app

SRC = Path(__file__).resolve().parents[1] / "src" / "kbrelease"
_QUOTED = re.compile(r"`kbrelease ([^`]*)`")
_RUN = re.compile(r"\b(?:run|try|use) kbrelease ([a-z][a-z-]*(?: [a-z][a-z-]*)?)")
_GLOBAL_WITH_VALUE = {"--env", "-e", "--config", "-c", "--workspace", "-w"}


def _strings(path: Path) -> list[str]:
    """Every string a module can print: literals and the literal parts of f-strings, joined per f-string."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            out.append("".join(v.value if isinstance(v, ast.Constant) and isinstance(v.value, str) else "{}" for v in node.values))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            out.append(node.value)
    return out


def _advice() -> list[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    for path in sorted(SRC.rglob("*.py")):
        for text in _strings(path):
            for pattern in (_QUOTED, _RUN):
                for m in pattern.finditer(text):
                    found.add((str(path.relative_to(SRC)), m.group(1).strip()))
    return sorted(found)


ADVICE = _advice()
ROOT = typer.main.get_command(app)


def _resolve(words: list[str]) -> tuple[Any, list[str]]:
    """The command a list of words names, and the words left for its options and arguments."""
    command: Any = ROOT  # typer's own (vendored) click Command / Group
    while words:
        word = words[0]
        if word in _GLOBAL_WITH_VALUE and command is ROOT:
            words = words[2:]
            continue
        if word.startswith("-") or not hasattr(command, "commands"):
            break
        sub = command.commands.get(word)
        if sub is None:
            if word in ("...", "{}") or not re.fullmatch(r"[a-z][a-z-]*", word):
                break  # a placeholder: the advice names the group only
            raise AssertionError(f"no command {word!r} under {command.name!r} (known: {', '.join(sorted(command.commands))})")
        command, words = sub, words[1:]
    return command, words


def test_the_advice_was_found() -> None:
    assert len(ADVICE) > 30  # the scan works: the source names many commands


@pytest.mark.parametrize(("where", "advice"), ADVICE, ids=[f"{w}:{a}" for w, a in ADVICE])
def test_advised_command_exists(where: str, advice: str) -> None:
    for variant in _variants(advice):
        command, rest = _resolve(variant.split())
        options = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)} | {"--help"}
        for word in rest:
            flag = word.split("=", 1)[0]
            if flag.startswith("--") and "{" not in flag:
                for alternative in flag.split("/"):
                    assert alternative in options, f"{where}: `kbrelease {advice}` names {alternative}, which {command.name!r} does not have"


def _variants(advice: str) -> list[str]:
    """``package export|import`` → both commands; anything else as it is."""
    words = advice.split()
    for i, word in enumerate(words):
        if "|" in word and not word.startswith("-"):
            return [" ".join([*words[:i], alt, *words[i + 1 :]]) for alt in word.split("|")]
    return [advice]


def test_a_misspelt_command_is_caught() -> None:
    with pytest.raises(AssertionError, match="no command 'swich'"):
        _resolve(["--env", "prod", "swich", "v1"])
    command, rest = _resolve(["--env", "prod", "switch", "v1"])
    assert (command.name, rest) == ("switch", ["v1"])
