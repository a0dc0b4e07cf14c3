"""Parallel builds: prepare, shards (in any order, concurrently, retried), finalize."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from kbrelease import KbRelease, load_config
from kbrelease.embedding.base import Vectors
from kbrelease.errors import ConfigError, EmbeddingUnavailable, ReleaseError

from helpers import write_config


class FailingOnce:
    """The real text embedder, failing (transiently) on its ``fail_at``-th call: a shard killed half way."""

    def __init__(self, real: Any, fail_at: int) -> None:
        self.real = real
        self.identity = real.identity
        self.max_tokens = real.max_tokens
        self.hf_tokenizer = real.hf_tokenizer
        self.calls = 0
        self.fail_at = fail_at

    def count_tokens(self, text: str) -> int:
        return int(self.real.count_tokens(text))

    def embed_texts(self, texts: list[str]) -> Vectors:
        self.calls += 1
        if self.calls == self.fail_at:
            raise EmbeddingUnavailable("endpoint went away (injected)")
        return self.real.embed_texts(texts)  # type: ignore[no-any-return]


def _ids(kb: KbRelease, release: str, source: str) -> list[str]:
    record = kb.release(release)
    rows = kb.store.client(record.database).query(record.sources[source].collection, filter="", output_fields=["id"], limit=10_000)
    return sorted(r["id"] for r in rows)


def test_shards_built_in_any_order_at_once_and_after_a_failure_equal_one_build(
    tmp_path: Path, corpus: Path, isolated_milvus: dict[str, str], text_embedder: Any, image_embedder: Any
) -> None:
    # No cache: the shards must embed again (else the half-way failure below could not happen).
    extra = "text:\n  batch_size: 1\ncache:\n  enabled: false\n"
    cfg = load_config(write_config(tmp_path, corpus, extra), env={}, overrides=isolated_milvus)
    with KbRelease(cfg, text_embedder=text_embedder, image_embedder=image_embedder) as kb:
        kb.sync()
        whole = kb.build("whole")

        plan = kb.prepare_build("parts", shard_files=2)
        assert plan.sources == {"docs": 2, "pictures": 3}
        assert kb.build_plan("parts").shards("pictures") == ["1/3", "2/3", "3/3"]

        # Shard 2/2 of the text source fails half way, as a killed pod would.
        flaky = FailingOnce(text_embedder, fail_at=2)
        with KbRelease(cfg, text_embedder=flaky, image_embedder=image_embedder) as broken, pytest.raises(EmbeddingUnavailable):
            broken.build_shard("parts", "docs", "2/2")
        with pytest.raises(ReleaseError, match=r"shard\(s\) not built yet: docs 1/2, docs 2/2, pictures 1/3"):
            kb.finalize_build("parts")

        # The image shards at the same time, from separate facades, as separate pods would.
        errors: list[BaseException] = []

        def shard(name: str) -> None:
            try:
                with KbRelease(cfg, text_embedder=text_embedder, image_embedder=image_embedder) as other:
                    other.build_shard("parts", "pictures", name)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=shard, args=(s,)) for s in ("3/3", "1/3", "2/3")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        kb.build_shard("parts", "docs", "2/2")  # the retry
        kb.build_shard("parts", "docs", "1/2")
        kb.build_shard("parts", "docs", "1/2")  # and once more: nothing changes
        parts = kb.finalize_build("parts")
        kb.verify("parts")

        assert parts.state == "built"
        for source in ("docs", "pictures"):
            assert _ids(kb, "parts", source) == _ids(kb, "whole", source)
            mine, theirs = parts.sources[source], whole.sources[source]
            assert (mine.files, mine.rows, mine.failed, mine.skipped) == (theirs.files, theirs.rows, theirs.failed, theirs.skipped)
        manifest = json.loads((cfg.workspace / "releases" / "parts" / "manifest.json").read_text(encoding="utf-8"))
        assert manifest["state"] == "verified"
        assert manifest["sources"]["docs"]["rows"] == whole.sources["docs"].rows


def test_shards_must_match_the_plan_of_a_prepared_release(tmp_path: Path, corpus: Path, project: Any) -> None:
    project.sync()
    with pytest.raises(ReleaseError, match=r"was not prepared for a parallel build; run `kbrelease build --release r1 --prepare` first"):
        project.build_shard("r1", "docs", "1/1")

    project.prepare_build("r1", shard_files=2)

    with pytest.raises(ConfigError, match=r"shard 1/3 does not match the plan of release 'r1': source 'docs' has 2 shard\(s\) \(1/2, 2/2\)"):
        project.build_shard("r1", "docs", "1/3")
    with pytest.raises(ConfigError, match=r"shard '3/2' is invalid"):
        project.build_shard("r1", "docs", "3/2")
    with pytest.raises(ConfigError, match=r"source 'nope' is not in the data index of release 'r1'"):
        project.build_shard("r1", "nope", "1/1")


def test_a_built_release_cannot_be_prepared_again(project: Any) -> None:
    project.publish(release="done")

    with pytest.raises(ReleaseError, match="already verified; releases are immutable"):
        project.prepare_build("done")
    with pytest.raises(ReleaseError, match="already verified"):
        project.finalize_build("done")


def test_build_options_are_checked_before_anything_runs(tmp_path: Path, corpus: Path) -> None:
    from kbrelease.cli import app

    cfg = str(write_config(tmp_path, corpus))
    runner = CliRunner()

    for args, message in [
        (["build", "--prepare", "--finalize", "-r", "x"], "use one of --prepare, --source, --finalize at a time"),
        (["build", "--shard", "1/2"], "--shard needs --source"),
        (["build", "--source", "docs"], "--source and --finalize need --release NAME (the prepared release)"),
        (["build", "--shard-files", "5"], "--shard-files goes with --prepare"),
    ]:
        result = runner.invoke(app, ["-c", cfg, *args])
        assert result.exit_code == 2, args
        assert result.stderr.strip() == f"error: {message}"
