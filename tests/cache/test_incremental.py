"""Incremental releases: a new release embeds only what changed, and equals a build from scratch."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from kbrelease import KbRelease, load_config
from kbrelease.embedding.base import EmbedderIdentity, Vectors

from helpers import write_config


class CountingEmbedder:
    """The real text embedder, counting the texts it is asked to embed."""

    def __init__(self, real: Any, identity: EmbedderIdentity | None = None) -> None:
        self.real = real
        self.identity = identity or real.identity
        self.max_tokens = real.max_tokens
        self.hf_tokenizer = real.hf_tokenizer
        self.texts: list[str] = []

    def count_tokens(self, text: str) -> int:
        return int(self.real.count_tokens(text))

    def embed_texts(self, texts: list[str]) -> Vectors:
        self.texts.extend(texts)
        return self.real.embed_texts(texts)  # type: ignore[no-any-return]


def _rows(kb: KbRelease, release: str, source: str = "docs") -> dict[tuple[str, int], tuple[str, Any]]:
    record = kb.release(release)
    client = kb.store.client(record.database)
    rows = client.query(record.sources[source].collection, filter="", output_fields=["file", "chunk_index", "text", "vector"], limit=16384)
    return {(r["file"], r["chunk_index"]): (r["text"], np.asarray(r["vector"], dtype=np.float32)) for r in rows}


def _paragraphs(n: int, seed: str) -> str:
    return "\n\n".join(f"Paragraph {i} of {seed}: the {seed} team keeps note {i} about topic {i * 7 % 13}." for i in range(n))


def test_an_incremental_release_equals_a_scratch_build_and_embeds_only_changes(
    tmp_path: Path, corpus: Path, isolated_milvus: dict[str, str], text_embedder: Any, image_embedder: Any
) -> None:
    text = corpus / "text"
    for i in range(4):
        (text / f"notes-{i}.txt").write_text(_paragraphs(12, f"team{i}"), encoding="utf-8")
    cfg = load_config(write_config(tmp_path, corpus, "text:\n  chunk_target_tokens: 16\n"), env={}, overrides=isolated_milvus)
    first = CountingEmbedder(text_embedder)
    with KbRelease(cfg, text_embedder=first, image_embedder=image_embedder) as kb:
        v1 = kb.publish().release
    assert v1.sources["docs"].embedded == len(set(first.texts)) > 0
    assert v1.sources["docs"].reused == 0

    # Edit one paragraph, add a file, delete a file.
    notes0 = (text / "notes-0.txt").read_text(encoding="utf-8")
    (text / "notes-0.txt").write_text(notes0.replace("keeps note 5 about", "now keeps a brand new note 5 about"), encoding="utf-8")
    (text / "notes-new.txt").write_text("A completely new file about the rooftop garden.", encoding="utf-8")
    (text / "notes-3.txt").unlink()
    second = CountingEmbedder(text_embedder)
    with KbRelease(cfg, text_embedder=second, image_embedder=image_embedder) as kb:
        v2 = kb.publish().release
        incremental = _rows(kb, "v2")
        old = _rows(kb, "v1")
        pictures = v2.sources["pictures"]

    changed = {t for t, _ in incremental.values()} - {t for t, _ in old.values()}
    assert sorted(set(second.texts)) == sorted(changed)  # only the changed chunks reach the model
    assert any("brand new note 5" in t for t in changed)
    assert any("rooftop garden" in t for t in changed)
    docs = v2.sources["docs"]
    assert (docs.embedded, docs.removed) == (len(changed), 1)
    assert docs.reused == docs.rows - docs.embedded
    assert (pictures.embedded, pictures.reused) == (0, pictures.rows)  # images untouched: not even decoded

    scratch_cfg = load_config(write_config(tmp_path, corpus, "text:\n  chunk_target_tokens: 16\ncache:\n  enabled: false\n"), env={}, overrides=isolated_milvus)
    with KbRelease(scratch_cfg, text_embedder=text_embedder, image_embedder=image_embedder) as kb:
        kb.build("scratch")
        kb.verify("scratch")
        scratch = _rows(kb, "scratch")
        query = "which note is about topic 9 for team1"
        assert [h.file for h in kb.search(query, k=5, release="v2")] == [h.file for h in kb.search(query, k=5, release="scratch")]
    assert incremental.keys() == scratch.keys()
    for key, (text_, vec) in scratch.items():
        assert incremental[key][0] == text_
        assert np.allclose(incremental[key][1], vec, atol=1e-5)


def test_a_model_or_chunking_change_misses_what_it_affects(
    tmp_path: Path, corpus: Path, isolated_milvus: dict[str, str], text_embedder: Any, image_embedder: Any
) -> None:
    cfg = load_config(write_config(tmp_path, corpus), env={}, overrides=isolated_milvus)
    with KbRelease(cfg, text_embedder=text_embedder, image_embedder=image_embedder) as kb:
        v1 = kb.publish().release

    other_model = CountingEmbedder(text_embedder, EmbedderIdentity("text", "all-MiniLM-L6-v2", 384, revision="finetuned-2"))
    with KbRelease(cfg, text_embedder=other_model, image_embedder=image_embedder) as kb:
        v2 = kb.publish().release
        v2_texts = {t for t, _ in _rows(kb, "v2").values()}
    assert v2.sources["docs"].embedded == len(set(other_model.texts)) == len(v2_texts)  # a new model misses everything
    assert v2.sources["pictures"].reused == v1.sources["pictures"].rows  # ...of its own kind only

    rechunked = load_config(write_config(tmp_path, corpus, "text:\n  chunk_target_tokens: 40\n"), env={}, overrides=isolated_milvus)
    counting = CountingEmbedder(text_embedder)
    with KbRelease(rechunked, text_embedder=counting, image_embedder=image_embedder) as kb:
        v3 = kb.publish().release.sources["docs"]
        new_texts = {t for t, _ in _rows(kb, "v3").values()}
        old_texts = {t for t, _ in _rows(kb, "v1").values()}
    assert new_texts != old_texts
    assert set(counting.texts) == new_texts - old_texts  # chunks whose text did not change are reused
    assert v3.embedded == len(new_texts - old_texts)
    assert v3.reused == v3.rows - v3.embedded > 0

    overlap = "text:\n  chunk_target_tokens: 40\n  chunk_overlap_tokens: 12\n"
    overlapping = load_config(write_config(tmp_path, corpus, overlap), env={}, overrides=isolated_milvus)
    with KbRelease(overlapping, text_embedder=text_embedder, image_embedder=image_embedder) as kb:
        v4 = kb.publish()  # the same files, chunked with an overlap: a new release, not "unchanged"
    assert not v4.unchanged and v4.release.chunking["overlap_tokens"] == 12


def test_kill_9_while_writing_the_cache_leaves_no_corrupt_entry(tmp_path: Path, corpus: Path, isolated_milvus: dict[str, str]) -> None:
    text = corpus / "text"
    for i in range(40):
        (text / f"bulk-{i:02d}.txt").write_text(_paragraphs(20, f"bulk{i}"), encoding="utf-8")
    milvus = "milvus:\n" + "".join(f"  {k.split('.')[1]}: {v}\n" for k, v in isolated_milvus.items())
    cfg_path = write_config(tmp_path, corpus, milvus + "text:\n  batch_size: 8\n  chunk_target_tokens: 16\n")
    cache = tmp_path / "ws" / "cache" / "embeddings.sqlite"
    proc = subprocess.Popen([sys.executable, "-m", "kbrelease.cli", "-c", str(cfg_path), "publish"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            if cache.exists() and _entries(cache) >= 40:
                break
            time.sleep(0.2)
        assert proc.poll() is None, "the build finished before it could be killed; make the corpus bigger"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)

    with sqlite3.connect(cache) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        for dim, blob in conn.execute("SELECT dim, vec FROM vectors"):
            assert len(blob) == 4 * dim
    rerun = subprocess.run([sys.executable, "-m", "kbrelease.cli", "-c", str(cfg_path), "publish", "--json"], capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    cfg = load_config(cfg_path, env={})
    (tmp_path / "clean").mkdir()
    no_cache = milvus + "text:\n  batch_size: 8\n  chunk_target_tokens: 16\ncache:\n  enabled: false\n"
    clean = load_config(write_config(tmp_path / "clean", corpus, no_cache), env={})
    with KbRelease(cfg) as kb:
        after_kill = _rows(kb, kb.status()["live"])
    with KbRelease(clean) as kb:
        kb.sync()
        kb.build("clean")
        reference = _rows(kb, "clean")
    assert after_kill.keys() == reference.keys()
    for key, (text_, vec) in reference.items():
        assert after_kill[key][0] == text_
        assert np.allclose(after_kill[key][1], vec, atol=1e-5)


def _entries(path: Path) -> int:
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM vectors").fetchone()[0])
    except sqlite3.Error:
        return 0


def test_cache_stats_and_prune(project: Any, corpus: Path) -> None:
    project.publish()
    first = project.cache_stats()
    assert first.entries == first.last_misses > 0
    assert first.hit_rate == 0.0

    (corpus / "text" / "it" / "vpn-setup.md").unlink()
    (corpus / "text" / "extra.txt").write_text("A new page about the rooftop garden.", encoding="utf-8")
    project.publish()
    second = project.cache_stats()
    assert second.last_build == "v2"
    assert second.last_misses == 1
    assert second.hit_rate is not None and second.hit_rate > 0.9

    dropped = project.cache_prune(keep_builds=1)  # the deleted file's chunks were used by v1 only
    assert dropped > 0
    assert project.cache_stats().entries == second.entries - dropped
    assert project.publish(force=True).release.sources["docs"].embedded == 0  # what v2 uses was kept
