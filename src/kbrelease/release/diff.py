"""``kbrelease diff A B``: what changed between two releases.

Per source: files added, removed and changed (by checksum, from the two frozen
data indexes), and chunks added, removed and reused (by the sha256 of each
chunk's text, or the image's checksum, read from the two collections with a
server-side cursor, so memory holds hashes only). With golden queries, the
queries whose top k changed, with both lists.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kbrelease.index.data_index import read_bundle, read_source_index
from kbrelease.release.registry import ReleaseRecord
from kbrelease.store.milvus import MilvusStore
from kbrelease.workspace import Workspace

if TYPE_CHECKING:
    from kbrelease.api import KbRelease
    from kbrelease.release.quality import GoldenQuery


def _files(index: Path) -> dict[str, dict[str, str]]:
    """``source -> {relative_path: checksum}`` of a release's frozen data index (empty when it has none)."""
    if not (index / "bundle.yaml").is_file():
        return {}
    bundle = read_bundle(index)
    return {s.channel: {r.relative_path: r.checksum for r in read_source_index(index / s.index_file)} for s in bundle.data_manifest}


def _chunks(store: MilvusStore, record: ReleaseRecord, source: str) -> Counter[str]:
    counts = record.sources.get(source)
    if counts is None:
        return Counter()
    field = "text" if counts.modality == "text" else "checksum"
    out: Counter[str] = Counter()
    for batch in store.iter_rows(record.database, counts.collection, [field]):
        for row in batch:
            value = str(row.get(field) or "")
            out[hashlib.sha256(value.encode("utf-8")).hexdigest() if field == "text" else value] += 1
    return out


def _sparse(record: ReleaseRecord, source: str) -> bool:
    counts = record.sources.get(source)
    return bool(counts and counts.sparse)


def diff_releases(kb: KbRelease, old: ReleaseRecord, new: ReleaseRecord, queries: list[GoldenQuery] | None = None) -> dict[str, Any]:
    """``{"from", "to", "sources": {name: {"files": {...}, "chunks": {...}}}, "queries": [...]}``."""
    ws = Workspace.of(kb.cfg)
    files_old, files_new = _files(ws.release_index(old.name)), _files(ws.release_index(new.name))
    sources: dict[str, Any] = {}
    for name in sorted(set(old.sources) | set(new.sources) | set(files_old) | set(files_new)):
        a, b = files_old.get(name, {}), files_new.get(name, {})
        chunks_a, chunks_b = _chunks(kb.store, old, name), _chunks(kb.store, new, name)
        reused = sum((chunks_a & chunks_b).values())
        sources[name] = {
            "files": {
                "added": sorted(set(b) - set(a)),
                "removed": sorted(set(a) - set(b)),
                "changed": sorted(p for p in set(a) & set(b) if a[p] != b[p]),
                "unchanged": sum(1 for p in set(a) & set(b) if a[p] == b[p]),
            },
            "chunks": {
                "added": sum(chunks_b.values()) - reused,
                "removed": sum(chunks_a.values()) - reused,
                "reused": reused,
                "before": sum(chunks_a.values()),
                "after": sum(chunks_b.values()),
            },
            "hybrid": {"before": _sparse(old, name), "after": _sparse(new, name)},
        }
    changed_queries: list[dict[str, Any]] = []
    if queries:
        before = kb.evaluate_quality(old, queries)
        after = kb.evaluate_quality(new, queries)
        for qa, qb in zip(before.queries, after.queries, strict=True):
            if qa.hits != qb.hits:
                changed_queries.append(
                    {"query": qa.query, "expect": qa.expect, "before": qa.hits, "after": qb.hits, "rank_before": qa.rank, "rank_after": qb.rank}
                )
        summary: dict[str, Any] = {"k": before.k, "recall_before": before.recall, "recall_after": after.recall}
    else:
        summary = {}
    return {"from": old.name, "to": new.name, "sources": sources, "queries": changed_queries, **({"quality": summary} if summary else {})}


def diff_text(d: dict[str, Any], limit: int = 20) -> str:
    """The diff for people: per source, counts and the first ``limit`` paths of each kind."""
    lines = [f"diff {d['from']} → {d['to']}"]
    for name, s in d["sources"].items():
        f, c = s["files"], s["chunks"]
        lines.append(
            f"  {name}: files +{len(f['added'])} -{len(f['removed'])} ~{len(f['changed'])} ({f['unchanged']} unchanged); "
            f"chunks +{c['added']} -{c['removed']} ={c['reused']} ({c['before']} → {c['after']})"
        )
        hybrid = s.get("hybrid", {})
        if hybrid.get("before") != hybrid.get("after"):
            names = {True: "hybrid (BM25 + vectors)", False: "vectors only"}
            lines.append(f"    search: {names[bool(hybrid.get('after'))]} (was {names[bool(hybrid.get('before'))]})")
        for mark, key in (("+", "added"), ("-", "removed"), ("~", "changed")):
            for path in f[key][:limit]:
                lines.append(f"    {mark} {path}")
            if len(f[key]) > limit:
                lines.append(f"    {mark} ... {len(f[key]) - limit} more")
    if "quality" in d:
        q = d["quality"]
        lines.append(f"  golden queries: recall@{q['k']} {q['recall_before']:.3f} → {q['recall_after']:.3f}; {len(d['queries'])} changed their top {q['k']}")
        for item in d["queries"][:limit]:
            lines.append(f"    {item['query']!r}: rank {item['rank_before'] or '-'} → {item['rank_after'] or '-'}")
    return "\n".join(lines) + "\n"
