"""Dense vs hybrid (BM25 + vectors, reciprocal rank fusion) vs sparse search on real documentation.

Two documentation sets that Debian installs as Markdown and reStructuredText, read where they are
(nothing is copied into the repository):

* ``nodejs-api``: the Node.js API reference, ``/usr/share/doc/nodejs/api/*.md`` (``apt-get install nodejs``);
  the 31 pages under 45 KB (path, os, readline, cluster, zlib, permissions, ...), about 0.5 MB.
* ``pip-docs``: pip's user and developer guide, ``/usr/share/doc/python3-pip/html`` (``apt-get install python3-pip``);
  every ``.md``/``.rst`` page (gzipped ones unpacked), about 0.3 MB.

The pages are staged into a temporary folder (``.gz`` unpacked, ``.rst`` named ``.rst.txt`` because kbrelease
reads ``.txt``/``.md``), published ONCE as one release with ``hybrid: true`` on both sources on a Milvus Lite
server, and every query then runs in every mode against that same release: the chunks are embedded once.

Each corpus has 20 queries written by hand with a known answer, half keyword-style (an API name, a flag,
an environment variable), half question-style (a user's question, in other words than the page's). A hit
answers a query when it is a chunk of the expected page that contains the expected string (case-insensitive):
chunk level, so a page that merely mentions the term elsewhere does not count. Reported per corpus, kind
and mode: recall@5 (share of queries answered in the top 5) and MRR@10 (mean of 1/rank of the first answer
in the top 10, 0 when none), plus the page-level recall@5 and the mean search time.

Before measuring, every expected (page, string) pair is checked against the rows of the release: a
query whose answer is not in the corpus (another Node.js or pip version) stops the run with its name.

Examples::

    python bench/hybrid_bench.py                          # both corpora, own Lite server
    python bench/hybrid_bench.py --json-out /tmp/hybrid.json
    python bench/hybrid_bench.py --smoke --milvus-uri http://127.0.0.1:19530
"""

from __future__ import annotations

import argparse
import gzip
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _common import add_smoke, emit, loadavg, milvus, seconds_since, smoke_prefix, write_config  # bench/ is first on sys.path

MODES = ("dense", "hybrid", "sparse")
K_RECALL = 5
K_MRR = 10


@dataclass(frozen=True)
class Query:
    q: str
    kind: str  # "keyword" or "question"
    page: str  # staged relative path
    needle: str  # the answering chunk contains this (case-insensitive)


@dataclass(frozen=True)
class Corpus:
    name: str
    root: Path
    get: str
    pages: tuple[str, ...] | None  # relative paths; None: every .md/.rst (gzipped or not) under root
    queries: tuple[Query, ...]


def kw(q: str, page: str, needle: str) -> Query:
    return Query(q, "keyword", page, needle)


def ask(q: str, page: str, needle: str) -> Query:
    return Query(q, "question", page, needle)


NODE_PAGES = tuple(
    f"{p}.md"
    for p in [
        "path",
        "os",
        "timers",
        "console",
        "querystring",
        "string_decoder",
        "punycode",
        "tty",
        "readline",
        "dgram",
        "cluster",
        "repl",
        "https",
        "report",
        "globals",
        "permissions",
        "async_context",
        "diagnostics_channel",
        "module",
        "v8",
        "addons",
        "inspector",
        "domain",
        "single-executable-applications",
        "intl",
        "tracing",
        "wasi",
        "debugger",
        "embedding",
        "corepack",
        "zlib",
    ]
)

NODE = Corpus(
    "nodejs-api",
    Path("/usr/share/doc/nodejs/api"),
    "apt-get install nodejs (Debian ships the API reference as Markdown in /usr/share/doc/nodejs/api)",
    NODE_PAGES,
    (
        kw("path.relative", "path.md", "path.relative("),
        kw("os.availableParallelism()", "os.md", "availableParallelism"),
        kw("readline.createInterface", "readline.md", "readline.createInterface("),
        kw("dgram.createSocket", "dgram.md", "dgram.createSocket("),
        kw("v8.getHeapStatistics", "v8.md", "getHeapStatistics"),
        kw("BROTLI_PARAM_QUALITY", "zlib.md", "BROTLI_PARAM_QUALITY"),
        kw("--report-on-fatalerror", "report.md", "--report-on-fatalerror"),
        kw("NODE_REPL_HISTORY", "repl.md", "NODE_REPL_HISTORY"),
        kw("--allow-fs-read", "permissions.md", "--allow-fs-read"),
        kw("--experimental-sea-config", "single-executable-applications.md", "--experimental-sea-config"),
        ask("How do I get the relative path from one directory to another?", "path.md", "path.relative("),
        ask("How many CPUs can my program use in parallel?", "os.md", "availableParallelism"),
        ask("How do I read user input one line at a time from the terminal?", "readline.md", "readline"),
        ask("How can several worker processes share one server port?", "cluster.md", "port"),
        ask("How do I send and receive UDP datagrams?", "dgram.md", "socket"),
        ask("How can I compress a file with gzip?", "zlib.md", "gzip"),
        ask("How can I stop a program from reading files outside one folder?", "permissions.md", "--allow-fs-read"),
        ask("How do I write a diagnostic report when the process crashes?", "report.md", "report"),
        ask("How do I ship my app as one executable binary?", "single-executable-applications.md", "executable"),
        ask("How can I keep a request id available across asynchronous callbacks?", "async_context.md", "AsyncLocalStorage"),
    ),
)

PIP = Corpus(
    "pip-docs",
    Path("/usr/share/doc/python3-pip/html"),
    "apt-get install python3-pip (Debian ships pip's documentation sources in /usr/share/doc/python3-pip/html)",
    None,
    (
        kw("--require-hashes", "topics/secure-installs.md", "--require-hashes"),
        kw("PIP_CONFIG_FILE", "topics/configuration.md", "PIP_CONFIG_FILE"),
        kw("--no-build-isolation", "reference/build-system/pyproject-toml.md", "--no-build-isolation"),
        kw("pip install --dry-run --report", "reference/installation-report.md", "--report"),
        kw("pip cache purge", "topics/caching.md", "pip cache"),
        kw("git+https", "topics/vcs-support.md", "git+https"),
        kw("REQUESTS_CA_BUNDLE", "topics/https-certificates.md", "REQUESTS_CA_BUNDLE"),
        kw("ResolutionImpossible", "topics/dependency-resolution.md", "ResolutionImpossible"),
        kw("--upgrade-strategy", "development/architecture/upgrade-options.rst.txt", "--upgrade-strategy"),
        kw("keyring", "topics/authentication.md", "keyring"),
        ask("How do I make installs reproducible on another machine?", "topics/repeatable-installs.md", "pin"),
        ask("What does pip do when two packages need incompatible versions of a dependency?", "topics/dependency-resolution.md", "conflict"),
        ask("Where does pip keep downloaded files so it does not fetch them again?", "topics/caching.md", "cache"),
        ask("How do I log in to a private package index?", "topics/authentication.md", "password"),
        ask("How do I install a package straight from a version control repository?", "topics/vcs-support.md", "git"),
        ask("How do I install my project so that code changes apply without reinstalling?", "topics/local-project-installs.md", "editable"),
        ask("How can I use my company's certificate authority for HTTPS?", "topics/https-certificates.md", "certificate"),
        ask("Where is pip's configuration file?", "topics/configuration.md", "pip.conf"),
        ask("What can a line of a requirements file contain?", "reference/requirements-file-format.md", "requirement"),
        ask("How can I check that downloaded packages were not tampered with?", "topics/secure-installs.md", "hash"),
    ),
)

CORPORA = (NODE, PIP)


# --- staging ---------------------------------------------------------------------------
def staged_name(rel: str) -> str:
    """``x.rst.gz`` → ``x.rst.txt``, ``x.md.gz`` → ``x.md`` (kbrelease reads .md and .txt)."""
    rel = rel.removesuffix(".gz")
    return rel + ".txt" if rel.endswith(".rst") else rel


def stage(corpus: Corpus, dest: Path) -> int:
    """The corpus's pages, unpacked, into ``dest``; returns their bytes."""
    if not corpus.root.is_dir():
        sys.exit(f"{corpus.name}: {corpus.root} is missing; {corpus.get}")
    if corpus.pages is not None:
        files = [corpus.root / p for p in corpus.pages]
    else:
        files = sorted(p for p in corpus.root.rglob("*") if p.is_file() and p.name.removesuffix(".gz").endswith((".md", ".rst")))
    total = 0
    for src in files:
        data = gzip.decompress(src.read_bytes()) if src.suffix == ".gz" else src.read_bytes()
        out = dest / staged_name(str(src.relative_to(corpus.root)))
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(data)
        total += len(data)
    return total


def smoke_corpora(dest: Path) -> tuple[Corpus, ...]:
    """Two tiny corpora with the real ones' shape: a keyword and a question query each."""
    pages = {
        "alpha": {
            "flags.md": "# Flags\n\nPass --zq-spill to the tool to raise ZQ_SPILL_LIMIT for one run.\n",
            "net.md": "# Network\n\nThe proxy forwards every request to the upstream server and retries twice.\n",
        },
        "beta": {
            "cache.md": "# Cache\n\nDownloaded files are kept in the cache folder, so they are not fetched again.\n",
            "auth.md": "# Login\n\nUse a token or a username and password to log in to a private index.\n",
        },
    }
    queries = {
        "alpha": (kw("ZQ_SPILL_LIMIT", "flags.md", "ZQ_SPILL_LIMIT"), ask("where do requests go through the proxy", "net.md", "upstream")),
        "beta": (kw("cache folder", "cache.md", "cache"), ask("how do I sign in with my password", "auth.md", "password")),
    }
    for name, files in pages.items():
        for rel, text in files.items():
            (dest / name / rel).parent.mkdir(parents=True, exist_ok=True)
            (dest / name / rel).write_text(text, encoding="utf-8")
    return tuple(Corpus(name, dest / name, "generated by --smoke", None, queries[name]) for name in pages)


# --- measuring ---------------------------------------------------------------------------
def answered(hit: Any, query: Query) -> bool:
    """The hit is a chunk of the expected page whose heading path or text contains the expected string."""
    return bool(hit.file == query.page and query.needle.lower() in f"{hit.heading}\n{hit.text}".lower())


def check_gold(kb: Any, source: str, queries: tuple[Query, ...]) -> list[str]:
    """Queries whose expected (page, string) is in no chunk of the release."""
    record = kb.resolve(None)
    missing = {(q.page, q.needle.lower()) for q in queries}
    for batch in kb.store.iter_rows(record.database, record.sources[source].collection, ["file", "heading", "text"]):
        for row in batch:
            text = f"{row.get('heading') or ''}\n{row.get('text') or ''}".lower()
            missing -= {(page, needle) for page, needle in missing if row.get("file") == page and needle in text}
    return [f"{q.q!r} (expects {q.page} with {q.needle!r})" for q in queries if (q.page, q.needle.lower()) in missing]


def measure(kb: Any, source: str, queries: tuple[Query, ...]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    per_query: list[dict[str, Any]] = []
    for query in queries:
        row: dict[str, Any] = {"q": query.q, "kind": query.kind, "page": query.page}
        for mode in MODES:
            result = kb.query(query.q, k=K_MRR, source=source, mode=mode)
            rank = next((i for i, h in enumerate(result.hits, 1) if answered(h, query)), None)
            page_rank = next((i for i, h in enumerate(result.hits, 1) if h.file == query.page), None)
            row[mode] = {"rank": rank, "page_rank": page_rank, "search_ms": round(result.search_seconds * 1000, 2)}
        per_query.append(row)
    summary: dict[str, Any] = {}
    for kind in ("keyword", "question", "all"):
        rows = [r for r in per_query if kind in ("all", r["kind"])]
        summary[kind] = {
            mode: {
                "queries": len(rows),
                f"recall@{K_RECALL}": round(sum(1 for r in rows if r[mode]["rank"] and r[mode]["rank"] <= K_RECALL) / len(rows), 3),
                f"mrr@{K_MRR}": round(sum(1 / r[mode]["rank"] for r in rows if r[mode]["rank"]) / len(rows), 3),
                f"page_recall@{K_RECALL}": round(sum(1 for r in rows if r[mode]["page_rank"] and r[mode]["page_rank"] <= K_RECALL) / len(rows), 3),
                "mean_search_ms": round(statistics.fmean(r[mode]["search_ms"] for r in rows), 2),
            }
            for mode in MODES
        }
    return summary, per_query


def table(report: dict[str, Any]) -> str:
    lines = [
        f"| corpus | queries | mode | recall@{K_RECALL} | MRR@{K_MRR} | page recall@{K_RECALL} | search ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, c in report["corpora"].items():
        for kind in ("keyword", "question", "all"):
            for mode in MODES:
                m = c["summary"][kind][mode]
                lines.append(
                    f"| {name} | {kind} ({m['queries']}) | {mode} | {m[f'recall@{K_RECALL}']:.2f} | {m[f'mrr@{K_MRR}']:.3f} | "
                    f"{m[f'page_recall@{K_RECALL}']:.2f} | {m['mean_search_ms']:.1f} |"
                )
    return "\n".join(lines)


def verdict(report: dict[str, Any]) -> dict[str, Any]:
    """Whether hybrid beats dense on recall@5 AND MRR for both kinds of query in every corpus (the bar for a default)."""
    wins: dict[str, bool] = {}
    for name, c in report["corpora"].items():
        for kind in ("keyword", "question"):
            d, h = c["summary"][kind]["dense"], c["summary"][kind]["hybrid"]
            wins[f"{name}/{kind}"] = h[f"recall@{K_RECALL}"] >= d[f"recall@{K_RECALL}"] and h[f"mrr@{K_MRR}"] > d[f"mrr@{K_MRR}"]
    return {"hybrid_wins": wins, "hybrid_default": all(wins.values())}


def run(corpora: tuple[Corpus, ...], work: Path, uri: str | None, overrides: dict[str, str], stage_files: bool) -> dict[str, Any]:
    from kbrelease import KbRelease, load_config

    staged = work / "corpora"
    sizes = {c.name: stage(c, staged / c.name) if stage_files else sum(p.stat().st_size for p in c.root.rglob("*") if p.is_file()) for c in corpora}
    roots = {c.name: (staged / c.name if stage_files else c.root) for c in corpora}
    with milvus(work / "milvus", uri) as (milvus_uri, _):
        sources = [{"name": c.name.replace("-", "_"), "path": str(roots[c.name]), "modality": "text", "hybrid": True} for c in corpora]
        cfg = load_config(write_config(work, {"sources": sources, "milvus": {"uri": milvus_uri}}), env={}, overrides=overrides)
        with KbRelease(cfg) as kb:
            started = time.perf_counter()
            published = kb.publish()
            build_s = seconds_since(started, 1)
            report: dict[str, Any] = {"load": loadavg(), "release": published.release.name, "publish_seconds": build_s, "corpora": {}}
            for c in corpora:
                source = c.name.replace("-", "_")
                missing = check_gold(kb, source, c.queries)
                if missing:  # measured anyway (they count as misses in every mode), then the run fails at the end
                    report.setdefault("gold_missing", []).extend(f"{c.name}: {m}" for m in missing)
                summary, per_query = measure(kb, source, c.queries)
                counts = published.release.sources[source]
                report["corpora"][c.name] = {
                    "root": str(c.root),
                    "get": c.get,
                    "files": counts.files,
                    "chunks": counts.rows,
                    "bytes": sizes[c.name],
                    "summary": summary,
                    "per_query": per_query,
                }
    report["verdict"] = verdict(report)
    report["table_md"] = table(report)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--milvus-uri", help="a running Milvus (default: an own Milvus Lite server, stopped at the end)")
    parser.add_argument("--json-out", type=Path)
    add_smoke(parser)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hybrid-bench-") as tmp:
        work = Path(tmp)
        if args.smoke:
            corpora = smoke_corpora(work / "smoke")
            report = run(corpora, work, args.milvus_uri, smoke_prefix("hybrid_bench"), stage_files=False)
        else:
            report = run(CORPORA, work, args.milvus_uri, {}, stage_files=True)
    emit(report, args.json_out)
    print("\n" + report["table_md"], file=sys.stderr)
    if report.get("gold_missing"):
        sys.exit("these queries' answers are in no chunk of the corpus (another version of the docs?): " + "; ".join(report["gold_missing"]))


if __name__ == "__main__":
    main()
