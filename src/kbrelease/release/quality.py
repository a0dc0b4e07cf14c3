"""The quality gate: golden queries a release must answer before it goes live.

A golden-queries file (``quality.golden_queries``, YAML or JSONL) lists the
questions the knowledge base exists for and the files that answer them::

    - query: how do I connect to the VPN from home?
      expect: [it/vpn-setup.md]
    - query: fire assembly point
      expect: [facilities/fire-drill.md]
      source: docs            # optional: only this source
    - image: probes/stripes.png   # optional: an example image (relative to this file)
      expect: [stripes/stripes-01.png]

``verify`` runs them against the candidate and the live release and records,
in the manifest, recall@k (the share of expected files found in the top k,
averaged over queries), MRR (the mean of 1/rank of the first expected file) and
the hits of every query. :func:`gate` decides whether the candidate may go live:
recall@k ≥ ``quality.min_recall`` and no more than ``quality.max_regression``
below the live release's.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kbrelease.config import Config
from kbrelease.errors import ConfigError, KbReleaseError, ReleaseError
from kbrelease.trust.paths import path_problem

MAX_QUERIES = 10_000
MAX_FILE_BYTES = 16 << 20


class QualityGateRefused(ReleaseError):
    """A candidate that answers the golden queries worse than the gate allows; live did not change."""

    exit_code = 3


@dataclass(frozen=True)
class GoldenQuery:
    """One question and the files (relative paths, optionally ``source/path``) that answer it."""

    expect: tuple[str, ...]
    query: str | None = None
    image: Path | None = None
    source: str | None = None

    @property
    def label(self) -> str:
        return self.query if self.query is not None else f"image {self.image.name if self.image else '?'}"


@dataclass
class QueryOutcome:
    query: str
    expect: list[str]
    hits: list[str]
    rank: int | None
    """1-based rank of the first expected file in the top k, None when none was found."""
    recall: float
    error: str | None = None


@dataclass
class QualityReport:
    """What one release answered: recall@k, MRR and every query's hits."""

    release: str
    k: int
    recall: float
    mrr: float
    queries: list[QueryOutcome] = field(default_factory=list)

    def asdict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QualityReport:
        queries = [QueryOutcome(**q) for q in data.get("queries", [])]
        return cls(release=data["release"], k=int(data["k"]), recall=float(data["recall"]), mrr=float(data["mrr"]), queries=queries)


def _entries(path: Path) -> list[tuple[str, Any]]:
    """``(where, entry)`` for each entry of a YAML list (or ``{queries: [...]}``) or a JSONL file."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ConfigError(f"quality.golden_queries: {path} cannot be read ({exc.strerror}); fix the path or unset it") from exc
    if size > MAX_FILE_BYTES:
        raise ConfigError(f"quality.golden_queries: {path} is larger than {MAX_FILE_BYTES >> 20} MiB")
    text = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        out: list[tuple[str, Any]] = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    out.append((f"{path}:{n}", json.loads(line)))
                except ValueError as exc:
                    raise ConfigError(f"quality.golden_queries: {path}:{n} is not JSON ({exc}); write one JSON object per line") from exc
        return out
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"quality.golden_queries: {path} is not valid YAML ({exc})") from exc
    if isinstance(data, dict) and "queries" in data:
        data = data["queries"]
    if not isinstance(data, list):
        raise ConfigError(f"quality.golden_queries: {path} must hold a list of {{query, expect}} entries (or 'queries:' with one)")
    return [(f"{path} entry #{i}", entry) for i, entry in enumerate(data, 1)]


def load_golden_queries(path: Path) -> list[GoldenQuery]:
    """Read and check a golden-queries file; every problem names the entry and the fix."""
    entries = _entries(path)
    if not entries:
        raise ConfigError(f"quality.golden_queries: {path} has no queries; add at least one {{query, expect}} entry or unset it")
    if len(entries) > MAX_QUERIES:
        raise ConfigError(f"quality.golden_queries: {path} has {len(entries)} queries; at most {MAX_QUERIES}")
    out = []
    for where, entry in entries:
        if not isinstance(entry, dict):
            raise ConfigError(f"quality.golden_queries: {where} must be a mapping with 'query' (or 'image') and 'expect'")
        unknown = set(entry) - {"query", "expect", "source", "image"}
        if unknown:
            raise ConfigError(f"quality.golden_queries: {where} has unknown keys {sorted(unknown)}; use query, expect, source, image")
        query, image, source, expect = entry.get("query"), entry.get("image"), entry.get("source"), entry.get("expect")
        if (query is None) == (image is None):
            raise ConfigError(f"quality.golden_queries: {where} needs exactly one of 'query' (a text) or 'image' (a path)")
        if query is not None and (not isinstance(query, str) or not query.strip()):
            raise ConfigError(f"quality.golden_queries: {where}: 'query' must be a non-empty text")
        if isinstance(expect, str):
            expect = [expect]
        if not isinstance(expect, list) or not expect or not all(isinstance(e, str) and path_problem(e) is None for e in expect):
            raise ConfigError(f"quality.golden_queries: {where}: 'expect' must list the relative paths of the files that answer it")
        if source is not None and not isinstance(source, str):
            raise ConfigError(f"quality.golden_queries: {where}: 'source' must be a source name")
        image_path = None
        if image is not None:
            if not isinstance(image, str):
                raise ConfigError(f"quality.golden_queries: {where}: 'image' must be a path")
            image_path = (path.parent / image).resolve()
            if not image_path.is_file():
                raise ConfigError(f"quality.golden_queries: {where}: image {image_path} does not exist")
        out.append(GoldenQuery(expect=tuple(expect), query=query, image=image_path, source=source))
    return out


SearchFn = Callable[[GoldenQuery, int], list[tuple[str, str]]]
"""Runs one golden query against one release: ``(source, relative path)`` of the top k hits, best first."""


def evaluate(release: str, queries: list[GoldenQuery], search: SearchFn, k: int) -> QualityReport:
    """recall@k, MRR and per-query hits of one release."""
    outcomes = []
    for q in queries:
        try:
            hits = search(q, k)
            error = None
        except KbReleaseError as exc:  # a query the release cannot answer (no such source, no image model) scores 0
            hits, error = [], str(exc).splitlines()[0]
        files = [f"{src}/{rel}" for src, rel in hits]
        found = [any(_same(e, src, rel) for src, rel in hits) for e in q.expect]
        rank = next((i for i, (src, rel) in enumerate(hits, 1) if any(_same(e, src, rel) for e in q.expect)), None)
        outcomes.append(QueryOutcome(q.label, list(q.expect), files, rank, sum(found) / len(q.expect), error))
    recall = sum(o.recall for o in outcomes) / len(outcomes)
    mrr = sum(1 / o.rank for o in outcomes if o.rank) / len(outcomes)
    return QualityReport(release, k, round(recall, 4), round(mrr, 4), outcomes)


def _same(expected: str, source: str, rel: str) -> bool:
    """An expected path names a hit by its relative path, or by ``source/relative path``."""
    return expected in (rel, f"{source}/{rel}")


@dataclass
class GateDecision:
    passed: bool
    reasons: list[str]
    lost: list[str]
    """Queries the live release answered (in its top k) and the candidate does not."""

    def asdict(self) -> dict[str, Any]:
        return asdict(self)


def gate(cfg: Config, candidate: QualityReport, live: QualityReport | None) -> GateDecision:
    """Whether ``candidate`` may go live: recall@k ≥ min_recall and no regression beyond max_regression."""
    q = cfg.quality
    reasons = []
    if candidate.recall < q.min_recall:
        reasons.append(f"recall@{candidate.k} {candidate.recall:.3f} is below quality.min_recall {q.min_recall:.3f}")
    lost: list[str] = []
    if live is not None:
        before = {o.query: o for o in live.queries}
        lost = [o.query for o in candidate.queries if o.rank is None and before.get(o.query) is not None and before[o.query].rank is not None]
        if live.recall - candidate.recall > q.max_regression:
            reasons.append(
                f"recall@{candidate.k} {candidate.recall:.3f} is {live.recall - candidate.recall:.3f} below the live release {live.release}'s "
                f"{live.recall:.3f} (quality.max_regression {q.max_regression:.3f})"
            )
    return GateDecision(not reasons, reasons, lost)


def refusal_message(name: str, quality: dict[str, Any]) -> str:
    """The message of a refused candidate: recall, the reasons, the queries that lost their answer, the fixes."""
    decision = quality.get("gate") or {}
    candidate = quality.get("candidate") or {}
    lines = [f"release {name!r} did not pass the quality gate and did not go live:"]
    lines += [f"  - {r}" for r in decision.get("reasons", [])]
    lost = decision.get("lost") or []
    missed = [o["query"] for o in candidate.get("queries", []) if o.get("rank") is None and o["query"] not in lost]
    if lost:
        lines.append("  queries that lost their answer: " + "; ".join(repr(x) for x in lost[:10]) + (" ..." if len(lost) > 10 else ""))
    if missed:
        lines.append("  queries not answered: " + "; ".join(repr(x) for x in missed[:10]) + (" ..." if len(missed) > 10 else ""))
    lines.append(f"  the release stays built: inspect it with `kbrelease show {name}`, compare with `kbrelease diff`, or override with `--skip-quality`")
    return "\n".join(lines)
