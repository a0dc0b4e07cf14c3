"""The ``milvus-local`` engine: a Milvus standalone server that kbrelease starts, checks and stops itself.

No Docker: the server is ``milvus-server`` from the PyPI package ``milvus``
(``pip install 'kbrelease[milvus-local]'``), a Python wrapper that extracts
and runs the Milvus 2.3 standalone binary with an embedded etcd and local
storage. Like the embedded Lite server (:mod:`kbrelease.store.lite`), it is
started on first use by whichever process needs it, in a session of its own
(it outlives that command), and found again by the others through
``<data folder>.server.json`` beside the data folder; ``kbrelease store stop``
ends it. :class:`MilvusStandalone` is one start of it; the test suite's
``MilvusServer`` is a thin wrapper around it.

What it works around in the wrapper:

* Every port the wrapper knows is passed explicitly (free ports from the OS);
  the wrapper treats them as *start points* and silently takes the next free
  port, so the real proxy port is read back from the generated config.
* The embedded etcd ignores ``--etcd-port`` and always binds 127.0.0.1:2379 and
  :2380, so a second instance dies; an embed config passed through
  ``ETCD_CONFIG_PATH`` moves it to free loopback ports.
* The metrics/health port (9091 upwards) cannot be chosen, and the wrapper
  polls ``/healthz`` on it: starts are serialised with a file lock (also across
  processes) until the welcome line, so two starts cannot pick the same port.
  The port is read back from the milvus process's environment for health checks.
* Every role advertises 127.0.0.1, but the gRPC and metrics listeners still
  bind all interfaces (Milvus 2.3 has no listen-address setting); only etcd is
  loopback-only. Run it where the machine's firewall keeps those ports private.
* The wrapper keeps running when the milvus binary dies, so the process group
  is watched; SIGTERM hangs, so :meth:`MilvusStandalone.stop` SIGKILLs the whole
  group. Rows survive: sealed releases are flushed, and the rest is in the
  server's on-disk message log.
* Extracting the binaries takes ~6 s per fresh data folder; they are extracted
  once into a cache (the temp dir, per version and user) and copied (~0.4 s,
  250 MB) into each data folder.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Self

from kbrelease.atomic import atomic_write_json
from kbrelease.errors import StoreError, StoreUnreachable
from kbrelease.store.processes import HOST, alive, environ_of, file_lock, free_ports, group_pids, group_rss_bytes, kill_group, port_open, tail

INSTALL = "pip install 'kbrelease[milvus-local]'"
"""The command that installs the engine's server (the PyPI package ``milvus``)."""

WELCOME = "Welcome to use Milvus!"
START_LOCK = Path(tempfile.gettempdir()) / "kbrelease-milvus-server-start.lock"


def find_executable(name: str = "milvus-server") -> str | None:
    """``name`` next to the running interpreter (its venv), else on ``PATH``."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which(name)


def default_bin_cache() -> Path | None:
    """Where the extracted binaries of the installed ``milvus`` version are kept (None: package missing)."""
    try:
        package = importlib.import_module("milvus")
    except ImportError:
        return None
    version = getattr(package, "__version__", None)
    if not isinstance(version, str):
        return None
    return Path(tempfile.gettempdir()) / f"kbrelease-milvus-bin-{version}-{os.getuid()}"


class _StartFailed(StoreError):
    def __init__(self, message: str, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


class MilvusStandalone:
    """One Milvus 2.3 standalone for ``data_dir`` (it gets ``bin/``, ``configs/``, ``logs/``, ``data/``).

    The server runs in a session of its own and writes to ``logs/milvus-server.log``;
    :attr:`uri` is ``http://127.0.0.1:PORT``, auth off.
    """

    # wrapper options (all "start points" the wrapper may move up if taken)
    PORT_OPTIONS = (
        "proxy_port",
        "proxy_internal_port",
        "root_coord_port",
        "query_coord_port",
        "query_node_port",
        "index_coord_port",
        "index_node_port",
        "data_coord_port",
        "data_node_port",
        "etcd_port",
    )
    # advertised addresses (registered in etcd)
    ROLES = ("rootCoord", "proxy", "queryCoord", "queryNode", "indexNode", "dataCoord", "dataNode")
    DEFAULT_CONFIG: ClassVar[dict[str, str | int | float | bool]] = {"common.session.ttl": 10}
    """A restart waits until the previous run's etcd sessions expire: ~55 s with Milvus's 30 s TTL, ~25 s with 10 s
    (measured; a graceful SIGTERM does not shorten it). Keep-alives go every third of the TTL, so 10 s stays safe on a busy machine."""

    def __init__(
        self,
        data_dir: Path,
        *,
        executable: str | os.PathLike[str] | None = None,
        extra_config: Mapping[str, str | int | float | bool] | None = None,
        bin_cache: Path | None = None,
    ) -> None:
        """``bin_cache``: a folder of extracted binaries shared by data folders (default: :func:`default_bin_cache`)."""
        self.data_dir = Path(data_dir).absolute()
        self.executable = str(executable) if executable is not None else find_executable()
        self.extra_config = dict(extra_config or {})
        self.bin_cache = bin_cache if bin_cache is not None else default_bin_cache()
        self.ports: dict[str, int] = {}
        self.port = 0
        self.pid: int | None = None
        self.startup_seconds = 0.0
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    @property
    def log_path(self) -> Path:
        return self.data_dir / "logs" / "milvus-server.log"

    @property
    def uri(self) -> str:
        if not self.port:
            raise StoreError(f"the Milvus server of {self.data_dir} is not started")
        return f"http://{HOST}:{self.port}"

    @property
    def running(self) -> bool:
        return self.pid is not None and bool(group_pids(self.pid)) and (not self.port or port_open(self.port))

    def pids(self) -> list[int]:
        """Live pids of the server's process group (Linux; [] elsewhere or when stopped)."""
        return group_pids(self.pid) if self.pid is not None else []

    def rss_bytes(self) -> int:
        """Resident memory of the whole process group (Linux; 0 elsewhere)."""
        return group_rss_bytes(self.pid) if self.pid is not None else 0

    def output(self, lines: int = 200) -> list[str]:
        """The last lines the wrapper wrote (its own output; Milvus logs to ``logs/milvus-stdout.log``)."""
        return tail(self.log_path, lines)

    # -- start -----------------------------------------------------------------

    def start(self, timeout: float = 180.0) -> Self:
        """Start and wait for the welcome line; :class:`StoreError` with the log tails on failure."""
        if self.running:
            raise StoreError(f"the Milvus server of {self.data_dir} is already running (pid {self.pid})")
        exe = self.executable
        if not exe or not Path(exe).is_file():
            raise StoreError(
                f"the milvus-local engine needs the Milvus server of the PyPI package 'milvus' (milvus-server not found "
                f"{'at ' + exe if exe else 'beside ' + sys.executable + ' nor on PATH'}); install it with: {INSTALL}"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        began = time.monotonic()
        deadline = began + timeout
        self._prime_binaries(timeout)
        for attempt in range(3):
            try:
                with file_lock(START_LOCK, timeout=max(1.0, deadline - time.monotonic())):
                    self._launch(exe)
                    self._wait_ready(deadline)
            except TimeoutError as exc:
                self.stop()
                raise StoreUnreachable(f"{exc}: another Milvus server is starting on this machine; try again") from None
            except _StartFailed as exc:
                self.stop()
                if exc.retryable and attempt < 2 and time.monotonic() < deadline:
                    continue
                raise
            except BaseException:
                self.stop()
                raise
            break
        self.port = self._configured_port("proxy") or self.ports["proxy_port"]
        self.startup_seconds = time.monotonic() - began
        return self

    def start_again(self, timeout: float = 180.0) -> Self:
        """Start again after :meth:`stop`, asking for the same ports, on the same data.

        The wrapper binds without SO_REUSEADDR, so a port with connections of the killed
        server in TIME_WAIT (60 s) is skipped and the next free one taken: :attr:`port`
        is updated.
        """
        if not self.port or not self.ports:
            raise StoreError(f"the Milvus server of {self.data_dir} was never started: start() it first")
        exe = self.executable
        if not exe or not Path(exe).is_file():
            raise StoreError(f"milvus-server not found{' at ' + exe if exe else ''}; install it with: {INSTALL}")
        deadline = time.monotonic() + timeout
        try:
            with file_lock(START_LOCK, timeout=timeout):
                self._launch(exe, keep_ports=True)
                self._wait_ready(deadline)
        except BaseException:
            self.stop()
            raise
        self.port = self._configured_port("proxy") or self.port
        return self

    def _launch(self, exe: str, keep_ports: bool = False) -> None:
        if not keep_ports:
            chosen = free_ports(len(self.PORT_OPTIONS) + 1)
            self.ports = dict(zip(self.PORT_OPTIONS, chosen, strict=False))
            self.ports["etcd_peer_port"] = chosen[-1]
        etcd_client = f"http://{HOST}:{self.ports['etcd_port']}"
        etcd_peer = f"http://{HOST}:{self.ports['etcd_peer_port']}"
        etcd_yaml = self.data_dir / "embed-etcd.yaml"
        etcd_yaml.write_text(
            f"listen-client-urls: {etcd_client}\n"
            f"advertise-client-urls: {etcd_client}\n"
            f"listen-peer-urls: {etcd_peer}\n"
            f"initial-advertise-peer-urls: {etcd_peer}\n"
            f"initial-cluster: default={etcd_peer}\n"
        )
        argv = [exe, "--data", str(self.data_dir)]
        for option, port in self.ports.items():
            if option in self.PORT_OPTIONS:
                argv += ["--" + option.replace("_", "-"), str(port)]
        config: dict[str, str | int | float | bool] = {f"{role}.ip": HOST for role in self.ROLES}
        config.update(self.DEFAULT_CONFIG)
        config.update(self.extra_config)
        for key, value in config.items():
            text = ("true" if value else "false") if isinstance(value, bool) else str(value)
            argv += ["--extra-config", f"{key}={text}"]
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"  # else the welcome banner stays in the wrapper's pipe buffer
        env["ETCD_CONFIG_PATH"] = str(etcd_yaml)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._log_offset = log.tell()
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.data_dir,
                start_new_session=True,  # own process group, outlives the command that started it
            )
        self.pid = self._proc.pid

    def _new_output(self) -> str:
        try:
            with self.log_path.open("rb") as fh:
                fh.seek(self._log_offset)
                return fh.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def _wait_ready(self, deadline: float) -> None:
        assert self._proc is not None and self.pid is not None
        seen_binary = False
        while True:
            text = self._new_output()
            if WELCOME in text:
                return
            if self._proc.poll() is not None:
                raise self._failure(f"milvus-server exited with code {self._proc.returncode}")
            if "Wait for milvus server started timeout" in text or "Milvus server already stopped" in text:
                raise self._failure("milvus-server gave up waiting for Milvus")
            others = [pid for pid in group_pids(self.pid) if pid != self.pid]
            if others:
                seen_binary = True
            elif seen_binary:
                raise self._failure("the milvus process exited during startup")
            if time.monotonic() > deadline:
                raise self._failure(f"timed out waiting for {WELCOME!r}")
            time.sleep(0.2)

    def _failure(self, what: str) -> _StartFailed:
        logs = self.data_dir / "logs"
        errors = tail(logs / "milvus-stdout.log", 15, keep=lambda line: "[ERROR]" in line or "[FATAL]" in line or "panic" in line)
        stderr = tail(logs / "milvus-stderr.log", 15)
        text = "\n".join(errors + stderr)
        parts = [
            f"{what} (data dir {self.data_dir}, ports {self.ports})",
            "--- milvus-server output (logs/milvus-server.log) ---",
            *self._new_output().splitlines()[-20:],
            "--- milvus errors (logs/milvus-stdout.log) ---",
            *(line[:1000] for line in errors),
            "--- logs/milvus-stderr.log ---",
            *(line[:1000] for line in stderr),
        ]
        return _StartFailed("\n".join(parts), retryable="address already in use" in text)

    def _configured_port(self, section: str) -> int | None:
        """``<section>.port`` from the config the wrapper wrote (the port really used)."""
        try:
            text = (self.data_dir / "configs" / "milvus.yaml").read_text()
        except OSError:
            return None
        match = re.search(rf"^{section}:\n(?:(?:[ #].*)?\n)*?  port: (\d+)", text, re.MULTILINE)
        return int(match.group(1)) if match else None

    def _prime_binaries(self, timeout: float) -> None:
        """Copy the extracted binaries from the per-version cache into ``data_dir/bin``.

        The wrapper checks them by md5 and re-extracts anything that does not
        match, so a stale or foreign cache only costs time.
        """
        target = self.data_dir / "bin"
        cache = self.bin_cache
        if cache is None or target.exists():
            return
        try:
            package = importlib.import_module("milvus")
        except ImportError:
            return
        extract = getattr(package, "_initialize_data_files", None)
        if not callable(extract):
            return
        marker = cache / ".complete"
        if not marker.exists():
            with file_lock(cache.with_name(cache.name + ".lock"), timeout=timeout):
                if not marker.exists():
                    cache.parent.mkdir(parents=True, exist_ok=True)
                    staging = Path(tempfile.mkdtemp(prefix=cache.name + ".", dir=cache.parent))
                    try:
                        extract(str(staging))
                        (staging / "bin" / ".complete").touch()
                        if cache.exists():
                            shutil.rmtree(cache)
                        os.replace(staging / "bin", cache)
                    finally:
                        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(cache, target, symlinks=True, ignore=shutil.ignore_patterns(".complete"))

    # -- stop ------------------------------------------------------------------

    def stop(self) -> None:
        """SIGKILL the whole process group and wait for it; idempotent."""
        pid, self.pid = self.pid, None
        proc, self._proc = self._proc, None
        if pid is None:
            return
        kill_group(pid)
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)


# --- the workspace's server: found again by every process through <data>.server.json ---------


def _state_file(data_dir: Path) -> Path:
    return data_dir.parent / f"{data_dir.name}.server.json"


def _lock_file(data_dir: Path) -> Path:
    return data_dir.parent / f"{data_dir.name}.server.lock"


def _read_state(data_dir: Path) -> dict[str, Any] | None:
    try:
        state = json.loads(_state_file(data_dir).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def _ours(pid: int, data_dir: Path) -> bool:
    """Whether ``pid`` is alive and is the wrapper serving ``data_dir`` (not a process that reused a stale pid)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return alive(pid)  # no /proc: trust the pid
    return alive(pid) and os.fsencode(str(data_dir)) in argv


def metrics_port(pgid: int) -> int | None:
    """The metrics/health port of the milvus process of group ``pgid`` (chosen by the wrapper, read from its environment)."""
    for pid in group_pids(pgid):
        value = environ_of(pid).get("METRICS_PORT")
        if pid != pgid and value and value.isdigit():
            return int(value)
    return None


def healthy(pgid: int) -> bool:
    """Whether Milvus answers ``/healthz`` with OK (False when the port cannot be found or the check fails)."""
    port = metrics_port(pgid)
    if port is None:
        return False
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}/healthz", timeout=2) as response:
            return b"OK" in response.read()
    except OSError:
        return False


def running_server(data_dir: Path) -> dict[str, Any] | None:
    """``{"pid", "port", "uri", "healthy", "rss_bytes", "started_at"}`` of the live server of ``data_dir``, or None."""
    data_dir = data_dir.resolve()
    state = _read_state(data_dir)
    if state is None:
        return None
    pid, port = int(state.get("pid", 0)), int(state.get("port", 0))
    if not (pid and _ours(pid, data_dir) and port_open(port)):
        return None
    return {
        "pid": pid,
        "port": port,
        "uri": f"http://{HOST}:{port}",
        "healthy": healthy(pid),
        "rss_bytes": group_rss_bytes(pid),
        "started_at": state.get("started_at"),
    }


def ensure_server(data_dir: Path, timeout: float = 180.0) -> str:
    """Start (or find) the Milvus server of ``data_dir``; return its URI."""
    data_dir = data_dir.resolve()
    try:
        with file_lock(_lock_file(data_dir), timeout=timeout):
            found = running_server(data_dir)
            if found is not None and found["healthy"]:
                return str(found["uri"])
            stale = _read_state(data_dir)
            if stale and int(stale.get("pid", 0)) and _ours(int(stale["pid"]), data_dir):
                kill_group(int(stale["pid"]))  # the wrapper outlives a dead or hung milvus binary
            _state_file(data_dir).unlink(missing_ok=True)
            server = MilvusStandalone(data_dir).start(timeout)
            atomic_write_json(
                _state_file(data_dir),
                {
                    "pid": server.pid,
                    "port": server.port,
                    "ports": server.ports,
                    "data_dir": str(data_dir),
                    "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "startup_seconds": round(server.startup_seconds, 1),
                },
            )
            return server.uri
    except TimeoutError as exc:
        raise StoreUnreachable(f"the Milvus server of {data_dir} is being started by another process ({exc}); try again") from None


def stop_server(data_dir: Path) -> bool:
    """Stop the Milvus server of ``data_dir``; True if one was running."""
    data_dir = data_dir.resolve()
    with file_lock(_lock_file(data_dir), timeout=60):
        state = _read_state(data_dir)
        _state_file(data_dir).unlink(missing_ok=True)
        pid = int(state.get("pid", 0)) if state else 0
        if not (pid and _ours(pid, data_dir)):
            return False
        kill_group(pid)
        return True
