"""User metadata of a file: sidecar files, Markdown front matter, S3 object metadata and tags.

Where it comes from, lowest precedence first (a later one wins per key):

1. S3 object metadata (``x-amz-meta-*``) and object tags, when ``s3.object_metadata`` is on;
2. Markdown front matter: YAML between a first line ``---`` and the next ``---``
   (the chunks of the file are made from the text after it);
3. a sidecar file beside it: ``<name>.<ext>.meta.json`` or ``.meta.yaml`` / ``.meta.yml``
   (sidecars are never indexed as documents themselves).

All of it is untrusted, and is checked here once (:func:`check_metadata`):
at most :data:`MAX_KEYS` keys named by :data:`~kbrelease.trust.where.KEY_PATTERN`,
values that are strings, numbers, booleans, null or lists of those, and at
most :data:`MAX_METADATA_BYTES` as JSON. Bad metadata raises
:class:`~kbrelease.errors.InputFileError` naming the file; sync then skips
that file (and reports why) while the rest carries on.

The data index stores it flat in the ``metadata`` column beside the system
key ``suffix``; every vector row of the file carries it under
``metadata["user"]`` (with the file's time as ``metadata["time"]``, epoch
seconds) so ``--where`` and ``--after/--before`` filter searches.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import Any

from kbrelease.errors import InputFileError
from kbrelease.index.data_index import SYSTEM_METADATA_KEYS

SIDECAR_SUFFIXES = (".meta.json", ".meta.yaml", ".meta.yml")
RESERVED_KEYS = SYSTEM_METADATA_KEYS
"""Keys kbrelease sets itself in the data index's metadata."""
MAX_KEYS = 64
MAX_METADATA_BYTES = 8192
"""Largest user metadata of one file, as JSON."""
MAX_SIDECAR_BYTES = 64 * 1024
MAX_LIST_ITEMS = 100
MAX_VALUE_CHARS = 1024
FRONT_MATTER_BYTES = 64 * 1024
"""Front matter must end within this many bytes of the file's start."""


class MetadataError(InputFileError):
    """A file's user metadata does not follow the rules (the file is skipped with this reason)."""


def is_sidecar(rel: str) -> bool:
    return rel.lower().endswith(SIDECAR_SUFFIXES)


def sidecar_target(rel: str) -> str:
    """The file a sidecar describes (``a/b.jpg.meta.json`` → ``a/b.jpg``)."""
    low = rel.lower()
    for suffix in SIDECAR_SUFFIXES:
        if low.endswith(suffix):
            return rel[: -len(suffix)]
    return rel


def _bad(where: str, what: str) -> MetadataError:
    return MetadataError(f"{where}: {what}; fix the metadata (keys: letters, digits, '_'; values: text, numbers, true/false, null, or lists of those)")


def _scalar_ok(value: Any) -> bool:
    if value is None or isinstance(value, bool):
        return True
    if isinstance(value, int):
        return abs(value) < 2**63
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, str) and len(value) <= MAX_VALUE_CHARS and "\0" not in value


def check_metadata(data: Any, where: str) -> dict[str, Any]:
    """``data`` as user metadata, or :class:`MetadataError` naming ``where`` and the rule it breaks."""
    from datetime import date, datetime

    from kbrelease.trust.where import _KEY

    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise _bad(where, f"metadata must be a mapping of keys to values, not {type(data).__name__}")
    if len(data) > MAX_KEYS:
        raise _bad(where, f"{len(data)} keys, over {MAX_KEYS}")
    out: dict[str, Any] = {}
    for key, value in data.items():
        if not isinstance(key, str) or not _KEY.fullmatch(key):
            raise _bad(where, f"key {str(key)[:80]!r} is not a name")
        if key in RESERVED_KEYS:
            raise _bad(where, f"key {key!r} is reserved by kbrelease; rename it")
        if isinstance(value, datetime | date):  # YAML reads unquoted times as dates
            value = value.isoformat()
        if isinstance(value, list | tuple):
            items = [v.isoformat() if isinstance(v, datetime | date) else v for v in value]
            if len(items) > MAX_LIST_ITEMS or not all(_scalar_ok(v) for v in items):
                raise _bad(where, f"key {key!r}: a list of up to {MAX_LIST_ITEMS} plain values (no nested lists or mappings)")
            value = items
        elif not _scalar_ok(value):
            raise _bad(where, f"key {key!r}: {type(value).__name__} values are not allowed, or the text is over {MAX_VALUE_CHARS} characters")
        out[key] = value
    if len(json.dumps(out, ensure_ascii=False).encode()) > MAX_METADATA_BYTES:
        raise _bad(where, f"the metadata is over {MAX_METADATA_BYTES} bytes as JSON")
    return out


def _yaml(text: str, where: str) -> Any:
    import yaml

    from kbrelease.index.data_index import load_bundle_yaml

    try:
        return load_bundle_yaml(text)
    except yaml.YAMLError as exc:
        raise _bad(where, f"not valid YAML ({str(exc).splitlines()[0][:160]})") from None


def parse_sidecar(rel: str, data: bytes, where: str) -> dict[str, Any]:
    """A sidecar file's content (JSON or YAML by its name) as checked metadata."""
    if len(data) > MAX_SIDECAR_BYTES:
        raise _bad(where, f"the sidecar is over {MAX_SIDECAR_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise _bad(where, "the sidecar is not UTF-8 text") from None
    if rel.lower().endswith(".json"):
        try:
            parsed = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise _bad(where, f"not valid JSON ({str(exc)[:160]})") from None
    else:
        parsed = _yaml(text, where)
    return check_metadata(parsed, where)


def split_front_matter(text: str) -> tuple[str | None, int]:
    """The front matter block of a Markdown text (None if it has none) and where the body starts."""
    head = text[:FRONT_MATTER_BYTES]
    if head.startswith("\ufeff"):
        head = head[1:]
        skip = 1
    else:
        skip = 0
    first, sep, rest = head.partition("\n")
    if first.rstrip("\r ") != "---" or not sep:
        return None, 0
    pos = len(first) + 1
    for line in rest.splitlines(keepends=True):
        if line.rstrip("\r\n ") in ("---", "..."):
            return head[len(first) + 1 : pos], skip + pos + len(line)
        pos += len(line)
    return None, 0


def front_matter(text: str, where: str) -> tuple[dict[str, Any], int]:
    """The checked metadata of a Markdown text's front matter and the body's offset (``({}, 0)`` without one)."""
    block, offset = split_front_matter(text)
    if block is None:
        return {}, 0
    parsed = _yaml(block, where + " (front matter)")
    return check_metadata(parsed, where + " (front matter)"), offset


def is_markdown(rel: str) -> bool:
    return PurePosixPath(rel).suffix.lower() in (".md", ".markdown")


def s3_metadata(fs: Any, full: str, where: str) -> dict[str, Any]:
    """An S3 object's user metadata and tags (tags win), checked. Keys are lower-cased by S3; '-' becomes '_'."""
    raw: dict[str, Any] = {}
    try:
        meta = fs.metadata(full) or {}
        tags = fs.get_tags(full) or {}
    except Exception as exc:  # noqa: BLE001 - the caller translates storage errors; here it is this file's problem
        raise _bad(where, f"its S3 metadata or tags cannot be read ({type(exc).__name__})") from None
    for key, value in list(meta.items()) + list(tags.items()):
        raw[str(key).replace("-", "_")] = value
    return check_metadata(raw, where + " (S3 metadata/tags)")


def user_part(index_metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The user's keys of a data index ``metadata`` value (without kbrelease's own)."""
    return {k: v for k, v in index_metadata.items() if k not in RESERVED_KEYS}


def row_metadata(index_metadata: Mapping[str, Any], timestamp: Any, **system: Any) -> dict[str, Any]:
    """The ``metadata`` JSON of a vector row: kbrelease's keys, the file's time (epoch seconds) and the user's keys under ``user``."""
    return {**system, "time": int(timestamp.timestamp()), "user": user_part(index_metadata)}
