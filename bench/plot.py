"""Plots for docs/benchmarks.md from the outputs of build_bench.py and search_bench.py.

Needs matplotlib, which kbrelease does not depend on: ``pip install matplotlib``.

Examples::

    python bench/plot.py rss /tmp/build-10k-rss.csv --out docs/img/build-rss-10k.png --title "publish of 10,000 paragraphs + 500 images"
    python bench/plot.py peaks /tmp/build-2k5.json /tmp/build-10k.json --out docs/img/build-peak-rss.png
    python bench/plot.py latency /tmp/search-ml3.json /tmp/search-ml25.json --out docs/img/search-latency.png
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _common import add_smoke, emit  # bench/ is the script's folder, first on sys.path

MISSING = "matplotlib is not installed (pip install matplotlib; not a kbrelease dependency): no plot drawn"

ENGINE_LABELS = {
    "server": "Milvus Lite 3.2.2, server\n(kbrelease default)",
    "direct": "Milvus Lite 3.2.2, direct\n(MilvusClient(file.db))",
    "lite25": "Milvus Lite 2.5.1 (C++)\n(MilvusClient(file.db))",
}
PHASE_COLORS = ["#f2f2f2", "#e3eefa", "#fdf0dc", "#e6f5e6", "#f5e6f5", "#eeeeee"]


def pyplot() -> Any:
    """matplotlib.pyplot with the Agg backend (imported here: the rest of the script runs without matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after the backend is chosen

    return plt


def plot_rss(csv_path: Path, out: Path, title: str) -> None:
    plt = pyplot()
    with csv_path.open() as fh:
        rows = list(csv.DictReader(fh))
    t = [float(r["seconds"]) for r in rows]
    py = [float(r["python_rss_mb"]) for r in rows]
    server = [float(r["server_rss_mb"]) if r["server_rss_mb"] else float("nan") for r in rows]
    items = [int(r["embedded_items"]) for r in rows]
    fig, ax = plt.subplots(figsize=(10, 5), dpi=110)
    # Shade the phases (consecutive samples with the same phase).
    start, color = 0, 0
    for i in range(1, len(rows) + 1):
        if i == len(rows) or rows[i]["phase"] != rows[start]["phase"]:
            end = t[i] if i < len(rows) else t[-1]
            ax.axvspan(t[start], end, color=PHASE_COLORS[color % len(PHASE_COLORS)], zorder=0)
            if end - t[start] > 0.06 * (t[-1] - t[0]):
                ax.text((t[start] + end) / 2, 0.02, rows[start]["phase"], ha="center", va="bottom", fontsize=8, transform=ax.get_xaxis_transform())
            start, color = i, color + 1
    ax.plot(t, py, label="kbrelease process RSS", color="#1f77b4", linewidth=2)
    ax.plot(t, server, label="Milvus Lite server RSS", color="#d62728", linewidth=2)
    ax.set_xlabel("seconds since start")
    ax.set_ylabel("RSS (MB)")
    ax.set_ylim(bottom=0)
    ax2 = ax.twinx()
    ax2.plot(t, items, label="items embedded (right axis)", color="#2ca02c", linestyle="--")
    ax2.set_ylabel("chunks + images embedded")
    ax2.set_ylim(bottom=0)
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="upper left", fontsize=9)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def plot_peaks(paths: Sequence[Path], out: Path, names: Sequence[str] | None = None) -> None:
    plt = pyplot()
    runs = [json.loads(p.read_text()) for p in paths]
    names = list(names) if names else [r["label"] for r in runs]
    labels = [f"{name}\n({sum(s['rows'] for s in r['sources'].values()):,} rows)" for name, r in zip(names, runs, strict=True)]
    py = [r["peak_rss_mb"] for r in runs]
    server = [r.get("server_peak_rss_mb_vmhwm") or r.get("server_peak_rss_sampled_mb") or 0 for r in runs]
    x = range(len(runs))
    fig, ax = plt.subplots(figsize=(max(5, 1.8 * len(runs)), 4.5), dpi=110)
    ax.bar([i - 0.2 for i in x], py, width=0.4, label="kbrelease process (ru_maxrss)", color="#1f77b4")
    ax.bar([i + 0.2 for i in x], server, width=0.4, label="Milvus Lite server (VmHWM)", color="#d62728")
    for i in x:
        ax.text(i - 0.2, py[i], f"{py[i]:.0f}", ha="center", va="bottom", fontsize=8)
        ax.text(i + 0.2, server[i], f"{server[i]:.0f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(list(x), labels, fontsize=8)
    ax.set_ylabel("peak RSS (MB)")
    ax.set_title("Peak RSS by corpus size")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def plot_latency(paths: Sequence[Path], out: Path, target_ms: float) -> None:
    plt = pyplot()
    results: list[dict[str, Any]] = []
    for p in paths:
        results.extend(json.loads(p.read_text()))
    engines = list(dict.fromkeys(r["engine"] for r in results))
    rows = sorted({r["rows"] for r in results})
    width = 0.8 / len(engines)
    fig, ax = plt.subplots(figsize=(10, 5), dpi=110)
    colors = {"server": "#d62728", "direct": "#ff7f0e", "lite25": "#1f77b4"}
    for j, engine in enumerate(engines):
        for i, n in enumerate(rows):
            found = [r for r in results if r["engine"] == engine and r["rows"] == n]
            if not found:
                continue
            r = found[0]
            x = i + (j - (len(engines) - 1) / 2) * width
            ax.bar(x, r["p50_ms"], width=width * 0.9, color=colors.get(engine, "grey"), label=ENGINE_LABELS.get(engine, engine) if i == 0 else None)
            ax.plot([x, x], [r["p50_ms"], r["p99_ms"]], color="black", linewidth=1)
            ax.plot(x, r["p99_ms"], marker="_", color="black", markersize=12)
            ax.text(x, r["p50_ms"] * 1.08, f"{r['p50_ms']:.1f}", ha="center", va="bottom", fontsize=8)
    ax.axhline(target_ms, color="green", linestyle="--", linewidth=1, label=f"goal: p50 ≤ {target_ms:g} ms at 100k")
    ax.set_yscale("log")
    ax.set_xticks(range(len(rows)), [f"{n:,} rows × {results[0]['dim']}-d" for n in rows])
    ax.set_ylabel("latency per search, ms (log scale); bar = p50, whisker = p99")
    ax.set_title(f"Search latency, k={results[0]['k']}, {results[0]['queries']} queries after {results[0]['warmup']} warm-ups")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def smoke_inputs(folder: Path) -> dict[str, Path]:
    """Tiny inputs of the shape build_bench.py (--rss-csv, --json-out) and search_bench.py (--json-out) write."""
    rss = folder / "rss.csv"
    rss.write_text(
        "seconds,python_rss_mb,server_rss_mb,embedded_items,phase,python_cpu_s,server_cpu_s\n"
        "0.0,100.0,50.0,0,load models,0.1,0.0\n0.5,300.0,60.0,0,build docs,0.6,0.1\n1.0,320.0,,40,build docs,1.1,0.2\n"
    )
    build = folder / "build.json"
    build.write_text(json.dumps({"label": "smoke", "sources": {"docs": {"rows": 40}}, "peak_rss_mb": 320.0, "server_peak_rss_sampled_mb": 60.0}))
    search = folder / "search.json"
    search.write_text(
        json.dumps([{"engine": e, "rows": 60, "dim": 8, "k": 5, "queries": 5, "warmup": 1, "p50_ms": 1.2, "p99_ms": 2.5} for e in ("server", "direct")])
    )
    return {"rss": rss, "build": build, "search": search}


def smoke() -> dict[str, Any]:
    """Draw each kind of plot from tiny inputs in a temporary folder; skipped, with the reason, without matplotlib."""
    if importlib.util.find_spec("matplotlib") is None:
        return {"skipped": MISSING, "plots": []}
    with tempfile.TemporaryDirectory(prefix="kbplot-smoke-") as tmp:
        folder = Path(tmp)
        inputs = smoke_inputs(folder)
        plot_rss(inputs["rss"], folder / "rss.png", "smoke")
        plot_peaks([inputs["build"]], folder / "peaks.png")
        plot_latency([inputs["search"]], folder / "latency.png", 25.0)
        return {"skipped": None, "plots": sorted(p.name for p in folder.glob("*.png") if p.stat().st_size > 0)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Draw the benchmark plots (needs matplotlib).")
    add_smoke(parser)
    sub = parser.add_subparsers(dest="kind")
    rss = sub.add_parser("rss", help="RSS over time from build_bench.py --rss-csv")
    rss.add_argument("csv", type=Path)
    rss.add_argument("--title", default="RSS during publish")
    peaks = sub.add_parser("peaks", help="peak RSS of several build_bench.py --json-out reports")
    peaks.add_argument("json", type=Path, nargs="+")
    peaks.add_argument("--labels", nargs="+", default=None, help="one label per JSON file (default: the runs' --label)")
    lat = sub.add_parser("latency", help="latency bars from search_bench.py --json-out files")
    lat.add_argument("json", type=Path, nargs="+")
    lat.add_argument("--target-ms", type=float, default=25.0)
    for p in (rss, peaks, lat):
        p.add_argument("--out", type=Path, required=True, help="PNG to write")
    args = parser.parse_args(argv)
    if args.smoke:
        emit(smoke(), None)
        return 0
    if args.kind is None:
        parser.error("give a plot kind: rss, peaks, latency (or --smoke)")
    if importlib.util.find_spec("matplotlib") is None:
        raise SystemExit(MISSING)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.kind == "rss":
        plot_rss(args.csv, args.out, args.title)
    elif args.kind == "peaks":
        plot_peaks(args.json, args.out, args.labels)
    else:
        plot_latency(args.json, args.out, args.target_ms)
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
