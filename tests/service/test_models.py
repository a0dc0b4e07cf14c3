"""The service's response models carry exactly the fields of the library's dataclasses they answer with."""

from __future__ import annotations

import dataclasses

from kbrelease.release.registry import SourceCounts
from kbrelease.release.search import Hit, SearchResult
from kbrelease.service.models import HitOut, SearchOut, SourceCountsOut


def _fields(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def test_hits_and_counts_mirror_their_dataclasses() -> None:
    assert set(HitOut.model_fields) == _fields(Hit) | {"thumbnail_url"}
    assert set(SourceCountsOut.model_fields) == _fields(SourceCounts) - {"failures", "skips"}  # the lists stay in the manifest


def test_a_search_answer_mirrors_the_librarys_result() -> None:
    timings = {"embed_seconds", "search_seconds"}
    assert set(SearchOut.model_fields) - {"query", "k", "source", "embed_ms", "search_ms", "took_ms"} == _fields(SearchResult) - timings
