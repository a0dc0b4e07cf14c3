"""One grammar for every name that becomes part of a database, collection, folder or filter.

A name is 1-48 (releases) or 1-64 characters of ASCII letters, digits and
underscores, and (except releases, which may start with a digit when imported
under a number) starts with a letter or underscore. Bundles and channels may
also hold ``-`` and ``.`` (the seed's ``camera-front``, ``v1.2``), but never a
leading ``.`` and never ``..``: such names become folder names.
"""

from __future__ import annotations

import re
from typing import Literal

from kbrelease.errors import InvalidName

NameKind = Literal["release", "source", "collection", "bundle", "channel", "environment", "database"]

_DOTTED = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,126}[A-Za-z0-9_])?")
_DOTTED_RULE = "1-128 letters, digits, '_', '-' or '.', not starting or ending with '.' or '-'"

_GRAMMAR: dict[str, tuple[re.Pattern[str], str]] = {
    "release": (re.compile(r"[A-Za-z0-9_]{1,48}"), "1-48 letters, digits or underscores (it becomes part of a database name)"),
    "source": (re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}"), "a letter or underscore, then up to 63 letters, digits or underscores"),
    "collection": (re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,254}"), "a letter or underscore, then letters, digits or underscores (a Milvus collection name)"),
    "database": (re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}"), "a letter or underscore, then letters, digits or underscores (a Milvus database name)"),
    "environment": (re.compile(r"[A-Za-z][A-Za-z0-9_]{0,31}"), "a letter, then up to 31 letters, digits or underscores"),
    "bundle": (_DOTTED, _DOTTED_RULE),
    "channel": (_DOTTED, _DOTTED_RULE),
}


def is_name(kind: NameKind, value: object) -> bool:
    """Whether ``value`` is a valid name of ``kind``."""
    pattern, _ = _GRAMMAR[kind]
    return isinstance(value, str) and pattern.fullmatch(value) is not None and ".." not in value


def check_name(kind: NameKind, value: object, where: str = "") -> str:
    """``value`` if it is a valid ``kind`` name, else :class:`InvalidName` naming it and the rule."""
    if is_name(kind, value):
        return str(value)
    _, rule = _GRAMMAR[kind]
    shown = repr(value)[:80] if isinstance(value, str) else type(value).__name__
    at = f" in {where}" if where else ""
    raise InvalidName(f"{kind} name {shown}{at} is invalid; use {rule}")
