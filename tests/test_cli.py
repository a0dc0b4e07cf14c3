"""The CLI end to end: publish, search --json, status --json, errors as one line."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from kbrelease.cli import app

from helpers import write_config

runner = CliRunner()


def _cli_config(tmp_path: Path, corpus: Path, isolated_milvus: dict[str, str]) -> Path:
    milvus = "milvus:\n" + "".join(f"  {k.split('.')[1]}: {v}\n" for k, v in isolated_milvus.items())
    return write_config(tmp_path, corpus, milvus)


def test_publish_search_status_rollback(tmp_path: Path, corpus: Path, isolated_milvus: dict[str, str]) -> None:
    cfg = str(_cli_config(tmp_path, corpus, isolated_milvus))

    published = runner.invoke(app, ["-c", cfg, "publish", "--json"])
    assert published.exit_code == 0, published.output
    assert json.loads(published.stdout)["live"] == "v1"

    found = runner.invoke(app, ["-c", cfg, "search", "how do I connect to the VPN from home", "--k", "2", "--json"])
    assert found.exit_code == 0, found.output
    hits = json.loads(found.stdout)
    assert len(hits) == 2
    assert hits[0]["file"] == "it/vpn-setup.md"
    assert set(hits[0]) >= {"score", "file", "source", "release", "heading", "text"}

    image = sorted((corpus / "images" / "checkerboard").iterdir())[0]
    by_image = runner.invoke(app, ["-c", cfg, "search", "--image", str(image), "--json"])
    assert json.loads(by_image.stdout)[0]["file"] == f"checkerboard/{image.name}"

    (corpus / "text" / "new.md").write_text("# New\n\nA brand new page about bicycles.\n", encoding="utf-8")
    assert runner.invoke(app, ["-c", cfg, "publish"]).exit_code == 0
    status = json.loads(runner.invoke(app, ["-c", cfg, "status", "--json"]).stdout)
    assert status["live"] == "v2"
    assert [(r["name"], r["state"]) for r in status["releases"]] == [("v1", "retired"), ("v2", "live")]
    assert status["releases"][1]["sources"]["docs"]["files"] == 5

    rolled = runner.invoke(app, ["-c", cfg, "rollback"])
    assert rolled.exit_code == 0
    assert rolled.stdout.strip() == "rolled back; live: v1 (previous: v2)"

    text = runner.invoke(app, ["-c", cfg, "status"])
    assert "live: v1" in text.stdout
    assert "v2         retired" in text.stdout


def test_errors_are_one_line_with_an_exit_code(tmp_path: Path) -> None:
    bad = tmp_path / "kbrelease.yaml"
    bad.write_text("sources:\n  - {name: docs, path: ., modality: video}\n", encoding="utf-8")

    result = runner.invoke(app, ["-c", str(bad), "status"])

    assert result.exit_code == 2
    assert result.stderr.startswith("error: invalid configuration")
    assert "sources.0.modality" in result.stderr
    assert "Traceback" not in result.output


def test_unreachable_milvus_is_a_clear_message(tmp_path: Path, corpus: Path) -> None:
    from servers import free_port

    cfg = write_config(tmp_path, corpus, f"milvus:\n  uri: http://127.0.0.1:{free_port()}\n")

    result = runner.invoke(app, ["-c", str(cfg), "status"])

    assert result.exit_code == 75  # transient (EX_TEMPFAIL): worth retrying, and the Argo steps retry on it
    assert "cannot reach Milvus at http://127.0.0.1:" in result.stderr
    assert "check MILVUS_URI" in result.stderr


def test_init_writes_a_config(tmp_path: Path) -> None:
    result = runner.invoke(app, ["init", str(tmp_path / "kbrelease.yaml")])
    assert result.exit_code == 0
    assert (tmp_path / "kbrelease.yaml").read_text(encoding="utf-8").startswith("# kbrelease configuration")


def test_show_prints_the_state_status_shows_and_gc_says_what_it_kept(tmp_path: Path, corpus: Path, isolated_milvus: dict[str, str]) -> None:
    cfg = str(_cli_config(tmp_path, corpus, isolated_milvus))
    assert runner.invoke(app, ["-c", cfg, "publish"]).exit_code == 0
    (corpus / "text" / "new.md").write_text("# New\n\nA brand new page about bicycles.\n", encoding="utf-8")
    assert runner.invoke(app, ["-c", cfg, "publish"]).exit_code == 0

    assert "state:           retired" in runner.invoke(app, ["-c", cfg, "show", "v1"]).stdout
    shown = json.loads(runner.invoke(app, ["-c", cfg, "show", "v2", "--json"]).stdout)
    assert (shown["state"], shown["stored_state"]) == ("live", "verified")
    gc = runner.invoke(app, ["-c", cfg, "gc", "--keep", "1"])
    assert gc.exit_code == 0, gc.output
    assert "dropped: nothing" in gc.stdout
    assert "kept: v1 (previous (the rollback target)), v2 (live)" in gc.stdout
