"""Metadata filters (``--where``, ``?where=``): a small grammar parsed into a tree, never pasted into Milvus.

The text is parsed with Python's own parser (:mod:`ast`) and then only these
forms are accepted; anything else (calls, attributes, arithmetic, subscripts,
f-strings, lambdas) is refused with a message naming what was found::

    filter     := or
    or         := and ("or" and)*
    and        := not ("and" not)*
    not        := "not" not | "(" or ")" | comparison
    comparison := KEY op LITERAL | KEY ["not"] "in" "[" LITERAL ("," LITERAL)* "]"
                | LITERAL ["not"] "in" KEY                  (the key's value is a list holding it)
    op         := == | != | < | <= | > | >=
    KEY        := [A-Za-z_][A-Za-z0-9_]{0,63}        (a user metadata key)
    LITERAL    := "string" | 'string' | integer | float | True | False

``a < x < b`` is read as ``a < x and x < b``; ``"front" == camera_id`` as
``camera_id == "front"``. The tree then becomes a Milvus expression over a
JSON field (keys and strings written with :func:`kbrelease.trust.filters.str_literal`,
numbers re-printed from their parsed value) or a Python predicate over a
record's metadata (the data-index API). A key a file lacks matches no
comparison, in both, and ``not`` of such a comparison matches nothing either
(``not`` is pushed down to the comparisons first, so Milvus 2.3, later
Milvus versions and the data index all answer the same).
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from kbrelease.errors import QueryError
from kbrelease.trust.filters import str_literal

MAX_FILTER_CHARS = 2000
"""Longest filter text accepted."""
MAX_FILTER_NODES = 200
"""Most comparisons + literals in one filter."""
MAX_IN_ITEMS = 100
KEY_PATTERN = r"[A-Za-z_][A-Za-z0-9_]{0,63}"
_KEY = re.compile(KEY_PATTERN)
MAX_STRING_CHARS = 1024

Scalar = str | int | float | bool
Op = Literal["==", "!=", "<", "<=", ">", ">=", "in", "not in", "contains", "not contains"]

_OPS: dict[type[ast.cmpop], Op] = {
    ast.Eq: "==",
    ast.NotEq: "!=",
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Gt: ">",
    ast.GtE: ">=",
    ast.In: "in",
    ast.NotIn: "not in",
}
_FLIP: dict[Op, Op] = {"==": "==", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}


class FilterError(QueryError):
    """A ``where`` filter that does not follow the grammar (exit code 2; HTTP 400)."""


@dataclass(frozen=True)
class Compare:
    key: str
    op: Op
    value: Scalar | tuple[Scalar, ...]


@dataclass(frozen=True)
class BoolOp:
    op: Literal["and", "or"]
    parts: tuple[Node, ...]


@dataclass(frozen=True)
class Not:
    part: Node


Node = Compare | BoolOp | Not


def check_key(key: str, where: str = "") -> str:
    """A metadata key of the grammar ``[A-Za-z_][A-Za-z0-9_]{0,63}``."""
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        shown = repr(key)[:80]
        raise FilterError(f"{where}metadata key {shown} is not a name: use letters, digits and '_' (not first), up to 64 characters")
    return key


def _fail(node: ast.AST, text: str, what: str) -> FilterError:
    col = getattr(node, "col_offset", None)
    at = f" at character {col + 1}" if isinstance(col, int) else ""
    return FilterError(f'filter {text[:200]!r}: {what}{at}; write e.g. camera_id == "front" and (speed > 3 or weather in ["sun", "rain"])')


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.nodes = 0

    def count(self, node: ast.AST) -> None:
        self.nodes += 1
        if self.nodes > MAX_FILTER_NODES:
            raise _fail(node, self.text, f"more than {MAX_FILTER_NODES} comparisons and values")

    def node(self, node: ast.AST) -> Node:
        if isinstance(node, ast.BoolOp):
            op: Literal["and", "or"] = "and" if isinstance(node.op, ast.And) else "or"
            return BoolOp(op, tuple(self.node(v) for v in node.values))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return Not(self.node(node.operand))
        if isinstance(node, ast.Compare):
            return self.compare(node)
        if isinstance(node, ast.Name):
            raise _fail(node, self.text, f'{node.id!r} alone is not a condition; compare it, e.g. {node.id} == "value"')
        raise _fail(node, self.text, f"{type(node).__name__.lower()} is not allowed (only comparisons of metadata keys with literals, and/or/not, in [...])")

    def compare(self, node: ast.Compare) -> Node:
        parts: list[Node] = []
        left = node.left
        for op_node, right in zip(node.ops, node.comparators, strict=True):
            op = _OPS.get(type(op_node))
            if op is None:
                raise _fail(node, self.text, f"operator {type(op_node).__name__} is not allowed (use ==, !=, <, <=, >, >=, in, not in)")
            parts.append(self.one(left, op, right))
            left = right
        return parts[0] if len(parts) == 1 else BoolOp("and", tuple(parts))

    def one(self, left: ast.expr, op: Op, right: ast.expr) -> Compare:
        self.count(left)
        if op in ("in", "not in") and isinstance(right, ast.Name) and not isinstance(left, ast.Name):
            return Compare(self.key(right), "contains" if op == "in" else "not contains", self.literal(left))
        if op in ("in", "not in"):
            if not isinstance(left, ast.Name):
                raise _fail(left, self.text, f"the left side of {op!r} must be a metadata key")
            if not isinstance(right, ast.List | ast.Tuple):
                raise _fail(right, self.text, f'the right side of {op!r} must be a list of literals, e.g. ["a", "b"]')
            if not right.elts or len(right.elts) > MAX_IN_ITEMS:
                raise _fail(right, self.text, f"a list after {op!r} needs 1 to {MAX_IN_ITEMS} values")
            return Compare(self.key(left), op, tuple(self.literal(e) for e in right.elts))
        if isinstance(left, ast.Name) and not isinstance(right, ast.Name):
            found = Compare(self.key(left), op, self.literal(right))
        elif isinstance(right, ast.Name) and not isinstance(left, ast.Name):
            found = Compare(self.key(right), _FLIP[op], self.literal(left))
        else:
            raise _fail(left, self.text, "a comparison needs one metadata key and one literal")
        if isinstance(found.value, bool) and op not in ("==", "!="):
            raise _fail(left, self.text, f"True and False have no order; compare them with == or != (not {op})")
        return found

    def key(self, node: ast.Name) -> str:
        if not _KEY.fullmatch(node.id) or not node.id.isascii():
            raise _fail(node, self.text, f"{node.id!r} is not a metadata key (letters, digits, '_'; up to 64)")
        return node.id

    def literal(self, node: ast.expr) -> Scalar:
        self.count(node)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant):
            value = node.operand.value
            if isinstance(value, int | float) and not isinstance(value, bool):
                return self.literal(ast.copy_location(ast.Constant(-value), node))
        if not isinstance(node, ast.Constant):
            raise _fail(node, self.text, f'{type(node).__name__.lower()} is not a literal (use a "string", a number, True or False)')
        value = node.value
        if isinstance(value, bool):
            return value
        if isinstance(value, int):
            if abs(value) >= 2**63:
                raise _fail(node, self.text, "an integer out of the 64-bit range")
            return value
        if isinstance(value, float):
            if not math.isfinite(value):
                raise _fail(node, self.text, "a number that is not finite")
            return value
        if isinstance(value, str):
            if len(value) > MAX_STRING_CHARS or "\0" in value:
                raise _fail(node, self.text, f"a string longer than {MAX_STRING_CHARS} characters or with a NUL")
            return value
        raise _fail(node, self.text, f'{type(value).__name__} literals are not allowed (use a "string", a number, True or False)')


@dataclass(frozen=True)
class Filter:
    """A parsed ``where`` filter."""

    text: str
    tree: Node

    def milvus(self, field: str = "metadata", path: tuple[str, ...] = ("user",)) -> str:
        """The filter as a Milvus expression over JSON field ``field`` (keys under ``path``)."""
        if not field.isidentifier():
            raise ValueError(f"{field!r} is not a field name")
        prefix = field + "".join(f"[{str_literal(p)}]" for p in path)
        return _milvus(_positive(self.tree), prefix)

    def matches(self, metadata: Mapping[str, Any]) -> bool:
        """Whether a record's metadata passes (the data index's metadata is flat: no path)."""
        return _eval(_positive(self.tree), metadata) is True

    def predicate(self) -> Callable[[Mapping[str, Any]], bool]:
        return self.matches


def parse_where(text: str | None) -> Filter | None:
    """``text`` parsed and checked (None or blank: no filter). Raises :class:`FilterError` naming the problem."""
    if text is None or not text.strip():
        return None
    if not isinstance(text, str):
        raise FilterError("a filter must be text")
    if len(text) > MAX_FILTER_CHARS:
        raise FilterError(f"the filter is {len(text):,} characters, over {MAX_FILTER_CHARS:,}; shorten it")
    if "\0" in text:
        raise FilterError("the filter contains a NUL character")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        msg = getattr(exc, "msg", None) or type(exc).__name__
        offset = getattr(exc, "offset", None)
        at = f" at character {offset}" if isinstance(offset, int) else ""
        raise FilterError(f'filter {text[:200]!r} is not valid: {msg}{at}; write e.g. camera_id == "front"') from None
    try:
        return Filter(text.strip(), _Parser(text).node(tree.body))
    except RecursionError:
        raise FilterError(f"filter {text[:200]!r} is nested too deeply; simplify it") from None


def _number(value: int | float) -> str:
    return str(value) if isinstance(value, int) else repr(float(value))


def _lit(value: Scalar) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return _number(value)
    return str_literal(value)


_NEGATE: dict[Op, Op] = {
    "==": "!=",
    "!=": "==",
    "<": ">=",
    ">=": "<",
    "<=": ">",
    ">": "<=",
    "in": "not in",
    "not in": "in",
    "contains": "not contains",
    "not contains": "contains",
}


def _positive(node: Node, negate: bool = False) -> Compare | BoolOp:
    """``node`` without ``not``: negations pushed down to the comparisons (De Morgan), which flip their operator.

    Milvus 2.3 and later versions disagree on ``not`` over a key a row lacks (2.3: true; later: unknown, no
    match), and on ``!=`` likewise; with no ``not`` left and ``!=`` written as ``<`` or ``>``, every version
    answers the same, and the data index evaluates this same tree.
    """
    if isinstance(node, Not):
        return _positive(node.part, not negate)
    if isinstance(node, BoolOp):
        op: Literal["and", "or"] = node.op if not negate else ("or" if node.op == "and" else "and")
        return BoolOp(op, tuple(_positive(p, negate) for p in node.parts))
    return Compare(node.key, _NEGATE[node.op], node.value) if negate else node


def _differs(target: str, value: Scalar) -> str:
    """``target != value`` that is false where the key is missing, in every Milvus version."""
    if isinstance(value, bool):
        return f"{target} == {_lit(not value)}"
    return f"({target} < {_lit(value)} or {target} > {_lit(value)})"


def _milvus(node: Node, prefix: str) -> str:
    if isinstance(node, BoolOp):
        return "(" + f" {node.op} ".join(_milvus(p, prefix) for p in node.parts) + ")"
    if isinstance(node, Not):  # pragma: no cover - _positive removed them
        raise AssertionError("negations are pushed down first")
    target = f"{prefix}[{str_literal(check_key(node.key))}]"
    if node.op in ("contains", "not contains"):
        assert not isinstance(node.value, tuple)
        # json_contains is false without a list in every version, so its negation is safe.
        has = f"json_contains({target}, {_lit(node.value)})"
        return f"({has})" if node.op == "contains" else f"(not {has})"
    if isinstance(node.value, tuple):
        # Spelled out: Milvus 2.3 takes 'in' on a plain field only, not on a JSON path.
        if node.op == "in":
            return "(" + " or ".join(f"{target} == {_lit(v)}" for v in node.value) + ")"
        return "(" + " and ".join(_differs(target, v) for v in node.value) + ")"
    if node.op == "!=":
        return f"({_differs(target, node.value)})"
    return f"({target} {node.op} {_lit(node.value)})"


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__


def _cmp(have: Any, op: Op, want: Scalar) -> bool:
    if _kind(have) != _kind(want):
        return False
    if op == "==":
        return bool(have == want)
    if op not in ("!=", "<", "<=", ">", ">="):
        return False
    if op == "!=":
        return bool(have != want)
    if isinstance(have, bool):
        return False  # booleans have no order
    try:
        return bool({"<": have < want, "<=": have <= want, ">": have > want, ">=": have >= want}[op])
    except TypeError:
        return False


def _eval(node: Node, meta: Mapping[str, Any]) -> bool | None:
    """Three-valued, as Milvus evaluates a JSON path: a key the file lacks is unknown (None), and
    ``not`` of unknown stays unknown, so ``not camera_id == "front"`` does not match a file without camera_id."""
    if isinstance(node, BoolOp):
        results = [_eval(p, meta) for p in node.parts]
        if node.op == "and":
            return False if False in results else (None if None in results else True)
        return True if True in results else (None if None in results else False)
    if isinstance(node, Not):
        inner = _eval(node.part, meta)
        return None if inner is None else not inner
    if node.op in ("contains", "not contains"):  # json_contains is false, not unknown, without a list
        have = meta.get(node.key)
        holds = isinstance(have, list) and any(_cmp(x, "==", node.value) for x in have if not isinstance(node.value, tuple))
        return holds if node.op == "contains" else not holds
    if node.key not in meta or meta[node.key] is None:
        return None
    have = meta[node.key]
    if isinstance(node.value, tuple):
        found = any(_cmp(have, "==", v) for v in node.value)
        return found if node.op == "in" else not found
    return _cmp(have, node.op, node.value)
