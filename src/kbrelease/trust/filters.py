"""Literals for Milvus filter expressions.

Milvus has no bound parameters for ``filter=`` in every version kbrelease
supports (templates came in 2.5), so every value is written as a string literal
with its quote and backslash escaped, and nothing else. Names are validated
(:mod:`kbrelease.trust.names`) before they get here; the escaping is the
second wall, not the first.
"""

from __future__ import annotations

_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def str_literal(value: str) -> str:
    """``value`` as a double-quoted Milvus string literal."""
    if not isinstance(value, str):
        raise TypeError(f"a filter literal must be a string, not {type(value).__name__}")
    if "\0" in value:
        raise ValueError("a filter literal cannot contain NUL")
    return '"' + "".join(_ESCAPES.get(ch, ch) for ch in value) + '"'


def eq(field: str, value: str) -> str:
    """``field == "value"`` with the value escaped (``field`` is a constant of the caller's schema)."""
    if not field.isidentifier():
        raise ValueError(f"{field!r} is not a field name")
    return f"{field} == {str_literal(value)}"
