"""Publish, search, republish, rollback, gc — on a real Milvus Lite server with real models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kbrelease import ReleaseError, VerificationError
from kbrelease.embedding.base import Vectors
from kbrelease.errors import QueryError


def test_publish_makes_a_verified_release_live_and_searchable(project: Any) -> None:
    info = project.publish()

    assert info.live == "v1"
    assert info.previous is None
    record = info.release
    assert record.state == "verified"
    assert record.database.endswith("v1")
    docs, pics = record.sources["docs"], record.sources["pictures"]
    assert (docs.files, docs.failed, docs.skipped) == (4, 0, 0)
    assert docs.rows == docs.embedded > docs.files  # several chunks per file
    assert (pics.files, pics.rows) == (6, 6)
    assert record.embedders["text"]["model"] == "all-MiniLM-L6-v2"
    assert record.embedders["text"]["dim"] == 384
    assert record.embedders["image"]["dim"] == 1280

    hits = project.search("how do I connect to the VPN from home", k=3)
    assert hits[0].file == "it/vpn-setup.md"
    assert hits[0].release == "v1"
    assert hits[0].heading.startswith("VPN Setup")
    assert 0 < hits[0].score <= 1


def test_image_search_finds_the_same_picture_first(project: Any, corpus: Path) -> None:
    project.publish()
    picture = sorted((corpus / "images" / "stripes").iterdir())[0]

    hits = project.search_image(picture, k=3)

    assert hits[0].file == f"stripes/{picture.name}"
    assert hits[0].score == pytest.approx(1.0, abs=1e-3)
    assert hits[1].file.startswith("stripes/")  # same category next
    # A path as a str, or the file's bytes, is the same query.
    assert project.search_image(str(picture), k=3) == hits
    assert project.search_image(picture.read_bytes(), k=3) == hits
    with pytest.raises(QueryError, match=r"image file .*missing\.png not found"):
        project.search_image(str(corpus / "missing.png"))


def test_republish_after_an_edit_switches_and_rollback_returns(project: Any, corpus: Path) -> None:
    project.publish()
    (corpus / "text" / "it" / "printer-jam.md").write_text(
        "# Printer jams\n\nWhen the third-floor printer jams, open tray B and pull the green lever.\n", encoding="utf-8"
    )

    second = project.publish()

    assert (second.live, second.previous) == ("v2", "v1")
    assert second.release.sources["docs"].files == 5
    assert project.search("the printer jammed, which lever?", k=1)[0].file == "it/printer-jam.md"
    assert project.search("the printer jammed, which lever?", k=1, release="v1")[0].file != "it/printer-jam.md"

    pointer = project.rollback()

    assert (pointer.live, pointer.previous) == ("v1", "v2")
    status = project.status()
    assert status["live"] == "v1"
    assert {r["name"]: r["state"] for r in status["releases"]} == {"v1": "live", "v2": "retired"}
    assert status["releases"][0]["sources"]["docs"]["files"] == 4


def test_only_verified_releases_go_live(project: Any) -> None:
    project.sync()
    record = project.build()

    assert record.state == "built"
    with pytest.raises(ReleaseError, match="only a verified release"):
        project.switch(record.name)
    assert project.status()["live"] is None


class ExplodingEmbedder:
    """Fault injection: the real text embedder, failing after ``ok_calls`` calls."""

    def __init__(self, real: Any, ok_calls: int) -> None:
        self.real = real
        self.identity = real.identity
        self.max_tokens = real.max_tokens
        self.hf_tokenizer = real.hf_tokenizer
        self.ok_calls = ok_calls
        self.calls = 0
        self.texts = 0

    def count_tokens(self, text: str) -> int:
        return int(self.real.count_tokens(text))

    def embed_texts(self, texts: list[str]) -> Vectors:
        self.calls += 1
        if self.calls > self.ok_calls:
            raise RuntimeError("simulated crash in the middle of a build")
        self.texts += len(texts)
        return self.real.embed_texts(texts)  # type: ignore[no-any-return]


def test_failed_build_leaves_live_untouched_and_rerun_resumes_without_duplicates(
    tmp_path: Path, corpus: Path, isolated_milvus: dict[str, str], text_embedder: Any, image_embedder: Any
) -> None:
    from kbrelease import KbRelease, load_config

    from helpers import write_config

    # No embedding cache here: this is about resuming the rows in Milvus.
    cfg = load_config(write_config(tmp_path, corpus, "text:\n  batch_size: 4\ncache:\n  enabled: false\n"), env={}, overrides=isolated_milvus)
    with KbRelease(cfg, text_embedder=text_embedder, image_embedder=image_embedder) as kb:
        kb.publish()
    for i in range(6):
        (corpus / "text" / f"extra-{i}.txt").write_text(f"Paragraph {i} about topic {i}.\n\n" * 3 * (i + 1), encoding="utf-8")

    crashing = ExplodingEmbedder(text_embedder, ok_calls=1)
    with KbRelease(cfg, text_embedder=crashing, image_embedder=image_embedder) as kb:
        kb.sync()
        with pytest.raises(RuntimeError, match="simulated crash"):
            kb.build("v2")
        assert kb.status()["live"] == "v1"
        assert kb.release("v2").state == "failed"

    resumed = ExplodingEmbedder(text_embedder, ok_calls=10**6)
    with KbRelease(cfg, text_embedder=resumed, image_embedder=image_embedder) as kb:
        assert kb.search("topic 3", k=1)[0].release == "v1"
        resumed.texts = 0
        record = kb.build("v2")
        kb.verify("v2")
        docs = record.sources["docs"]
        assert docs.files == 10
        assert resumed.texts < docs.rows  # the files finished before the crash were not embedded again
        assert kb.store.count(record.database, "docs") == docs.rows
        ids = kb.store.file_rows(record.database, "docs")
        assert all(have == n for have, n in ids.values())  # no partial files, no duplicates


def test_bad_inputs_are_reported_by_name_and_the_rest_builds(
    tmp_path: Path, corpus: Path, isolated_milvus: dict[str, str], text_embedder: Any, image_embedder: Any
) -> None:
    from kbrelease import KbRelease, load_config

    from helpers import write_config

    text, images = corpus / "text", corpus / "images"
    (text / "empty.txt").write_bytes(b"")
    (text / "binary.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    (text / "latin1 café ü.txt").write_bytes("Crème brûlée is served on Fridays.".encode("latin-1"))
    (text / "big.txt").write_bytes(b"word " * (300 * 1024))  # 1.5 MB, over a 1 MB limit below
    (images / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    from PIL import Image

    Image.new("L", (6000, 6000)).save(images / "bomb.png")  # 36 Mpx, over the 10 Mpx limit below
    extra = "text:\n  max_file_mb: 1\nimage:\n  max_pixels: 10000000\nmax_failed_share: 0.5\n"
    cfg = load_config(write_config(tmp_path, corpus, extra), env={}, overrides=isolated_milvus)
    with KbRelease(cfg, text_embedder=text_embedder, image_embedder=image_embedder) as kb:
        info = kb.publish()

    docs, pics = info.release.sources["docs"], info.release.sources["pictures"]
    failures = {f["file"]: f["reason"] for f in docs.failures + pics.failures}
    assert "binary content" in failures["binary.txt"]
    assert "over the 1 MB limit" in failures["big.txt"]
    assert "not a readable image" in failures["corrupt.jpg"] or "corrupt" in failures["corrupt.jpg"]
    assert "decompression bomb" in failures["bomb.png"]
    assert {s["file"]: s["reason"] for s in docs.skips} == {"empty.txt": "empty file"}
    assert (docs.failed, docs.skipped, pics.failed) == (2, 1, 2)
    assert info.live == "v1"
    hits = kb.search("crème brûlée on Fridays", k=1)
    assert hits[0].file == "latin1 café ü.txt"
    manifest = (tmp_path / "ws" / "releases" / "v1" / "RELEASE_INFO.txt").read_text(encoding="utf-8")
    assert "failed  binary.txt: binary content" in manifest


def test_failed_share_over_the_threshold_blocks_the_release(
    tmp_path: Path, corpus: Path, isolated_milvus: dict[str, str], text_embedder: Any, image_embedder: Any
) -> None:
    from kbrelease import KbRelease, load_config

    from helpers import write_config

    (corpus / "text" / "binary.txt").write_bytes(b"\x00\x01\x02" * 100)  # 1 of 5 files = 20% > 1%
    cfg = load_config(write_config(tmp_path, corpus), env={}, overrides=isolated_milvus)
    with KbRelease(cfg, text_embedder=text_embedder, image_embedder=image_embedder) as kb:
        with pytest.raises(VerificationError, match="over max_failed_share"):
            kb.publish()
        assert kb.status()["live"] is None
        assert kb.release("v1").state == "failed"


def test_gc_keeps_live_previous_and_newest(project: Any, corpus: Path) -> None:
    for i in range(4):
        (corpus / "text" / f"note-{i}.txt").write_text(f"Note number {i}.", encoding="utf-8")
        project.publish()
    project.rollback()  # live v3, previous v4

    dropped = project.gc(keep=1)

    assert dropped == ["v1", "v2"]
    states = {r["name"]: r["state"] for r in project.status()["releases"]}
    assert states == {"v1": "dropped", "v2": "dropped", "v3": "live", "v4": "retired"}
    prefix = project.cfg.milvus.db_prefix
    assert sorted(d for d in project.store.databases() if d.startswith(prefix)) == [f"{prefix}registry", f"{prefix}v3", f"{prefix}v4"]


def test_releases_are_immutable(project: Any) -> None:
    project.publish()
    with pytest.raises(ReleaseError, match="immutable"):
        project.build("v1")


def test_publish_without_changes_builds_nothing(project: Any) -> None:
    project.publish()

    again = project.publish()

    assert again.unchanged
    assert (again.live, again.release.name) == ("v1", "v1")
    assert [r.name for r in project.releases()] == ["v1"]
    forced = project.publish(force=True)
    assert (forced.unchanged, forced.live, forced.previous) == (False, "v2", "v1")


def test_publish_with_nothing_to_do_loads_no_model(project: Any) -> None:
    from kbrelease import KbRelease

    project.publish()
    with KbRelease(project.cfg) as fresh:  # a new process's view: no model handed in
        again = fresh.publish()
        assert again.unchanged
        assert (fresh.models.loaded_text, fresh.models.loaded_image) == (None, None)


def test_with_a_verified_release_waiting_the_advice_is_a_switch(project: Any) -> None:
    """After a build (or a promote) nothing is live yet: the fix is a switch, not another publish."""
    from kbrelease.errors import NoLiveRelease

    project.sync()
    project.build()
    project.verify("v1")

    with pytest.raises(NoLiveRelease, match=r"release 'v1' is verified: run `kbrelease switch v1`"):
        project.search("vpn")


def test_collections_packages_and_build_rows_share_one_row_schema(project: Any) -> None:
    from kbrelease.package.format import ROW_FIELDS as PACKAGE_FIELDS
    from kbrelease.store.schema import ROW_FIELDS

    record = project.publish().release
    for counts in record.sources.values():
        described = project.store.client(record.database).describe_collection(counts.collection)
        assert tuple(f["name"] for f in described["fields"]) == ROW_FIELDS
        first = next(project.store.iter_rows(record.database, counts.collection, list(ROW_FIELDS)))[0]
        assert set(first) == set(ROW_FIELDS)
    assert PACKAGE_FIELDS is ROW_FIELDS
