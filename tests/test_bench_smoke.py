"""Every script in bench/ runs its ``--smoke`` mode: a rename in kbrelease fails here, not in a benchmark nobody ran.

Each script runs as its own process, as a user runs it (``python bench/x.py --smoke``), with the
repository's ``src`` and ``bench`` on PYTHONPATH. The scripts that take ``--milvus-uri`` share the
session's Milvus Lite server (each smoke run uses databases of its own); the report's shape is
checked through ``--json-out`` (or stdout where a script has no JSON report). What needs a package
kbrelease does not install (LlamaIndex, matplotlib) is skipped inside the script, which says why;
the test then checks the rest of the report and skips with that reason.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
TIMEOUT_S = 300
#: What libraries leave in the temp dir on purpose: torch's compile cache (``torchinductor_<user>``).
# torch's compile cache; onnxruntime's telemetry session file, written at `import onnxruntime` whatever the caller
# does (kbrelease switches its events off: kbrelease.embedding.onnx_text).
THIRD_PARTY_CACHES = ("torchinductor_", ".ses")


def run_smoke(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python bench/<script> --smoke ARGS`` in ``cwd``; fails the test with the script's output unless it exits 0
    and leaves its temporary folders behind (its TMPDIR is a folder of its own, empty again afterwards) or writes
    into ``cwd`` beyond what ARGS name."""
    tmp = cwd / "tmpdir"
    tmp.mkdir()
    before = set(cwd.iterdir())
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(BENCH)]),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TMPDIR": str(tmp),
    }
    done = subprocess.run(
        [sys.executable, str(BENCH / script), "--smoke", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT_S, check=False
    )
    assert done.returncode == 0, f"{script} --smoke exited {done.returncode}\n--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-5000:]}"
    left = sorted(p.name for p in tmp.iterdir() if not p.name.startswith(THIRD_PARTY_CACHES))
    assert left == [], f"{script} --smoke left these in its temp dir"
    named = {cwd / Path(a).name for a in args if Path(a).parent == cwd}
    assert set(cwd.iterdir()) - before <= named, f"{script} --smoke wrote into the working directory"
    return done


def smoke_report(script: str, tmp_path: Path, *args: str) -> Any:
    """Run ``script --smoke ARGS --json-out FILE``; the report it wrote."""
    out = tmp_path / "report.json"
    run_smoke(script, *args, "--json-out", str(out), cwd=tmp_path)
    return json.loads(out.read_text(encoding="utf-8"))


def test_every_script_is_covered() -> None:
    """A new script in bench/ gets a smoke test here too."""
    covered = {
        "make_corpus.py",
        "build_bench.py",
        "incremental_bench.py",
        "embed_bench.py",
        "search_bench.py",
        "engine_bench.py",
        "hybrid_bench.py",
        "lite_search_profile.py",
        "dataindex_bench.py",
        "package_bench.py",
        "serve_bench.py",
        "workflow_bench.py",
        "quantize_bench.py",
        "padding_bench.py",
        "llamaindex_bench.py",
        "vs_llamaindex.py",
        "plot.py",
        "formats_bench.py",
    }
    scripts = {p.name for p in BENCH.glob("*.py") if not p.name.startswith("_")}
    assert scripts == covered


def test_padding_bench(tmp_path: Path) -> None:
    report = smoke_report("padding_bench.py", tmp_path)
    computed = report["computed_tokens"]
    assert report["chunks"] > 0 and report["tokens"] > 0
    # Sorting never computes more than file order, and never less than the real tokens.
    assert report["tokens"] <= computed["whole source"] <= computed["window 2048"] <= computed["window 256"] <= computed["file order"]


def test_make_corpus(tmp_path: Path) -> None:
    summary = json.loads(run_smoke("make_corpus.py", cwd=tmp_path).stdout)
    assert summary["mode"] == "generate"
    assert summary["files"] > 0 and summary["images"] > 0
    assert summary["smoke"]["mutated_files"] > 0 and summary["smoke"]["changed_files"] > 0


def test_build_bench(tmp_path: Path, lite_server: str) -> None:
    report = smoke_report("build_bench.py", tmp_path, "--milvus-uri", lite_server)
    assert set(report["sources"]) == {"docs", "pictures"}
    docs = report["sources"]["docs"]
    assert docs["rows"] > 0 and docs["embedded"] > 0
    # The instrumentation reached kbrelease's own code: the store, the workers and the model were timed.
    assert docs["timers"]["store.upsert"]["calls"] > 0
    assert docs["timers"]["embed"]["calls"] > 0
    assert docs["timers"]["prepare_wall_in_workers"]["calls"] > 0
    assert {"embed", "wait_for_prepare", "store.upsert", "store.setup", "store.seal+count"} <= set(docs["breakdown_seconds"])
    assert report["by_phase"] and report["publish_seconds"] > 0


def test_incremental_bench(tmp_path: Path, lite_server: str) -> None:
    report = smoke_report("incremental_bench.py", tmp_path, "--milvus-uri", lite_server)
    assert report["full"]["sources"]["docs"]["rows"] > 0
    assert report["change"]["changed_files"] > 0
    assert report["incremental"]["sources"]["docs"]["reused"] > 0
    assert report["check"]["docs"]["match"] is True  # texts embedded == new chunk texts
    assert "ratio_incremental_over_full" in report


def test_embed_bench(tmp_path: Path) -> None:
    report = smoke_report("embed_bench.py", tmp_path)
    assert report["text"]["chunks"] > 0 and report["text"]["runs"][0]["chunks_per_s"] > 0
    assert report["images"]["images"] > 0 and report["images"]["images_per_s"] > 0


def test_search_bench(tmp_path: Path, lite_server: str) -> None:
    results = smoke_report("search_bench.py", tmp_path, "--milvus-uri", lite_server)
    assert [r["engine"] for r in results] == ["server", "direct"]
    for r in results:
        assert r["top1_self_hit"] is True
        assert r["p50_ms"] > 0 and r["insert_rows_per_s"] > 0


def test_engine_bench(tmp_path: Path) -> None:
    report = smoke_report("engine_bench.py", tmp_path)
    (result,) = report["results"]
    assert result["engine"] == "lite" and result["rows"] == 300 and result["insert_rows_per_s"] > 0
    runs = {r["index"]: r for r in result["runs"]}
    assert set(runs) == {"HNSW", "FLAT"}
    assert runs["FLAT"]["recall@10"] == 1.0  # exact search agrees with numpy's
    assert runs["HNSW"]["p50_ms_c8"] > 0 and runs["HNSW"]["server_rss_mb"] > 0
    assert result["recommended"] is not None and "| lite | 300 |" in report["table"]


def test_hybrid_bench(tmp_path: Path, lite_server: str) -> None:
    report = smoke_report("hybrid_bench.py", tmp_path, "--milvus-uri", lite_server)
    assert set(report["corpora"]) == {"alpha", "beta"}
    for corpus in report["corpora"].values():
        assert corpus["chunks"] > 0
        assert set(corpus["summary"]["all"]) == {"dense", "hybrid", "sparse"}
        assert corpus["summary"]["keyword"]["sparse"]["recall@5"] == 1.0  # the exact term is found by BM25
    assert "| alpha | keyword (1) | hybrid |" in report["table_md"]
    assert set(report["verdict"]["hybrid_wins"]) == {"alpha/keyword", "alpha/question", "beta/keyword", "beta/question"}


def test_lite_search_profile(tmp_path: Path) -> None:
    out = tmp_path / "profile.txt"
    run_smoke("lite_search_profile.py", "--out", str(out), cwd=tmp_path)
    text = out.read_text()
    assert "search p50" in text and "function calls" in text


def test_formats_bench(tmp_path: Path) -> None:
    report = smoke_report("formats_bench.py", tmp_path)
    formats = {r["format"] for r in report["results"]}
    assert {"pdf", "html", "restructuredtext", "asciidoc"} <= formats
    pdf = next(r for r in report["results"] if r["format"] == "pdf")
    assert pdf["pages_with_text"] == 2 and pdf["pages_per_s"] > 0 and pdf["notes"]


def test_dataindex_bench(tmp_path: Path) -> None:
    report = smoke_report("dataindex_bench.py", tmp_path)
    assert report["meta"]["records"] == 200
    pages = [r for r in report["results"] if "p50_ms" in r]
    streams = {r["format"] for r in report["results"] if r["measure"] == "stream"}
    assert len(pages) == 4
    assert streams == {"ndjson", "arrow", "client.stream_data"}


def test_package_bench(tmp_path: Path, lite_server: str) -> None:
    report = smoke_report("package_bench.py", tmp_path, "--milvus-uri", lite_server)
    assert report["export plain"]["rows"] == report["rows"] == 20
    assert report["import lite → lite"]["state"] == "verified"
    assert report["promote lite → lite"]["state"] == "verified"
    assert report["export plain (kbrelease CLI process)"]["seconds"] > 0
    assert report["import of the same release"]["state"] == "verified"
    assert set(report["import speed-up over rebuild"]) == {"wall", "cpu"}


def test_serve_bench(tmp_path: Path, lite_server: str) -> None:
    results = smoke_report("serve_bench.py", tmp_path, "--milvus-uri", lite_server)
    overhead = {r["side"]: r for r in results if r["measure"] == "overhead"}
    assert set(overhead) == {"direct", "service"}
    assert all(r["failed"] == 0 and r["requests"] > 0 for r in overhead.values())
    assert "service_rest_p50_ms" in overhead["service"]["extra"]
    (switch,) = [r for r in results if r["measure"] == "switch_under_load"]
    assert switch["failed"] == 0 and switch["requests"] > 0
    (release,) = [r for r in results if r["measure"] == "release"]
    assert release["engine"] == "server" and release["publish_v1_s"] > 0 and release["switch_s"] > 0
    (memory,) = [r for r in results if r["measure"] == "memory"]
    assert memory["store_rss_mb"] is None  # a server someone else runs: not ours to measure
    assert len(memory["service_rss_mb"]) == 1 and memory["service_rss_mb"][0] > 0


def test_serve_bench_managed_lite(tmp_path: Path) -> None:
    """``--engine lite`` without a URI: kbrelease starts (and stops) the engine itself, and its RSS is reported."""
    results = smoke_report("serve_bench.py", tmp_path, "--engine", "lite", "--service-only", "--skip-switch")
    assert [r["side"] for r in results if r["measure"] == "overhead"] == ["service"]
    assert not [r for r in results if r["measure"] == "switch_under_load"]
    (release,) = [r for r in results if r["measure"] == "release"]
    assert release["engine"] == "lite" and release["index"]["index_type"] == "IVF_FLAT"
    (memory,) = [r for r in results if r["measure"] == "memory"]
    assert memory["store_rss_mb"] > 0 and memory["service_rss_mb"][0] > 0


def test_workflow_bench(tmp_path: Path, lite_server: str) -> None:
    report = smoke_report("workflow_bench.py", tmp_path, "--milvus-uri", lite_server)
    assert report["workflow_succeeded"] is True
    assert report["publish_seconds"] > 0
    assert any(step.startswith("build-docs") for step in report["steps"])


def test_quantize_bench(tmp_path: Path) -> None:
    report = smoke_report("quantize_bench.py", tmp_path)
    assert report["variants"] == ["torch:none", "torch:int8"] and report["chunks"] > 0
    assert {p["variant"] for p in report["passes"]} == {"torch:none", "torch:int8"}
    assert 0.5 < report["variants_table"]["torch:int8"]["cosine_vs_fp32"]["mean"] <= 1.0


def test_vs_llamaindex(tmp_path: Path, lite_server: str) -> None:
    """``kbrelease`` on a tiny corpus and ``table`` of it; ``compare`` needs a LlamaIndex virtualenv and is not run."""
    out = tmp_path / "report.json"
    done = run_smoke("vs_llamaindex.py", "--milvus-uri", lite_server, "--json-out", str(out), cwd=tmp_path)
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["system"] == "kbrelease"
    assert report["full"]["chunks"] > 0
    assert set(report["recall"]) == {"sentence", "words"}
    assert "| run | system |" in done.stdout and "LlamaIndex (batch" in done.stdout


def test_vs_llamaindex_prepares_a_real_corpus_and_refuses_a_query_its_file_cannot_answer(tmp_path: Path) -> None:
    """``prepare`` copies the files a hand-written queries file names, and checks each query's passage is in its file."""
    spec = {
        "corpus": "the example corpus",
        "source_path": str(REPO / "examples" / "corpus" / "text"),
        "source_globs": ["it/*.md"],
        "queries": [{"kind": "question", "q": "Which VPN do we use?", "file": "it/vpn-setup.md", "passage": "We use WireGuard"}],
    }
    good = tmp_path / "good.json"
    good.write_text(json.dumps(spec), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(BENCH)])}
    command = [sys.executable, str(BENCH / "vs_llamaindex.py"), "prepare", "--queries-file"]
    done = subprocess.run([*command, str(good), "--out", str(tmp_path / "c")], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "c" / "text" / "it" / "vpn-setup.md").is_file() and json.loads(done.stdout)["files"] >= 1
    spec["queries"][0]["passage"] = "We use OpenVPN"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(spec), encoding="utf-8")
    done = subprocess.run([*command, str(bad), "--out", str(tmp_path / "d")], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode != 0 and "does not hold its passage" in done.stderr


def test_llamaindex_bench(tmp_path: Path) -> None:
    report = smoke_report("llamaindex_bench.py", tmp_path)
    assert report["system"] == "llamaindex"
    assert set(report["recall"]) == {"sentence", "words"}
    assert {"wall_seconds", "cpu_seconds", "load"} <= set(report["full"])
    if report.get("skipped"):
        pytest.skip(f"the LlamaIndex run itself: {report['skipped']}")
    assert report["full"]["chunks"] > 0


def test_llamaindex_side_needs_only_the_standard_library() -> None:
    """llamaindex_bench.py runs in LlamaIndex's own virtualenv: it and what it imports must not need kbrelease, numpy or PyYAML."""
    code = f"import sys; sys.path[:0] = [{str(BENCH)!r}]; import llamaindex_bench, make_corpus, _common"
    done = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, timeout=60, check=False, env={"PATH": os.environ["PATH"]})
    assert done.returncode == 0, done.stderr


def test_plot(tmp_path: Path) -> None:
    report = json.loads(run_smoke("plot.py", cwd=tmp_path).stdout)
    if report["skipped"]:
        assert report["plots"] == []
        pytest.skip(report["skipped"])
    assert report["plots"] == ["latency.png", "peaks.png", "rss.png"]
