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

from kbrelease.embedding.base import EmbedderIdentity, RecordedEmbedder
from kbrelease.errors import CompatibilityError, InvalidName, KbReleaseError, PackageError
from kbrelease.index.bounded import FILE_ID, bad_values, check_parquet, decoded_bytes, path_problems
from kbrelease.index.compat import VersionCheck
from kbrelease.index.data_index import Bundle, SourceIndex, index_checksum, read_source_index
from kbrelease.package.format import INFO, MANIFEST, MAX_MEMBER_BYTES, MAX_SMALL_MEMBER_BYTES, ROW_FIELDS, Member, Reading, check_manifest
from kbrelease.release.registry import ReleaseRecord
from kbrelease.trust.names import NameKind, is_name
from kbrelease.trust.names import check_name as _check_name

MAX_DIM = 32_768
"""Widest vector a package may declare."""
MAX_ROWS = 200_000_000
"""Most rows one collection of a package may declare."""
MAX_PART_BYTES = 2 << 30
"""Most bytes one row part may decode to (parts are 64 MiB by default)."""
MAX_BATCH_BYTES = 256 << 20
"""Most bytes one batch of rows may decode to while it is loaded."""
ROW_STRINGS = ["id", "file_id", "file", "heading", "text", "checksum", "metadata"]

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
    file_ids: dict[str, Any] = field(default_factory=dict)
    """Per source, the file ids of its data index (an Arrow array): every row must name one of them."""
    versions: VersionCheck | None = None
    """The compatibility check of the target environment (default: the shipped matrix, refusing)."""


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
        if RecordedEmbedder.from_record(built).compare(current) != "same":  # a package's vectors must be the same vectors
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
    check_fields(p.manifest, where)
    try:
        p.record = ReleaseRecord.from_dict(p.manifest["release"], f"{where} (release {raw['release'].get('name')!r})")
    except KbReleaseError:
        raise
    except (TypeError, ValueError, AttributeError, KeyError) as exc:
        raise PackageError(f"{where}: manifest.json's release record is malformed ({str(exc)[:200]}); the package is damaged") from None
    if set(p.record.sources) != set(p.manifest["collections"]):
        raise PackageError(f"{where}: manifest.json's collections do not match its release record; the package is damaged")
    for source, counts in p.record.sources.items():
        col = p.manifest["collections"][source]
        if counts.collection != col["collection"] or counts.modality != col["modality"] or counts.rows != col["rows"]:
            raise PackageError(
                f"{where}: source {source!r} is collection {col['collection']!r} ({col['modality']}, {col['rows']} rows) in the manifest but "
                f"{counts.collection!r} ({counts.modality}, {counts.rows} rows) in its release record; the package was altered"
            )
    check_models(p.record, identity, environment, where)


def check_name(kind: NameKind, value: Any, where: str) -> str:
    """:func:`kbrelease.trust.names.check_name`, refusing the package (a :class:`PackageError`) rather than blaming the configuration."""
    try:
        return _check_name(kind, value, where)
    except InvalidName as exc:
        raise PackageError(f"{exc}; refusing the package (it was altered or made by something else)") from None


def _is_count(value: Any, most: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= most


def check_fields(manifest: dict[str, Any], where: str) -> None:
    """Every name and count of a manifest, before any of them is used: a name that would become a path,
    a database or a filter is checked against its grammar; a count against its bounds."""
    release = manifest["release"]
    check_name("release", release.get("name"), f"{where} (release name)")
    if not is_name("environment", release.get("environment")):
        check_name("environment", release.get("environment"), f"{where} (environment of the release)")
    sources = release.get("sources")
    if not isinstance(sources, dict) or not all(isinstance(v, dict) for v in sources.values()):
        raise PackageError(f"{where}: the release record has no valid sources; the package is damaged")
    embedders = release.get("embedders")
    if not isinstance(embedders, dict) or not all(k in ("text", "image") and isinstance(v, dict) for k, v in embedders.items()):
        raise PackageError(f"{where}: the release record's embedders are not text/image model descriptions; the package is damaged")
    collections_seen: set[str] = set()
    for source, col in manifest["collections"].items():
        check_name("source", source, f"{where} (collections)")
        if not isinstance(col, dict):
            raise PackageError(f"{where}: collection entry of {source!r} is not a mapping; the package is damaged")
        name = check_name("collection", col.get("collection"), f"{where} (collection of source {source!r})")
        if name in collections_seen:
            raise PackageError(f"{where}: collection {name!r} is fed by two sources; the package was altered")
        collections_seen.add(name)
        if col.get("modality") not in ("text", "image"):
            raise PackageError(f"{where}: source {source!r} has modality {str(col.get('modality'))[:40]!r}; only 'text' and 'image' exist")
        if not _is_count(col.get("dim"), MAX_DIM) or col["dim"] < 1:
            raise PackageError(f"{where}: source {source!r} declares vectors of {str(col.get('dim'))[:40]} dimensions; expected 1 to {MAX_DIM}")
        if not _is_count(col.get("rows"), MAX_ROWS):
            raise PackageError(f"{where}: source {source!r} declares {str(col.get('rows'))[:40]} rows; expected 0 to {MAX_ROWS}")
    data_index = manifest.get("data_index")
    members = data_index.get("members") if isinstance(data_index, dict) else None
    if not isinstance(members, list) or "index/bundle.yaml" not in members or len(set(members)) != len(members):
        raise PackageError(f"{where}: manifest.json lists no valid data index members; the package is damaged")
    allowed = {"index/bundle.yaml", *(f"index/{s}.parquet" for s in manifest["collections"])}
    odd = [m for m in members if m not in allowed]
    if odd:
        raise PackageError(f"{where}: data index member {str(odd[0])[:80]!r} is not index/<source>.parquet of a source of the package; the package was altered")


def _on_index(p: Pass, name: str, data: bytes) -> None:
    from kbrelease.index.data_index import load_bundle_yaml

    where = p.reading.where
    assert p.manifest is not None and p.record is not None
    if name not in p.manifest["data_index"]["members"]:
        raise PackageError(f"{where}: {name!r} is not part of the data index the manifest lists; the package was altered")
    p.index_data[name] = data
    if name == "index/bundle.yaml":
        try:
            loaded = load_bundle_yaml(data)
            p.bundle = Bundle(meta=loaded["meta"], data_manifest=[SourceIndex(**s) for s in loaded["data_manifest"]])
        except Exception as exc:
            raise PackageError(f"{where}: index/bundle.yaml cannot be read ({str(exc)[:200]}); the package is damaged") from exc
        (p.versions or VersionCheck.default()).check(p.bundle.meta, f"{where}: its data index")
        if p.bundle.checksum != p.record.data_index_checksum:
            raise PackageError(f"{where}: the data index does not match the release's data-index checksum; the package was altered")
        check_bundle(p.bundle, p.manifest, where)
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
            records = read_source_index(Path(tmp.name), expected_rows=src.file_count, where=f"{where}: {name!r}")
        except KbReleaseError as exc:
            raise PackageError(str(exc)) from exc
        except Exception as exc:
            raise PackageError(f"{where}: {name!r} is not a readable data index ({str(exc)[:200]}); the package is damaged") from exc
    if index_checksum(records) != src.checksum or len(records) != src.file_count:
        raise PackageError(f"{where}: {name!r} does not match the bundle's checksum for source {src.channel!r}; the package was altered")
    import pyarrow as pa

    p.file_ids[src.channel] = pa.array([r.file_id for r in records], pa.string())


def check_bundle(bundle: Bundle, manifest: dict[str, Any], where: str) -> None:
    """The frozen data index names exactly the package's sources, each with its own index file, collection and modality."""
    collections = manifest["collections"]
    seen: set[str] = set()
    for src in bundle.data_manifest:
        channel = check_name("source", src.channel, f"{where} (index/bundle.yaml channel)")
        if channel in seen:
            raise PackageError(f"{where}: index/bundle.yaml lists source {channel!r} twice; the package was altered")
        seen.add(channel)
        col = collections.get(channel)
        if col is None:
            raise PackageError(f"{where}: index/bundle.yaml lists source {channel!r}, which the release does not have; the package was altered")
        if src.index_file != f"{channel}.parquet":
            raise PackageError(f"{where}: index/bundle.yaml gives source {channel!r} index file {str(src.index_file)[:80]!r}, expected {channel}.parquet")
        if src.collection != col["collection"] or src.modality != col["modality"]:
            raise PackageError(
                f"{where}: index/bundle.yaml says source {channel!r} feeds {str(src.collection)[:80]!r} ({str(src.modality)[:20]}), "
                f"the manifest says {col['collection']!r} ({col['modality']}); the package was altered"
            )
        if not _is_count(src.file_count, MAX_ROWS):
            raise PackageError(f"{where}: index/bundle.yaml gives source {channel!r} {str(src.file_count)[:40]} files; the package is damaged")
    if seen != set(collections):
        raise PackageError(f"{where}: index/bundle.yaml does not list source(s) {', '.join(sorted(set(collections) - seen))}; the package was altered")


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
        pf = pq.ParquetFile(pa.BufferReader(data), read_dictionary=ROW_STRINGS)
    except Exception as exc:
        raise PackageError(f"{where}: {name!r} is not a readable Parquet file ({str(exc)[:200]}); the package is damaged") from exc
    schema = pf.schema_arrow
    if tuple(schema.names) != ROW_FIELDS:
        raise PackageError(f"{where}: {name!r} has columns {schema.names}, expected {list(ROW_FIELDS)}; the package is damaged")
    vec = schema.field("vector").type
    if not pa.types.is_fixed_size_list(vec) or vec.list_size != col["dim"] or vec.value_type != pa.float32():
        raise PackageError(f"{where}: {name!r} has vectors of type {vec}, expected {col['dim']} float32 values; the package is damaged")
    before = p.rows.get(source, 0)
    if before + pf.metadata.num_rows > col["rows"]:
        raise PackageError(
            f"{where}: {name!r} brings collection {source!r} to {before + pf.metadata.num_rows} rows, the manifest says {col['rows']}; "
            "refusing the package (its counts were altered)"
        )
    check_parquet(pf, f"{where}: {name!r}", col["rows"], MAX_PART_BYTES, error=PackageError)
    return source, pf


def check_rows(table: Any, source: str, file_ids: Any, where: str) -> None:
    """Ids, file ids and paths of rows (a batch or a part): each a valid value, each row of a file of the source's index."""
    import pyarrow as pa
    import pyarrow.compute as pc

    problems = [f"file_id {v} is not an id" for v in bad_values(table["file_id"], FILE_ID.pattern[1:-1])]
    problems += [f"file {v}" for v in path_problems(table["file"])]
    problems += [f"id {v} is not <file_id>:<chunk>" for v in bad_values(table["id"], r"[A-Za-z0-9_-]{1,128}:[0-9]{1,9}")]
    if not problems and table.num_rows:
        fid = table["file_id"].cast(pa.string())
        ids = pc.binary_join_element_wise(fid, table["chunk_index"].cast(pa.string()), ":")
        if not pc.all(pc.equal(ids, table["id"].cast(pa.string()))).as_py():
            problems.append("an id does not match its file_id and chunk_index")
        if file_ids is not None and not pc.all(pc.is_in(fid, value_set=file_ids)).as_py():
            stray = pc.filter(fid, pc.invert(pc.is_in(fid, value_set=file_ids)))[0].as_py()
            problems.append(f"rows of file {stray!r}, which the data index of source {source!r} does not list")
    if problems:
        raise PackageError(f"{where}: rows of source {source!r}: {'; '.join(problems[:3])}; refusing the package (it was altered)")


def check_batch_size(batch: Any, where: str) -> None:
    """A batch about to become Python objects is not a decompression bomb."""
    if decoded_bytes(batch) > MAX_BATCH_BYTES:
        raise PackageError(f"{where}: a batch of {batch.num_rows} rows expands to more than {MAX_BATCH_BYTES} bytes; refusing the package (a compressed bomb)")


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
    if source not in p.file_ids:
        raise PackageError(f"{where}: {m.name!r} comes before the data index of source {source!r}; the package was altered")
    try:
        keys = pf.read(columns=["id", "file_id", "file", "chunk_index"])
    except Exception as exc:
        raise PackageError(f"{where}: {m.name!r} cannot be decoded ({str(exc)[:200]}); the package is damaged") from exc
    check_rows(keys, source, p.file_ids.get(source), f"{where}: {m.name!r}")
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
