"""``verify``: prove a built release is complete before it may go live.

Checks, per source: every indexed file is accounted for (complete rows, or a
recorded failure/skip), no file is partial, no row belongs to a file outside
the index, row counts match the manifest, the failed share is within
``max_failed_share``, and a search for a stored vector finds it.
"""

from __future__ import annotations

from kbrelease.config import Config
from kbrelease.errors import ReleaseError, VerificationError
from kbrelease.index.data_index import read_bundle, read_source_index
from kbrelease.release.manifest import write_manifest
from kbrelease.release.registry import Registry, ReleaseRecord, now_iso
from kbrelease.store.milvus import MilvusStore
from kbrelease.trust.filters import eq
from kbrelease.workspace import Workspace


def _check_source(cfg: Config, store: MilvusStore, record: ReleaseRecord, name: str, index_file: str, ws: Workspace) -> list[str]:
    counts = record.sources.get(name)
    if counts is None:
        return [f"{name}: source is in the data index but was not built"]
    problems: list[str] = []
    indexed = {r.file_id for r in read_source_index(ws.release_index(record.name) / index_file)}
    present = store.file_rows(record.database, counts.collection)
    partial = [f for f, (have, n) in present.items() if have != n]
    unknown = [f for f in present if f not in indexed]
    complete = sum(1 for f, (have, n) in present.items() if have == n and f in indexed)
    if partial:
        problems.append(f"{name}: {len(partial)} file(s) have only part of their chunks; rerun `kbrelease build --release {record.name}`")
    if unknown:
        problems.append(f"{name}: {len(unknown)} file id(s) in the collection are not in the data index")
    accounted = complete + counts.failed + counts.skipped
    if accounted != len(indexed):
        problems.append(
            f"{name}: {len(indexed)} files indexed but {accounted} accounted for ({complete} with rows, {counts.failed} failed, {counts.skipped} skipped)"
        )
    rows = store.count(record.database, counts.collection)
    if rows != counts.rows or rows != sum(have for have, _ in present.values()):
        problems.append(f"{name}: collection has {rows} rows, manifest says {counts.rows}")
    if indexed and counts.failed / len(indexed) > cfg.max_failed_share:
        problems.append(
            f"{name}: {counts.failed} of {len(indexed)} files failed ({counts.failed / len(indexed):.1%}), "
            f"over max_failed_share {cfg.max_failed_share:.1%}; fix the files listed in the manifest or raise max_failed_share"
        )
    if rows:
        sample = store.sample(record.database, counts.collection, limit=1)[0]
        # Filtered to the sampled row: identical vectors elsewhere (the same image twice) cannot hide it.
        hits = store.search(record.database, counts.collection, [sample["vector"]], k=1, output_fields=["file"], expr=eq("id", str(sample["id"])))
        if not hits or not hits[0] or float(hits[0][0]["distance"]) < 0.999:
            problems.append(f"{name}: smoke search did not find a stored vector (row {sample['id']})")
    return problems


def verify(cfg: Config, store: MilvusStore, registry: Registry, name: str) -> ReleaseRecord:
    """Verify release ``name``; raises :class:`VerificationError` listing every problem."""
    record = registry.require(name)
    if record.state == "dropping":
        raise ReleaseError(f"release {name!r} is being dropped by gc; it cannot be verified")
    if record.state == "building":
        raise ReleaseError(f"release {name!r} is still building (or its build was interrupted); run `kbrelease build --release {name}`")
    if record.state in ("registered", "importing"):
        raise ReleaseError(f"release {name!r} is {record.state}: its package import did not finish; run `kbrelease package import` with the same package again")
    if record.state == "dropped":
        raise ReleaseError(f"release {name!r} was dropped by gc; it cannot be verified")
    if record.state == "failed" and not record.verification:
        raise ReleaseError(f"release {name!r} failed to build ({record.error}); run `kbrelease build --release {name}` again")
    ws = Workspace.of(cfg)
    bundle = read_bundle(ws.release_index(name))
    problems: list[str] = []
    if bundle.checksum != record.data_index_checksum:
        problems.append("the frozen data index does not match the checksum in the manifest")
    for src in bundle.data_manifest:
        problems.extend(_check_source(cfg, store, record, src.channel, src.index_file, ws))
    record.verification = {"passed": not problems, "problems": problems, "checked_at": now_iso()}
    record.state = "verified" if not problems else "failed"
    registry.put(record)
    write_manifest(ws.release_dir(name), record)
    if problems:
        raise VerificationError(f"release {name!r} failed verification and cannot go live:\n  - " + "\n  - ".join(problems))
    return record
