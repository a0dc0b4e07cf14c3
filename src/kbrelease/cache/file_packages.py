"""Per-file content packages (seed 001's "file content package").

``export`` writes, for each source file of a release, a folder
``files/<file_id>/<checksum>/`` with ``metadata.json`` (source, path, size,
embedder identity, chunking), ``chunks.parquet`` (chunk index, text, heading,
start, vector), ``RELEASE_INFO.txt`` for people, ``SHA256SUMS`` and, with a
signing key, ``SIGNATURE`` (Ed25519 over ``SHA256SUMS``).

``import`` treats a folder of packages as untrusted: every path is resolved
inside the folder, every member is a bounded regular file with its checksum,
the embedder identity must equal the configured model, and the vectors are
only believed when

- the package is signed by a key the environment trusts
  (``packages.trusted_keys``), or
- a random sample of its vectors, re-embedded here with the configured model,
  agrees (cosine >= :data:`MIN_COSINE`); an image is re-embedded from the
  workspace mirror, so an unsigned image package needs the image synced.

Anything else refuses the package, naming its file.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kbrelease.cache.embeddings import EmbeddingCache, content_key, namespace
from kbrelease.config import Modality
from kbrelease.embedding.base import EmbedderIdentity, ImageEmbedder, RecordedEmbedder, TextEmbedder
from kbrelease.errors import ConfigError, PackageError, ReleaseError, UnsafePath
from kbrelease.index.bounded import FILE_ID, SHA256_HEX, check_parquet, decoded_bytes
from kbrelease.index.data_index import file_id_for
from kbrelease.release.registry import ReleaseRecord, SourceCounts
from kbrelease.store.milvus import MilvusStore
from kbrelease.trust.names import is_name
from kbrelease.trust.paths import contained, is_regular_file, path_problem
from kbrelease.trust.signing import SigningKey, Verdict, check_signature

PACKAGE_FORMAT = 1
_MEMBERS = ("metadata.json", "chunks.parquet")
_ALL_MEMBERS = {*_MEMBERS, "RELEASE_INFO.txt", "SHA256SUMS", "SIGNATURE"}
MAX_META_BYTES = 1 << 20
MAX_SUMS_BYTES = 64 << 10
MAX_CHUNKS_BYTES = 256 << 20
MAX_CHUNKS = 1_000_000
MIN_COSINE = 0.99
"""A re-embedded sample must agree with the package's vector at least this well."""
FILES_PER_SCAN = 256
"""Files whose rows one export scan reads (and holds) at a time."""
SAMPLE_SHARE = 0.1
"""Share of an unsigned package's chunks re-embedded to check it (at least one per file)."""


@dataclass
class PackageInfo:
    files: int = 0
    vectors: int = 0
    refused: int = 0
    signed: int = 0
    """Packages accepted on a trusted signature, without re-embedding."""
    checked: int = 0
    """Vectors re-embedded here to check unsigned packages."""
    problems: list[str] = field(default_factory=list)
    """Why each refused file was refused (export: rows whose ids or paths are not safe)."""

    def asdict(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "vectors": self.vectors,
            "refused": self.refused,
            "signed": self.signed,
            "checked": self.checked,
            "problems": self.problems,
        }


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _row_problem(file_id: Any, checksum: Any, rel: Any) -> str | None:
    if not isinstance(file_id, str) or not FILE_ID.fullmatch(file_id):
        return f"file id {str(file_id)[:80]!r} is not an id"
    if not isinstance(checksum, str) or not SHA256_HEX.fullmatch(checksum):
        return f"file {file_id}: checksum {str(checksum)[:80]!r} is not a sha256 hex digest"
    problem = path_problem(rel)
    if problem:
        return f"file {file_id}: path {str(rel)[:80]!r} {problem}"
    return None


def _replace_folder(tmp: Path, folder: Path) -> None:
    """Put ``tmp`` (ours) at ``folder``; an existing ``folder`` is removed only when it is a package folder (our members only)."""
    if os.path.lexists(folder):
        if folder.is_symlink() or not folder.is_dir():
            raise PackageError(f"{folder} exists and is not a package folder (a link or a file); remove it or export elsewhere")
        strange = sorted(p.name for p in folder.iterdir() if p.name not in _ALL_MEMBERS or p.is_symlink() or not p.is_file())
        if strange:
            raise PackageError(f"{folder} holds {strange[0]!r}, which no package has; it was left alone — remove it or export elsewhere")
        old = folder.with_name(f".{folder.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(folder, old)
        os.replace(tmp, folder)
        shutil.rmtree(old)
        return
    os.replace(tmp, folder)


def export_packages(
    store: MilvusStore, record: ReleaseRecord, out: Path, selectors: Iterable[str] | None = None, signer: SigningKey | None = None
) -> PackageInfo:
    """Write one package per file of ``record`` (``selectors``: file ids or relative paths; None = all).

    Every folder is resolved inside ``out`` (links included) before anything is
    written; a row whose file id, checksum or path is not safe is refused by
    name and the other files are exported.
    """
    wanted = set(selectors) if selectors is not None else None
    info = PackageInfo()
    out.mkdir(parents=True, exist_ok=True)
    for source, counts in record.sources.items():
        identity = record.embedders.get(counts.modality, {})
        # File ids first (one small row each), then the rows of FILES_PER_SCAN files at a time through a
        # server-side cursor: memory is bounded by that group, whatever the size of the release.
        present = store.file_rows(record.database, counts.collection)
        if wanted is not None:
            ids = {s for s in wanted if s in present} | {file_id_for(source, s) for s in wanted if path_problem(s) is None}
            present = {k: v for k, v in present.items() if k in ids}
        order = sorted(present)
        for start in range(0, len(order), FILES_PER_SCAN):
            _export_group(store, record, source, counts, identity, order[start : start + FILES_PER_SCAN], out, signer, info)
    if wanted is not None and info.files == 0 and not info.refused:
        raise ReleaseError(f"no file of release {record.name!r} matches {sorted(wanted)}; give file ids or relative paths")
    return info


def _export_group(
    store: MilvusStore,
    record: ReleaseRecord,
    source: str,
    counts: SourceCounts,
    identity: dict[str, Any],
    file_ids: list[str],
    out: Path,
    signer: SigningKey | None,
    info: PackageInfo,
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    by_file: dict[str, list[dict[str, Any]]] = {}
    fields = ["file_id", "file", "checksum", "chunk_index", "text", "heading", "start", "vector"]
    for batch in store.iter_rows(record.database, counts.collection, fields, file_ids=file_ids):  # translated, reloaded after a restart
        for row in batch:
            by_file.setdefault(str(row["file_id"]), []).append(row)
    for file_id, chunks in by_file.items():
        chunks.sort(key=lambda r: r["chunk_index"])
        first = chunks[0]
        problem = _row_problem(file_id, first["checksum"], first["file"])
        try:
            folder = contained(out, f"files/{file_id}/{first['checksum']}", f"package folder of file {file_id!r}") if problem is None else None
        except UnsafePath as exc:
            problem = str(exc)
            folder = None
        if folder is None:
            info.refused += 1
            info.problems.append(f"{source}: {problem}; not exported (the release's rows were altered)")
            continue
        folder.parent.mkdir(parents=True, exist_ok=True)
        contained(out, f"files/{file_id}/{first['checksum']}")  # again, now that the parent exists: no link was planted meanwhile
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
        try:
            _write_package(tmp, file_id, source, counts.modality, first, chunks, record, identity, signer, pa, pq)
            _replace_folder(tmp, folder)
        except PackageError as exc:
            info.refused += 1
            info.problems.append(f"{source}: {exc}")
            continue
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)
        info.files += 1
        info.vectors += len(chunks)


def _write_package(
    tmp: Path,
    file_id: str,
    source: str,
    modality: Modality,
    first: dict[str, Any],
    chunks: list[dict[str, Any]],
    record: ReleaseRecord,
    identity: dict[str, Any],
    signer: SigningKey | None,
    pa: Any,
    pq: Any,
) -> None:
    meta = {
        "format": PACKAGE_FORMAT,
        "file_id": file_id,
        "source": source,
        "modality": modality,
        "relative_path": first["file"],
        "checksum": first["checksum"],
        "release": record.name,
        "embedder": identity,
        "chunking": record.chunking,
        "chunks": len(chunks),
    }
    (tmp / "metadata.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    table = pa.table(
        {
            "chunk_index": [int(c["chunk_index"]) for c in chunks],
            "text": [c["text"] for c in chunks],
            "heading": [c["heading"] for c in chunks],
            "start": [int(c["start"]) for c in chunks],
            "vector": [list(map(float, c["vector"])) for c in chunks],
        }
    )
    pq.write_table(table, tmp / "chunks.parquet", compression="zstd")
    (tmp / "RELEASE_INFO.txt").write_text(
        f"file:      {first['file']}\nsource:    {source} ({modality})\nchecksum:  {first['checksum']}\n"
        f"release:   {record.name}\nmodel:     {identity.get('model')} ({identity.get('dim')}-d)\nchunks:    {len(chunks)}\n",
        encoding="utf-8",
    )
    sums = "".join(f"{_sha256(tmp / m)}  {m}\n" for m in _MEMBERS).encode()
    (tmp / "SHA256SUMS").write_bytes(sums)  # written last but the signature: a package without it is incomplete
    if signer is not None:
        (tmp / "SIGNATURE").write_bytes(signer.sign(sums).to_bytes())


# --- import ---------------------------------------------------------------------------


@dataclass
class Verifier:
    """How an import checks vectors: trusted keys, the configured models, the workspace mirror (images)."""

    environment: str
    trusted: dict[str, Any]
    text: Callable[[], TextEmbedder]
    image: Callable[[], ImageEmbedder]
    mirror: Callable[[str], Path]
    max_pixels: int
    sample_share: float = SAMPLE_SHARE
    rng: random.Random = field(default_factory=random.SystemRandom)


def _read_member(pkg: Path, name: str, limit: int) -> bytes:
    path = pkg / name
    if path.is_symlink() or not is_regular_file(path):
        raise PackageError(f"package {pkg}: {name} is missing or not a regular file (a link, device or folder); the package is incomplete or unsafe")
    with path.open("rb") as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise PackageError(f"package {pkg}: {name} is over {limit} bytes; refusing it (a damaged or hostile package)")
    return data


def _packages(folder: Path) -> list[tuple[Path, str, str]]:
    """``(folder, file_id, checksum)`` of every package under ``folder``, each resolved inside it."""
    root = folder / "files"
    if not root.is_dir():
        raise ConfigError(f"{folder} holds no packages (expected files/<file_id>/<checksum>/SHA256SUMS); check the path")
    found = []
    for sums in sorted(root.glob("*/*/SHA256SUMS")):
        pkg = sums.parent
        file_id, checksum = pkg.parent.name, pkg.name
        if not FILE_ID.fullmatch(file_id) or not SHA256_HEX.fullmatch(checksum):
            raise PackageError(f"package {pkg}: its folder is not files/<file_id>/<sha256>/; refusing the folder (it was altered)")
        try:
            contained(folder, f"files/{file_id}/{checksum}/SHA256SUMS", f"package {pkg}")
        except UnsafePath as exc:
            raise PackageError(f"{exc}; refusing the folder (a link out of it was planted)") from None
        found.append((pkg, file_id, checksum))
    if not found:
        raise ConfigError(f"{folder} holds no packages (expected files/<file_id>/<checksum>/SHA256SUMS); check the path")
    return found


def _check_sums(pkg: Path) -> bytes:
    """The package's SHA256SUMS, after every member it lists matched (and it lists exactly the two data members)."""
    raw = _read_member(pkg, "SHA256SUMS", MAX_SUMS_BYTES)
    listed: dict[str, str] = {}
    for line in raw.decode("utf-8", "replace").splitlines():
        parts = line.split(maxsplit=1)
        if len(parts) != 2 or parts[1] not in _MEMBERS or not SHA256_HEX.fullmatch(parts[0]) or parts[1] in listed:
            raise PackageError(f"package {pkg}: SHA256SUMS line {line[:120]!r} is not '<sha256>  metadata.json|chunks.parquet'; the package was altered")
        listed[parts[1]] = parts[0]
    for name in _MEMBERS:
        limit = MAX_META_BYTES if name == "metadata.json" else MAX_CHUNKS_BYTES
        if name not in listed or hashlib.sha256(_read_member(pkg, name, limit)).hexdigest() != listed[name]:
            raise ReleaseError(f"package {pkg}: {name} does not match its checksum; the package is corrupt — export it again")
    return raw


def _metadata(pkg: Path, file_id: str, checksum: str) -> dict[str, Any]:
    try:
        meta = json.loads(_read_member(pkg, "metadata.json", MAX_META_BYTES))
    except ValueError:
        raise PackageError(f"package {pkg}: metadata.json is not JSON; the package is damaged") from None
    if not isinstance(meta, dict):
        raise PackageError(f"package {pkg}: metadata.json is not a mapping; the package is damaged")
    problems = []
    if meta.get("file_id") != file_id or meta.get("checksum") != checksum:
        problems.append("its file_id and checksum differ from its folder's")
    if meta.get("modality") not in ("text", "image"):
        problems.append(f"modality {str(meta.get('modality'))[:40]!r} is not text or image")
    if not is_name("source", meta.get("source")):
        problems.append(f"source {str(meta.get('source'))[:80]!r} is not a source name")
    if path_problem(meta.get("relative_path")):
        problems.append(f"relative_path {str(meta.get('relative_path'))[:80]!r} {path_problem(meta.get('relative_path'))}")
    chunks = meta.get("chunks")
    if not isinstance(chunks, int) or isinstance(chunks, bool) or not 1 <= chunks <= MAX_CHUNKS:
        problems.append(f"chunks {str(chunks)[:40]} is not 1 to {MAX_CHUNKS}")
    if not isinstance(meta.get("embedder") or {}, dict):
        problems.append("embedder is not a mapping")
    if problems:
        raise PackageError(f"package {pkg}: metadata.json is invalid ({'; '.join(problems)}); refusing it (it was altered)")
    return meta


def _chunks(pkg: Path, meta: dict[str, Any], dim: int) -> list[dict[str, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    where = f"package {pkg}: chunks.parquet"
    try:
        pf = pq.ParquetFile(pkg / "chunks.parquet", read_dictionary=["text", "heading"])
        names = pf.schema_arrow.names
    except Exception as exc:
        raise PackageError(f"{where} is not a readable Parquet file ({str(exc)[:200]}); the package is damaged") from exc
    if sorted(names) != ["chunk_index", "heading", "start", "text", "vector"]:
        raise PackageError(f"{where} has columns {names}; expected chunk_index, text, heading, start, vector")
    check_parquet(pf, where, MAX_CHUNKS, MAX_CHUNKS_BYTES, expected_rows=int(meta["chunks"]), error=PackageError)
    vec = pf.schema_arrow.field("vector").type
    if not (pa.types.is_list(vec) or pa.types.is_large_list(vec) or pa.types.is_fixed_size_list(vec)) or not pa.types.is_floating(vec.value_type):
        raise PackageError(f"{where} has vectors of type {vec}; expected lists of floats")
    table = pf.read()
    if decoded_bytes(table) > MAX_CHUNKS_BYTES:
        raise PackageError(f"{where} expands to more than {MAX_CHUNKS_BYTES} bytes; refusing it (a compressed bomb)")
    lengths = pa.compute.list_value_length(table["vector"])
    if table["vector"].null_count or pa.compute.min(lengths).as_py() != dim or pa.compute.max(lengths).as_py() != dim:
        raise PackageError(f"{where} has vectors that are not {dim}-d (the model's); the package is damaged")
    if meta["modality"] == "image" and table.num_rows != 1:
        raise PackageError(f"{where} has {table.num_rows} vectors for one image; the package is damaged")
    rows: list[dict[str, Any]] = table.to_pylist()
    return rows


def _cosine(a: Any, b: Any) -> float:
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    norm = float(np.linalg.norm(x) * np.linalg.norm(y))
    return float(x @ y / norm) if norm else 0.0


def _image_array(pkg: Path, meta: dict[str, Any], verifier: Verifier, emb: ImageEmbedder) -> Any:
    from kbrelease.images.preprocess import preprocess_image
    from kbrelease.release.files import bounded_sha256

    fix = f"run `kbrelease sync` first so the image is in the workspace, or import a package signed by a key environment {verifier.environment!r} trusts"
    try:
        path = contained(verifier.mirror(meta["source"]), meta["relative_path"], f"image of package {pkg}")
    except UnsafePath as exc:
        raise PackageError(f"{exc}; refusing the package") from None
    size = path.stat().st_size if is_regular_file(path) else -1
    if size < 0 or bounded_sha256(path, size) != meta["checksum"]:
        raise PackageError(f"package {pkg} ({meta['source']}/{meta['relative_path']}): its image vector cannot be checked without the image; {fix}")
    return preprocess_image(path.read_bytes(), emb.input_size, emb.mean, emb.std, verifier.max_pixels)


def _check_vectors(pkg: Path, meta: dict[str, Any], rows: list[dict[str, Any]], verifier: Verifier) -> int:
    """Re-embed a random sample of ``rows`` and compare; returns how many were re-embedded."""
    count = max(1, math.ceil(len(rows) * verifier.sample_share))
    sample = verifier.rng.sample(range(len(rows)), count)
    if meta["modality"] == "image":
        image = verifier.image()
        fresh = image.embed_arrays(_image_array(pkg, meta, verifier, image)[None, ...])
    else:
        fresh = verifier.text().embed_texts([rows[i]["text"] or "" for i in sample])
    for i, vec in zip(sample, fresh, strict=True):
        similarity = _cosine(rows[i]["vector"], vec)
        if not similarity >= MIN_COSINE:
            raise PackageError(
                f"package {pkg} ({meta['source']}/{meta['relative_path']}): chunk {rows[i]['chunk_index']}'s vector does not match the configured "
                f"model's (cosine {similarity:.3f} < {MIN_COSINE}); refusing it — the package was poisoned or made with another model. "
                "Nothing of this package was imported"
            )
    return count


def import_packages(cache: EmbeddingCache, folder: Path, identities: dict[str, EmbedderIdentity], verifier: Verifier) -> PackageInfo:
    """Load every package under ``folder`` into the cache, each only after all its checks passed.

    The whole folder is checked before the first vector is written: one bad
    package refuses the import, naming it, and the cache is left as it was.
    """
    info = PackageInfo()
    accepted: list[tuple[str, list[tuple[str, Any]]]] = []
    for pkg, file_id, checksum in _packages(folder):
        sums = _check_sums(pkg)
        meta = _metadata(pkg, file_id, checksum)
        current = identities.get(meta["modality"])
        built = meta.get("embedder") or {}
        if current is None or RecordedEmbedder.from_record(built).compare(current) != "same":
            raise ConfigError(
                f"package {pkg}: made with {meta['modality']} model {built.get('model')!r} ({built.get('dim')}-d, rev {built.get('revision')}) "
                f"but this environment is configured for {current.model if current else 'none'!r}; configure the same model to import it"
            )
        signature = _read_member(pkg, "SIGNATURE", 4096) if os.path.lexists(pkg / "SIGNATURE") else None
        verdict: Verdict = check_signature(signature, sums, {}, f"package {pkg}", verifier.environment, fix="sign it with `kbrelease cache export --sign KEY`")
        rows = _chunks(pkg, meta, current.dim)
        if verdict.signed and verdict.signer in verifier.trusted:
            info.signed += 1
        else:
            info.checked += _check_vectors(pkg, meta, rows, verifier)
        ns = namespace(current)
        if meta["modality"] == "image":
            items = [(str(meta["checksum"]), np.asarray(r["vector"], dtype=np.float32)) for r in rows]
        else:
            items = [(content_key(r["text"] or ""), np.asarray(r["vector"], dtype=np.float32)) for r in rows]
        accepted.append((ns, items))
    for ns, items in accepted:
        cache.put_many(ns, items)
        info.files += 1
        info.vectors += len(items)
    return info
