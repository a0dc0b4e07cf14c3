"""The release manifest on disk: ``manifest.json`` (machine) + ``RELEASE_INFO.txt`` (people).

Written into the workspace release folder after a build and after verify; the
registry row in Milvus holds the same record for every process to read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kbrelease.atomic import atomic_write, atomic_write_json
from kbrelease.release.registry import ReleaseRecord


def release_info_text(record: ReleaseRecord, state: str | None = None) -> str:
    """RELEASE_INFO.txt; ``state`` is the state to print (the displayed one: live, retired) instead of the stored one."""
    lines = [
        f"release:         {record.name}",
        f"environment:     {record.environment}",
        f"database:        {record.database}",
        f"state:           {state or record.state}",
        f"created_at:      {record.created_at}",
        f"data index:      {record.data_index_checksum}",
        f"kbrelease:       {record.tool_version} (manifest schema {record.schema_version})",
        f"build seconds:   {record.build_seconds}",
    ]
    if record.origin:
        o = record.origin
        sha = f", package sha256 {o['package_sha256']}" if o.get("package_sha256") else ""
        lines.append(f"imported from:   release {o.get('release')} of environment {o.get('environment')} at {o.get('imported_at')}{sha}")
    for kind, ident in record.embedders.items():
        label = f"{kind} model:".ljust(17)
        lines.append(f"{label}{ident.get('model')} ({ident.get('dim')}-d, rev {ident.get('revision') or '-'})")
    lines.append("sources:")
    for name, c in record.sources.items():
        kind = f"{c.modality}, +BM25" if c.sparse else c.modality
        lines.append(
            f"  {name} -> {c.collection} [{kind}]: files {c.files}, rows {c.rows}, embedded {c.embedded}, reused {c.reused}, removed {c.removed}, "
            f"skipped {c.skipped}, failed {c.failed}"
        )
        for item in c.failures:
            lines.append(f"    failed  {item['file']}: {item['reason']}")
        for item in c.skips:
            lines.append(f"    skipped {item['file']}: {item['reason']}")
    if record.verification:
        lines.append(f"verification:    {'passed' if record.verification.get('passed') else 'FAILED'}")
        for problem in record.verification.get("problems", []):
            lines.append(f"  - {problem}")
        lines.extend(quality_lines(record.verification.get("quality")))
    return "\n".join(lines) + "\n"


def quality_lines(quality: dict[str, Any] | None) -> list[str]:
    """The quality gate's lines of RELEASE_INFO: recall@k and MRR against the live release's, the gate, the misses."""
    if not quality:
        return []
    cand, live, gate = quality.get("candidate") or {}, quality.get("live"), quality.get("gate") or {}
    n = len(cand.get("queries", []))
    against = f" (live {live['release']}: {live['recall']:.3f}, MRR {live['mrr']:.3f})" if live else ""
    lines = [
        f"quality:         recall@{cand.get('k')} {cand.get('recall', 0):.3f}, MRR {cand.get('mrr', 0):.3f} on {n} golden queries{against}",
        f"quality gate:    {'passed' if gate.get('passed') else 'REFUSED'}",
    ]
    lines += [f"  - {r}" for r in gate.get("reasons", [])]
    lines += [f"  lost its answer: {q!r}" for q in gate.get("lost", [])]
    lines += [f"  not answered:    {o['query']!r} (expected {', '.join(o['expect'])})" for o in cand.get("queries", []) if o.get("rank") is None]
    return lines


def write_manifest(folder: Path, record: ReleaseRecord) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(folder / "manifest.json", record.asdict())
    atomic_write(folder / "RELEASE_INFO.txt", release_info_text(record))
