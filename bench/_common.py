"""What every bench script shares: the JSON report, the machine's load, CPU and RSS of a process,
percentiles, config files, the Milvus Lite server, and the ``--smoke`` inputs.

Standard library at import time: ``llamaindex_bench.py`` imports this module from LlamaIndex's own
virtualenv, where kbrelease, numpy and PyYAML may be missing. What needs them imports them inside.

``--smoke`` (every script has it): a tiny input, a temporary folder, seconds of work, the normal
report shape. ``tests/test_bench_smoke.py`` runs each script's smoke mode, so a rename in kbrelease
breaks a test instead of a benchmark nobody ran since.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import resource
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
EXAMPLE_CORPUS = REPO / "examples" / "corpus"

#: The smoke corpus: enough text for a few chunks per file and two images.
SMOKE_PARAGRAPHS = 12
SMOKE_FILES = 4
SMOKE_IMAGES = 2


# --- the report -------------------------------------------------------------------


def emit(result: Any, json_out: Path | None) -> None:
    """Print ``result`` as indented JSON; also write it to ``json_out`` (parents created) when given."""
    text = json.dumps(result, indent=2, ensure_ascii=False, default=str)
    print(text, flush=True)
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(text + "\n", encoding="utf-8")


def add_smoke(parser: argparse.ArgumentParser) -> None:
    """The ``--smoke`` flag: a tiny input in a temporary folder, seconds of work, the normal report shape."""
    parser.add_argument("--smoke", action="store_true", help="tiny input in a temporary folder: checks that the script still runs (no figures)")


# --- the machine and its processes ---------------------------------------------------


def loadavg() -> str:
    """The 1/5/15-minute load average, as noted beside every figure."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def seconds_since(started: float, digits: int = 3) -> float:
    """``time.perf_counter()`` seconds since ``started``, rounded."""
    return round(time.perf_counter() - started, digits)


def per_second(count: float, seconds: float, digits: int | None = None) -> float | None:
    """``count / seconds`` rounded (None for no time: a smoke run can be faster than the clock's rounding)."""
    return round(count / seconds, digits) if seconds > 0 else None


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds of ``pid`` so far (all its threads); None when unknown or gone."""
    if not pid:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def own_cpu(children: bool = False) -> float:
    """User + system CPU seconds of this process (and of its waited-for children)."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    total = ru.ru_utime + ru.ru_stime
    if children:
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        total += kids.ru_utime + kids.ru_stime
    return total


def rss_kb(pid: int, field: str = "VmRSS") -> int | None:
    """``field`` (VmRSS, VmHWM) of ``pid`` from /proc, in KiB; None when gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_mb(pid: int, field: str = "VmRSS") -> float | None:
    kb = rss_kb(pid, field)
    return None if kb is None else kb / 1024


def maxrss_mb() -> float:
    """Peak RSS of this process so far (``ru_maxrss``; Linux: KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100), linear between the closest ranks (numpy's default); NaN for no values."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    at = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(at), math.ceil(at)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (at - lo)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tests_on_path() -> None:
    """Make ``tests/`` importable (``servers``, ``synthetic``): the benches reuse the test helpers."""
    tests = str(REPO / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)


def src_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment with the repository's ``src`` first on PYTHONPATH, for child processes."""
    path = os.pathsep.join(p for p in (str(REPO / "src"), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, **(extra or {})}


# --- kbrelease config ------------------------------------------------------------------


def parse_sets(pairs: Sequence[str]) -> dict[str, Any]:
    """``--set KEY=VALUE`` options as config overrides (VALUE read as YAML)."""
    import yaml

    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--set {pair!r}: expected KEY=VALUE, e.g. text.batch_size=128")
        out[key.strip()] = yaml.safe_load(value)
    return out


def source_entries(text: Path | None, images: Path | None) -> list[dict[str, str]]:
    """The ``sources`` of a bench config: ``docs`` (text) and/or ``pictures`` (images)."""
    sources = []
    if text is not None:
        sources.append({"name": "docs", "path": str(text.resolve()), "modality": "text"})
    if images is not None:
        sources.append({"name": "pictures", "path": str(images.resolve()), "modality": "image"})
    return sources


def write_config(folder: Path, data: dict[str, Any]) -> Path:
    """``folder/kbrelease.yaml`` holding ``data``; ``workspace`` defaults to ``folder/ws``."""
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "kbrelease.yaml"
    path.write_text(yaml.safe_dump({"workspace": str(folder / "ws"), **data}, sort_keys=False), encoding="utf-8")
    return path


# --- Milvus Lite -----------------------------------------------------------------------


def lite_pid(data_dir: Path) -> int | None:
    """The pid of the Lite server kbrelease runs for ``data_dir`` (None: none running)."""
    from kbrelease.store.lite import running_server

    found = running_server(data_dir.resolve())
    return found["pid"] if found else None


@contextlib.contextmanager
def milvus(data_dir: Path, uri: str | None = None) -> Iterator[tuple[str, int | None]]:
    """``(uri, server pid)``: ``uri`` as given (a server someone else runs: pid None), else kbrelease's
    own Lite server for ``data_dir`` (``kbrelease.store.lite``), stopped at the end."""
    if uri:
        yield uri, None
        return
    from kbrelease.store.lite import ensure_server, stop_server

    try:
        started = ensure_server(data_dir)
        yield started, lite_pid(data_dir)
    finally:
        stop_server(data_dir)


# --- store engines (store.engine) ------------------------------------------------------

#: The engines kbrelease starts itself (``kbrelease.store.engines``); ``server`` is a Milvus someone else runs.
MANAGED_ENGINES = ("lite", "milvus-local")


def engine_config(folder: Path, engine: str, uri: str | None, prefix: str) -> dict[str, Any]:
    """The ``milvus`` and ``store`` sections of a bench config: with ``uri``, that server (engine ``server``); else
    ``engine`` as users get it, started by kbrelease itself, its data and server registration under ``folder``."""
    milvus_cfg: dict[str, Any] = {"db_prefix": prefix, "registry_db": f"{prefix}registry"}
    if uri:
        return {"milvus": {**milvus_cfg, "uri": uri}, "store": {"engine": "server"}}
    store: dict[str, Any] = {"engine": engine, "servers_dir": str(folder / "servers")}
    if engine == "milvus-local":
        store["local_path"] = str(folder / "milvus-local")
    return {"milvus": milvus_cfg, "store": store}


@contextlib.contextmanager
def managed_engine(cfg: Any) -> Iterator[None]:
    """Stops the server kbrelease started for ``cfg`` (lite, milvus-local) at the end; nothing for ``server``."""
    from kbrelease.store.engines import stop_managed

    try:
        yield
    finally:
        stop_managed(cfg)


def store_server(cfg: Any) -> dict[str, Any] | None:
    """The server kbrelease runs for ``cfg`` as ``kbrelease store status`` reports it (pid, port, ``rss_bytes`` of its
    whole process group), or None (not running, or a server someone else runs)."""
    from kbrelease.store.engines import server_status

    found = server_status(cfg)["server"]
    return dict(found) if found else None


def group_rss_mb(pgid: int) -> float:
    """Resident memory of process group ``pgid`` (a server and the processes it started), in MiB."""
    from kbrelease.store.processes import group_rss_bytes

    return round(group_rss_bytes(pgid) / (1 << 20), 1)


def group_cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds of the process group ``pid`` leads (a server and what it started: Milvus standalone
    runs its binary under a wrapper), else of ``pid`` alone; None when unknown or gone."""
    if not pid:
        return None
    from kbrelease.store.processes import group_pids

    times = [t for t in (cpu_seconds(p) for p in group_pids(pid) or [pid]) if t is not None]
    return sum(times) if times else None


def smoke_prefix(script: str) -> dict[str, str]:
    """Config overrides that give one smoke run its own databases, so runs can share one Milvus (``--milvus-uri``)."""
    prefix = f"smoke_{script}_{os.getpid()}_"
    return {"milvus.db_prefix": prefix, "milvus.registry_db": f"{prefix}registry"}


def smoke_sets(script: str) -> list[str]:
    """:func:`smoke_prefix` as ``--set KEY=VALUE`` options."""
    return [f"{key}={value}" for key, value in smoke_prefix(script).items()]


# --- run folders ---------------------------------------------------------------------


@contextlib.contextmanager
def smoke_folder(smoke: bool, prefix: str) -> Iterator[Path | None]:
    """A temporary folder for a ``--smoke`` run (deleted afterwards), or None for a real run."""
    if not smoke:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        yield Path(tmp)


def finish_run_folder(base: Path, keep: bool, result: dict[str, Any], key: str = "workdir") -> None:
    """The end of a run in ``base``: noted in ``result[key]`` with ``--keep``, else deleted."""
    if keep:
        result[key] = str(base)
    else:
        shutil.rmtree(base, ignore_errors=True)


# --- corpora ---------------------------------------------------------------------------


def check_corpus(parser: argparse.ArgumentParser, corpus: Path | None) -> None:
    """``--corpus`` is given and holds a ``text/`` folder (``make_corpus.py`` output), else a usage error."""
    if corpus is None:
        parser.error("--corpus is required (or --smoke)")
    elif not (corpus / "text").is_dir():
        parser.error(f"{corpus / 'text'} is not a folder (generate the corpus with bench/make_corpus.py; images/ is optional)")


def smoke_corpus(out: Path, images: int = SMOKE_IMAGES) -> Path:
    """A tiny ``make_corpus.py`` corpus in ``out`` (text/, images/ when ``images``); returns ``out``."""
    from make_corpus import generate

    generate(out, SMOKE_PARAGRAPHS, SMOKE_FILES, images, seed=0)
    return out
