"""The checks of a package import: every one runs before anything is written.

Used by both passes of :mod:`kbrelease.package.importer`; each function looks
at one member (or at the whole package at the end) and raises
:class:`~kbrelease.errors.PackageError` or
:class:`~kbrelease.errors.CompatibilityError` naming the package and the problem.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kbrelease.embedding.base import EmbedderIdentity
from kbrelease.errors import CompatibilityError, PackageError
from kbrelease.index.data_index import INDEX_SCHEMA_VERSION, Bundle, SourceIndex, index_checksum, read_source_index
from kbrelease.package.format import INFO, MANIFEST, MAX_MEMBER_BYTES, MAX_SMALL_MEMBER_BYTES, ROW_FIELDS, Member, Reading, check_manifest
from kbrelease.release.registry import ReleaseRecord

Identity = Callable[[str], EmbedderIdentity]


@dataclass
class Pass:
    """State of one pass over a package."""

    reading: Reading
    manifest: dict[str, Any] | None = None
    record: ReleaseRecord | None = None
    bundle: Bundle | None = None
    index_data: dict[str, bytes] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    parts: int = 0


def content_key(manifest: dict[str, Any]) -> str:
    """Names a release's rows: same key, same rows (ids and vectors are deterministic)."""
    rel = manifest["release"]
    body = {
        "environment": rel.get("environment"),
        "release": rel.get("name"),
        "data_index_checksum": rel.get("data_index_checksum"),
        "embedders": rel.get("embedders"),
        "chunking": rel.get("chunking"),
        "rows": {k: v.get("rows") for k, v in (manifest.get("collections") or {}).items()},
    }
    return "sha256:" + hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def check_models(record: ReleaseRecord, identity: Identity, environment: str, where: str) -> None:
    for kind, built in record.embedders.items():
        current = identity(kind)
        if not current.matches(built):
            raise CompatibilityError(
                f"{where}: release {record.name!r} has {kind} vectors of model {built.get('model')!r} ({built.get('dim')}-d, rev "
                f"{built.get('revision') or '-'}, {built.get('preprocessing') or '-'}) but environment {environment!r} is configured "
                f"for {current.model!r} ({current.dim}-d, rev {current.revision or '-'}, {current.preprocessing or '-'}); "
                "configure the same model there, or rebuild the release from sources in that environment"
            )


def _on_manifest(p: Pass, data: bytes, identity: Identity, environment: str) -> None:
    where = p.reading.where
    try:
        raw = json.loads(data)
    except ValueError as exc:
        raise PackageError(f"{where}: manifest.json is not valid JSON ({exc}); the package is damaged") from exc
    p.manifest = check_manifest(raw, where)
    p.record = ReleaseRecord.from_dict(p.manifest["release"], f"{where} (release {raw['release'].get('name')!r})")
    if set(p.record.sources) != set(p.manifest["collections"]):
        raise PackageError(f"{where}: manifest.json's collections do not match its release record; the package is damaged")
    check_models(p.record, identity, environment, where)


def _on_index(p: Pass, name: str, data: bytes) -> None:
    import yaml

    where = p.reading.where
    assert p.manifest is not None and p.record is not None
    if name not in p.manifest["data_index"]["members"]:
        raise PackageError(f"{where}: {name!r} is not part of the data index the manifest lists; the package was altered")
    p.index_data[name] = data
    if name == "index/bundle.yaml":
        try:
            loaded = yaml.safe_load(data)
            p.bundle = Bundle(meta=loaded["meta"], data_manifest=[SourceIndex(**s) for s in loaded["data_manifest"]])
        except Exception as exc:
            raise PackageError(f"{where}: index/bundle.yaml cannot be read ({exc}); the package is damaged") from exc
        version = int(p.bundle.meta.get("schema_version", 1))
        if version > INDEX_SCHEMA_VERSION:
            raise CompatibilityError(
                f"{where}: its data index has schema version {version}, newer than this kbrelease reads ({INDEX_SCHEMA_VERSION}); upgrade kbrelease"
            )
        if p.bundle.checksum != p.record.data_index_checksum:
            raise PackageError(f"{where}: the data index does not match the release's data-index checksum; the package was altered")
        return
    if p.bundle is None:
        raise PackageError(f"{where}: {name!r} comes before index/bundle.yaml; the package was altered")
    src = next((s for s in p.bundle.data_manifest if f"index/{s.index_file}" == name), None)
    if src is None:
        raise PackageError(f"{where}: {name!r} is not an index file of the bundle; the package was altered")
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".parquet") as tmp:  # read_source_index reads a path
        tmp.write(data)
        tmp.flush()
        try:
            records = read_source_index(Path(tmp.name))
        except Exception as exc:
            raise PackageError(f"{where}: {name!r} is not a readable data index ({exc}); the package is damaged") from exc
    if index_checksum(records) != src.checksum or len(records) != src.file_count:
        raise PackageError(f"{where}: {name!r} does not match the bundle's checksum for source {src.channel!r}; the package was altered")


def _part_table(p: Pass, name: str, data: bytes) -> tuple[str, Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    where = p.reading.where
    assert p.manifest is not None
    source = name.split("/")[1]
    col = p.manifest["collections"].get(source)
    if col is None:
        raise PackageError(f"{where}: {name!r} belongs to no collection of the manifest; the package was altered")
    try:
        pf = pq.ParquetFile(pa.BufferReader(data))
    except Exception as exc:
        raise PackageError(f"{where}: {name!r} is not a readable Parquet file ({exc}); the package is damaged") from exc
    schema = pf.schema_arrow
    if tuple(schema.names) != ROW_FIELDS:
        raise PackageError(f"{where}: {name!r} has columns {schema.names}, expected {list(ROW_FIELDS)}; the package is damaged")
    vec = schema.field("vector").type
    if not pa.types.is_fixed_size_list(vec) or vec.list_size != col["dim"] or vec.value_type != pa.float32():
        raise PackageError(f"{where}: {name!r} has vectors of type {vec}, expected {col['dim']} float32 values; the package is damaged")
    return source, pf


def on_member(p: Pass, m: Member, identity: Identity, environment: str) -> tuple[str, Any] | None:
    """Check one member's content; a row part comes back as ``(source, ParquetFile)``."""
    where = p.reading.where
    data = m.read_all(MAX_SMALL_MEMBER_BYTES if m.name in (INFO, MANIFEST) else MAX_MEMBER_BYTES)
    if m.name == INFO:
        return None
    if m.name == MANIFEST:
        _on_manifest(p, data, identity, environment)
        return None
    if p.manifest is None or p.record is None:
        raise PackageError(f"{where}: {m.name!r} comes before manifest.json; this is not a kbrelease release package (or it was altered)")
    if m.name.startswith("index/"):
        _on_index(p, m.name, data)
        return None
    source, pf = _part_table(p, m.name, data)
    p.rows[source] = p.rows.get(source, 0) + pf.metadata.num_rows
    p.parts += 1
    return source, pf


def check_complete(p: Pass) -> None:
    where = p.reading.where
    if p.manifest is None or p.record is None:
        raise PackageError(f"{where}: no manifest.json; this is not a kbrelease release package")
    missing = sorted(set(p.manifest["data_index"]["members"]) - set(p.index_data))
    if missing:
        raise PackageError(f"{where}: the data index member {missing[0]!r} is missing; the package is incomplete")
    for source, col in p.manifest["collections"].items():
        if p.rows.get(source, 0) != col["rows"]:
            have = p.rows.get(source, 0)
            raise PackageError(f"{where}: collection {source!r} has {have} rows in its parts, the manifest says {col['rows']}; the package is incomplete")
