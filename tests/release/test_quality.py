"""The quality gate: a release goes live only if it answers the golden queries as well as the live one; diff and history."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from kbrelease import ConfigError, KbRelease, load_config
from kbrelease.cli import app
from kbrelease.release.quality import QualityGateRefused, load_golden_queries

from helpers import write_config

GOLDEN = """\
- query: how do I connect to the VPN from home?
  expect: [it/vpn-setup.md]
- query: when do I have to change my password?
  expect: [docs/it/password-rotation.md]     # source/path works too
- query: where do we gather during a fire drill?
  expect: [facilities/fire-drill.md]
  source: docs
- image: probe.png
  expect: [stripes/stripes-01.png]
"""


@pytest.fixture
def gated(tmp_path: Path, corpus: Path, isolated_milvus: dict[str, str], text_embedder: Any, image_embedder: Any) -> Any:
    """A project with golden queries (three texts, one image) in its kbrelease.yaml."""
    (tmp_path / "golden.yaml").write_text(GOLDEN, encoding="utf-8")
    (tmp_path / "probe.png").write_bytes((corpus / "images" / "stripes" / "stripes-01.png").read_bytes())
    milvus = "milvus:\n" + "".join(f"  {k.split('.')[1]}: {v}\n" for k, v in isolated_milvus.items())
    cfg_path = write_config(tmp_path, corpus, milvus + "quality:\n  golden_queries: golden.yaml\n")
    with KbRelease(load_config(cfg_path, env={}), text_embedder=text_embedder, image_embedder=image_embedder) as kb:
        yield kb


def test_verify_records_recall_and_mrr_in_the_manifest(gated: Any) -> None:
    info = gated.publish()

    quality = info.release.verification["quality"]
    assert quality["candidate"]["recall"] == 1.0
    assert quality["candidate"]["k"] == 5
    assert [q["rank"] for q in quality["candidate"]["queries"]] == [1, 1, 1, 1]
    assert quality["live"] is None and quality["gate"]["passed"]
    assert gated.status()["releases"][0]["quality"] == {"k": 5, "recall": 1.0, "mrr": 1.0, "gate_passed": True}
    text = (Path(gated.cfg.workspace) / "releases" / "v1" / "RELEASE_INFO.txt").read_text()
    assert "quality:         recall@5 1.000, MRR 1.000 on 4 golden queries" in text


def test_a_release_that_lost_answers_does_not_go_live(gated: Any, corpus: Path) -> None:
    gated.publish()
    (corpus / "text" / "it" / "vpn-setup.md").unlink()
    (corpus / "text" / "facilities" / "fire-drill.md").unlink()

    with pytest.raises(QualityGateRefused) as refused:
        gated.publish()

    message = str(refused.value)
    assert "recall@5 0.500 is below quality.min_recall 0.900" in message
    assert "is 0.500 below the live release v1's 1.000" in message
    assert "'how do I connect to the VPN from home?'" in message and "--skip-quality" in message
    assert gated.registry.pointer().live == "v1"  # live did not change
    candidate = gated.release("v2")
    assert candidate.state == "verified"  # built and inspectable
    assert candidate.verification["quality"]["live"]["recall"] == 1.0
    with pytest.raises(QualityGateRefused):
        gated.switch("v2")

    gated.switch("v2", skip_quality=True, reason="the VPN page moved to the wiki")

    assert gated.registry.pointer().live == "v2"
    events = gated.history()
    assert [(e["action"], e["from"], e["to"]) for e in events] == [
        ("switch", None, "v1"),
        ("refused", "v1", "v2"),
        ("refused", "v1", "v2"),
        ("switch", "v1", "v2"),
    ]
    assert events[-1]["skip_quality"] is True and events[-1]["reason"] == "the VPN page moved to the wiki"
    assert events[-1]["recall"] == 0.5 and "@" in events[-1]["by"]


def test_diff_names_files_chunks_and_changed_queries(gated: Any, corpus: Path) -> None:
    gated.publish()
    (corpus / "text" / "it" / "vpn-setup.md").unlink()
    (corpus / "text" / "new.md").write_text("# Bicycles\n\nWhere to park a bicycle at the office.\n", encoding="utf-8")
    policy = corpus / "text" / "policies" / "gym-partnership.txt"
    policy.write_text(policy.read_text() + "\n\nThe partnership now includes the swimming pool.\n", encoding="utf-8")
    gated.publish(skip_quality=True)

    d = gated.diff("v1", "v2", gated.golden_queries())

    docs = d["sources"]["docs"]
    assert docs["files"]["added"] == ["new.md"]
    assert docs["files"]["removed"] == ["it/vpn-setup.md"]
    assert docs["files"]["changed"] == ["policies/gym-partnership.txt"]
    assert docs["files"]["unchanged"] == 2
    chunks = docs["chunks"]
    assert chunks["added"] >= 2 and chunks["removed"] >= 1 and chunks["reused"] >= 2
    assert chunks["after"] == chunks["before"] + chunks["added"] - chunks["removed"]
    assert d["sources"]["pictures"]["chunks"] == {"added": 0, "removed": 0, "reused": 6, "before": 6, "after": 6}
    vpn = next(q for q in d["queries"] if q["query"].startswith("how do I connect"))
    assert vpn["rank_before"] == 1 and vpn["rank_after"] is None
    assert d["quality"] == {"k": 5, "recall_before": 1.0, "recall_after": 0.75}


def test_cli_diff_and_history(gated: Any, tmp_path: Path, corpus: Path) -> None:
    gated.publish()
    (corpus / "text" / "new.md").write_text("# Bicycles\n\nWhere to park a bicycle at the office.\n", encoding="utf-8")
    gated.publish()
    cfg = str(tmp_path / "kbrelease.yaml")
    runner = CliRunner()

    out = runner.invoke(app, ["-c", cfg, "diff", "v1", "v2", "--json"])
    assert out.exit_code == 0, out.output
    d = json.loads(out.stdout)
    assert set(d) >= {"sources", "queries"}
    assert d["sources"]["docs"]["files"] == {"added": ["new.md"], "removed": [], "changed": [], "unchanged": 4}
    text = runner.invoke(app, ["-c", cfg, "diff", "v1", "v2", "--no-queries"]).stdout
    assert "docs: files +1 -0 ~0 (4 unchanged)" in text and "    + new.md" in text

    against_live = json.loads(runner.invoke(app, ["-c", cfg, "diff", "v1", "--no-queries", "--json"]).stdout)
    assert (against_live["from"], against_live["to"]) == ("v2", "v1")  # one name: compared with the live release
    assert against_live["sources"]["docs"]["files"]["removed"] == ["new.md"]

    rolled = runner.invoke(app, ["-c", cfg, "rollback", "--reason", "testing the history"])
    assert rolled.exit_code == 0, rolled.output
    history = runner.invoke(app, ["-c", cfg, "history"]).stdout.splitlines()
    assert len(history) == 3
    assert "rollback v2 → v1" in history[-1] and history[-1].endswith("— testing the history")
    assert "switch   v1 → v2" in history[1] and "recall 1.000" in history[1]


def test_bad_golden_files_name_the_entry_and_the_fix(tmp_path: Path) -> None:
    cases = {
        "a.yaml": ("- query: x\n  expect: [../../etc/passwd]\n", r"entry #1: 'expect' must list the relative paths"),
        "b.yaml": ("- expect: [a.md]\n", "needs exactly one of 'query'"),
        "c.yaml": ("- query: x\n  expect: [a.md]\n  sauce: docs\n", r"unknown keys \['sauce'\]"),
        "d.jsonl": ('{"query": "x", "expect": ["a.md"]}\nnot json\n', r"d\.jsonl:2 is not JSON"),
        "e.yaml": ("[]\n", "has no queries"),
    }
    for name, (text, match) in cases.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
        with pytest.raises(ConfigError, match=match):
            load_golden_queries(tmp_path / name)
    (tmp_path / "ok.jsonl").write_text('{"query": "x", "expect": "a.md"}\n', encoding="utf-8")
    assert load_golden_queries(tmp_path / "ok.jsonl")[0].expect == ("a.md",)
