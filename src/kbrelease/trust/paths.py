"""Relative paths from untrusted input, and containment inside a real root.

:func:`safe_relpath` is the one rule for a relative path that came from outside
(a bucket key, a data-index row, a package member, a file id): POSIX separators,
no absolute path, no ``..`` or ``.`` part, no empty part, no NUL or other control
character, no backslash, bounded length. :func:`contained` then resolves it
against the real root (symlinks followed) and refuses anything that lands
outside, so a link planted in a mirror cannot escape either.
"""

from __future__ import annotations

import os
from pathlib import Path

from kbrelease.errors import UnsafePath

MAX_PATH_CHARS = 1024
MAX_PART_CHARS = 255


def path_problem(rel: object) -> str | None:
    """Why ``rel`` is not a safe relative path, or None when it is."""
    if not isinstance(rel, str):
        return "is not a string"
    if not rel:
        return "is empty"
    if len(rel) > MAX_PATH_CHARS:
        return f"is longer than {MAX_PATH_CHARS} characters"
    if "\\" in rel:
        return "contains a backslash"
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: how Python spells a file name that is not UTF-8
        return "is not valid UTF-8"
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in rel):
        return "contains a NUL or control character"
    if rel.startswith("/"):
        return "is absolute"
    if len(rel) >= 2 and rel[1] == ":" and rel[0].isalpha():
        return "starts with a drive letter"
    for part in rel.split("/"):
        if part == "":
            return "has an empty part ('//' or a trailing '/')"
        if part in (".", ".."):
            return f"has a {part!r} part"
        if len(part.encode("utf-8", "surrogatepass")) > MAX_PART_CHARS:
            return f"has a part longer than {MAX_PART_CHARS} bytes"
    return None


def safe_relpath(rel: object, what: str = "path") -> str:
    """``rel`` if it is a safe relative POSIX path, else :class:`UnsafePath` naming it and the rule."""
    problem = path_problem(rel)
    if problem is None:
        return str(rel)
    shown = repr(rel)[:120]
    raise UnsafePath(f"{what} {shown} {problem}; only plain relative paths inside their folder are accepted")


def contained(root: Path | str, rel: str, what: str = "path") -> Path:
    """``root / rel`` resolved, after checking ``rel`` and that the result stays inside the resolved root.

    ``root`` is the trusted folder (the workspace's mirror of a source, an
    export folder); ``rel`` is untrusted. Symlinks are followed on both sides,
    so a link inside the root that points outside is refused too.
    """
    safe_relpath(rel, what)
    real_root = Path(os.path.realpath(root))
    target = Path(os.path.realpath(real_root / rel))
    if target != real_root and real_root not in target.parents:
        raise UnsafePath(f"{what} {rel!r} leads outside {real_root} (through a link); refused")
    return target


def is_regular_file(path: Path) -> bool:
    """True for a regular file (not a device, FIFO or socket: ``/dev/zero`` never is)."""
    import stat

    try:
        return stat.S_ISREG(path.stat().st_mode)
    except OSError:
        return False
