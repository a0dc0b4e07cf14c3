"""Real servers on 127.0.0.1 for tests: Milvus 2.3.5, Milvus Lite, and an S3 (moto).

A plain helper module (no pytest needed)::

    with MilvusServer(tmp_path / "milvus") as milvus:      # ~4-10 s, ~0.2-0.3 GB RSS
        client = MilvusClient(milvus.uri)
    with MilvusLiteServer(tmp_path / "lite") as lite:      # ~1-2 s
        client = MilvusClient(lite.uri)
    with S3Server() as s3:                                  # in-process, instant
        s3.make_bucket("kb-test")
        for key, value in s3.env().items():
            monkeypatch.setenv(key, value)

``MilvusServer`` runs ``milvus-server`` (PyPI package ``milvus==2.3.5``: a Python
wrapper that extracts and runs the Milvus standalone binary with embedded etcd
and local storage). Facts it works around:

* Every port the wrapper knows is passed explicitly (free ports from the OS);
  the wrapper treats them as *start points* and silently takes the next free
  port, so the real proxy port is read back from the generated config.
* The embedded etcd ignores ``--etcd-port`` and always binds 127.0.0.1:2379 and
  :2380, so a second instance dies; an embed config passed through
  ``ETCD_CONFIG_PATH`` moves it to free loopback ports.
* The metrics/health port (9091 upwards) cannot be chosen, and the wrapper
  polls ``/healthz`` on it: starts are serialised with a file lock (also across
  processes) until the welcome line, so two starts cannot pick the same port.
* The gRPC ports and the metrics port still listen on all interfaces (Milvus
  2.3 has no listen-address setting); only etcd is loopback-only.
* The wrapper keeps running when the milvus binary dies, so the process group
  is watched; SIGTERM hangs, so :meth:`stop` SIGKILLs the whole group.
* Extracting the binaries takes ~6 s per fresh data dir; they are extracted
  once into a cache (``$KBRELEASE_MILVUS_BIN_CACHE`` or the temp dir) and
  copied (~0.4 s, 250 MB) into each data dir.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import importlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import weakref
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self

__all__ = [
    "HOST",
    "MilvusLiteServer",
    "MilvusServer",
    "S3Server",
    "TcpForwarder",
    "find_executable",
    "free_port",
    "free_ports",
]

HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (chosen by the OS)."""
    return free_ports(1)[0]


def free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports on 127.0.0.1 (all held open until chosen)."""
    with contextlib.ExitStack() as stack:
        ports: list[int] = []
        for _ in range(n):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((HOST, 0))
            ports.append(sock.getsockname()[1])
        return ports


def find_executable(name: str) -> str | None:
    """``name`` next to the running interpreter (its venv), else on ``PATH``."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which(name)


def _port_open(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


def _group_pids(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group ``pgid``; [] without /proc."""
    pids: list[int] = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return pids
    for name in entries:
        if not name.isdigit():
            continue
        try:
            stat = Path("/proc", name, "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # state ppid pgrp ...
        if int(fields[2]) == pgid and (fields[0] not in ("Z", "X") or _threads_alive(name)):
            pids.append(int(name))
    return pids


def _threads_alive(pid: str) -> bool:
    """A SIGKILLed process shows its leader as a zombie while other threads still exit
    (and still hold its sockets); it is gone only when every thread is."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return False
    for tid in tids:
        try:
            stat = Path("/proc", pid, "task", tid, "stat").read_text()
        except OSError:
            continue
        if stat[stat.rindex(")") + 2 :].split()[0] not in ("Z", "X"):
            return True
    return False


def _rss_bytes(pid: int) -> int:
    try:
        for line in Path("/proc", str(pid), "status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _tail(path: Path, lines: int, max_bytes: int = 1 << 20, keep: Callable[[str], bool] | None = None) -> list[str]:
    try:
        with path.open("rb") as fh:
            fh.seek(max(0, path.stat().st_size - max_bytes))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return []
    selected = [line for line in text.splitlines() if keep is None or keep(line)]
    return selected[-lines:]


@contextlib.contextmanager
def _file_lock(path: Path, timeout: float) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (blocks other threads and processes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"could not lock {path} within {timeout:.0f} s") from None
                time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


_LIVE: weakref.WeakSet[_ServerProcess] = weakref.WeakSet()


@atexit.register
def _stop_leftovers() -> None:  # servers run in their own session: never leave them behind
    for server in list(_LIVE):
        server.stop()


class Managed:
    """``with Server(...) as s:`` starts it (unless running) and always stops it."""

    running: bool

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        if not self.running:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class _ServerProcess(Managed):
    """A server subprocess in its own session: stdout tail kept, killed as a group."""

    name = "server"

    port: int

    @property
    def uri(self) -> str:
        if not self.port:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return f"http://{HOST}:{self.port}"

    executable: str | None

    def _executable_to_start(self, name: str, fix: str) -> str:
        """The executable, or RuntimeError if already running or not installed."""
        if self.running:
            raise RuntimeError(f"{type(self).__name__} is already running")
        exe = self.executable
        if not exe or not Path(exe).is_file():
            raise RuntimeError(f"{name} not found ({exe or 'not beside ' + sys.executable + ' nor on PATH'}); {fix}")
        return exe

    def __init__(self, keep_lines: int = 200) -> None:
        self._proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None
        self._lines: deque[str] = deque(maxlen=keep_lines)
        self._lines_lock = threading.Lock()

    # -- subprocess ----------------------------------------------------------

    def _spawn(self, argv: list[str], env: Mapping[str, str]) -> None:
        with self._lines_lock:
            self._lines.clear()
        self._proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            encoding="utf-8",
            errors="replace",
            env=dict(env),
            start_new_session=True,  # own process group: killpg reaches the grandchildren
        )
        _LIVE.add(self)
        stream = self._proc.stdout
        assert stream is not None
        self._reader = threading.Thread(target=self._read, args=(stream,), name=f"{self.name}-stdout", daemon=True)
        self._reader.start()

    def _read(self, stream: Any) -> None:
        with contextlib.suppress(OSError, ValueError):  # pipe closed by stop()
            for raw in stream:
                line = raw.rstrip("\n")
                with self._lines_lock:
                    self._lines.append(line)
                self._on_line(line)

    def _on_line(self, line: str) -> None:
        """Hook for subclasses (runs in the reader thread)."""

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        _LIVE.discard(self)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        # Grandchildren were re-parented when the leader died; wait until they are gone.
        deadline = time.monotonic() + 10
        while _group_pids(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if self._reader is not None:
            self._reader.join(timeout=5)
            self._reader = None
        if proc.stdout is not None:
            proc.stdout.close()

    # -- public --------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """Pid of the launched process (also its process-group id)."""
        return self._proc.pid if self._proc is not None else None

    def output(self) -> list[str]:
        """The last lines the process wrote to stdout/stderr."""
        with self._lines_lock:
            return list(self._lines)

    def pids(self) -> list[int]:
        """Live pids of the server's process group (Linux; [] elsewhere or when stopped)."""
        return _group_pids(self._proc.pid) if self._proc is not None else []

    def rss_bytes(self) -> int:
        """Resident memory of the whole process group (Linux; 0 elsewhere)."""
        return sum(_rss_bytes(pid) for pid in self.pids())

    def start(self, timeout: float = 120) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        """SIGKILL the whole process group and wait for it; idempotent."""
        self._kill()


class _StartFailed(RuntimeError):
    def __init__(self, message: str, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


class MilvusServer(_ServerProcess):
    """Milvus 2.3.5 standalone (``milvus-server`` from ``pip install milvus==2.3.5``).

    ``data_dir`` should be fresh for each server (it gets ``bin/``, ``configs/``,
    ``logs/``, ``data/``). :attr:`uri` is ``http://127.0.0.1:PORT``; auth is
    off, so any token (or none) is accepted.
    """

    name = "milvus-server"
    WELCOME = "Welcome to use Milvus!"
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
    # advertised addresses (registered in etcd); the listeners stay on 0.0.0.0
    ROLES = ("rootCoord", "proxy", "queryCoord", "queryNode", "indexNode", "dataCoord", "dataNode")
    START_LOCK = Path(tempfile.gettempdir()) / "kbrelease-milvus-server-start.lock"

    def __init__(
        self,
        data_dir: Path,
        *,
        executable: str | os.PathLike[str] | None = None,
        extra_config: Mapping[str, str | int | float | bool] | None = None,
        cache_binaries: bool = True,
        keep_lines: int = 200,
    ) -> None:
        super().__init__(keep_lines)
        self.data_dir = Path(data_dir).absolute()
        self.executable = str(executable) if executable is not None else find_executable("milvus-server")
        self.extra_config = dict(extra_config or {})
        self.cache_binaries = cache_binaries
        self.ports: dict[str, int] = {}
        self.port = 0
        self.startup_seconds = 0.0
        self._ready = threading.Event()
        self._gave_up = threading.Event()

    @classmethod
    def available(cls) -> bool:
        """Whether ``milvus-server`` can be found (use for ``pytest.skip``)."""
        return find_executable("milvus-server") is not None

    def _on_line(self, line: str) -> None:
        if self.WELCOME in line:
            self._ready.set()
        elif "Wait for milvus server started timeout" in line or "Milvus server already stopped" in line:
            self._gave_up.set()

    def start(self, timeout: float = 120) -> Self:
        """Start and wait for the welcome line; RuntimeError with log tails on failure."""
        exe = self._executable_to_start("milvus-server", "install the real Milvus server with: pip install milvus==2.3.5")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        began = time.monotonic()
        deadline = began + timeout
        if self.cache_binaries:
            self._prime_binaries(timeout)
        for attempt in range(3):
            try:
                with _file_lock(self.START_LOCK, timeout=max(1.0, deadline - time.monotonic())):
                    self._launch(exe)
                    self._wait_ready(deadline)
            except _StartFailed as exc:
                self._kill()
                if exc.retryable and attempt < 2 and time.monotonic() < deadline:
                    continue
                raise RuntimeError(str(exc)) from None
            except BaseException:
                self._kill()
                raise
            break
        self.port = self._configured_port("proxy") or self.ports["proxy_port"]
        self.startup_seconds = time.monotonic() - began
        return self

    def start_again(self, timeout: float = 120) -> Self:
        """Start again after :meth:`stop`, asking for the same ports, on the same data.

        The wrapper binds without SO_REUSEADDR, so a port with connections of the killed
        server in TIME_WAIT (60 s) is skipped and the next free one taken: :attr:`port`
        is updated. Put a :class:`TcpForwarder` in front for an address that survives restarts.
        """
        if not self.port:
            raise RuntimeError("start_again() needs a server that was started (and stopped) before")
        exe = self._executable_to_start("milvus-server", "install the real Milvus server with: pip install milvus==2.3.5")
        deadline = time.monotonic() + timeout
        try:
            with _file_lock(self.START_LOCK, timeout=timeout):
                self._launch(exe, keep_ports=True)
                self._wait_ready(deadline)
        except _StartFailed as exc:
            self._kill()
            raise RuntimeError(str(exc)) from None
        except BaseException:
            self._kill()
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
        config.update(self.extra_config)
        for key, value in config.items():
            text = ("true" if value else "false") if isinstance(value, bool) else str(value)
            argv += ["--extra-config", f"{key}={text}"]
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"  # else the welcome banner stays in the wrapper's pipe buffer
        env["ETCD_CONFIG_PATH"] = str(etcd_yaml)
        self._ready.clear()
        self._gave_up.clear()
        self._spawn(argv, env)

    def _wait_ready(self, deadline: float) -> None:
        assert self._proc is not None
        seen_binary = False
        while not self._ready.wait(0.2):
            if self._proc.poll() is not None:
                raise self._failure(f"milvus-server exited with code {self._proc.returncode}")
            if self._gave_up.is_set():
                raise self._failure("milvus-server gave up waiting for Milvus")
            others = [pid for pid in _group_pids(self._proc.pid) if pid != self._proc.pid]
            if others:
                seen_binary = True
            elif seen_binary:
                raise self._failure("the milvus process exited during startup")
            if time.monotonic() > deadline:
                raise self._failure("timed out waiting for 'Welcome to use Milvus!'")

    def _failure(self, what: str) -> _StartFailed:
        logs = self.data_dir / "logs"
        errors = _tail(logs / "milvus-stdout.log", 15, keep=lambda line: "[ERROR]" in line or "[FATAL]" in line or "panic" in line)
        stderr = _tail(logs / "milvus-stderr.log", 15)
        text = "\n".join(errors + stderr)
        retryable = "address already in use" in text
        parts = [
            f"{what} (data dir {self.data_dir}, ports {self.ports})",
            "--- milvus-server output ---",
            *self.output()[-20:],
            "--- milvus errors (logs/milvus-stdout.log) ---",
            *(line[:1000] for line in errors),
            "--- logs/milvus-stderr.log ---",
            *(line[:1000] for line in stderr),
        ]
        return _StartFailed("\n".join(parts), retryable=retryable)

    def _configured_port(self, section: str) -> int | None:
        """``<section>.port`` from the config the wrapper wrote (the port really used)."""
        try:
            text = (self.data_dir / "configs" / "milvus.yaml").read_text()
        except OSError:
            return None
        match = re.search(rf"^{section}:\n(?:(?:[ #].*)?\n)*?  port: (\d+)", text, re.MULTILINE)
        return int(match.group(1)) if match else None

    def _prime_binaries(self, timeout: float) -> None:
        """Copy the extracted binaries from a per-version cache into ``data_dir/bin``.

        The wrapper checks them by md5 and re-extracts anything that does not
        match, so a stale or foreign cache only costs time.
        """
        target = self.data_dir / "bin"
        if target.exists():
            return
        try:
            package = importlib.import_module("milvus")
        except ImportError:
            return
        extract = getattr(package, "_initialize_data_files", None)
        version = getattr(package, "__version__", None)
        if not callable(extract) or not isinstance(version, str):
            return
        default = Path(tempfile.gettempdir()) / f"kbrelease-milvus-bin-{version}-{os.getuid()}"
        cache = Path(os.environ.get("KBRELEASE_MILVUS_BIN_CACHE") or default)
        marker = cache / ".complete"
        if not marker.exists():
            with _file_lock(cache.with_name(cache.name + ".lock"), timeout=timeout):
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


class MilvusLiteServer(_ServerProcess):
    """``milvus-lite server`` (Milvus Lite 3.2.x, pure Python, gRPC) on a free loopback port."""

    name = "milvus-lite"

    def __init__(
        self,
        data_dir: Path,
        *,
        executable: str | os.PathLike[str] | None = None,
        keep_lines: int = 200,
    ) -> None:
        super().__init__(keep_lines)
        self.data_dir = Path(data_dir).absolute()
        self.executable = str(executable) if executable is not None else find_executable("milvus-lite")
        self.port = 0
        self.startup_seconds = 0.0

    @classmethod
    def available(cls) -> bool:
        return find_executable("milvus-lite") is not None

    def start(self, timeout: float = 60, port: int | None = None) -> Self:
        """Start; ready when the port accepts and ``list_databases()`` answers. ``port``: this one, else a free one."""
        exe = self._executable_to_start("milvus-lite", "install it with: pip install 'milvus-lite>=3.2.2,<3.3'")
        began = time.monotonic()
        deadline = began + timeout
        wanted = port
        for attempt in range(3):
            port = wanted or free_port()
            argv = [exe, "server", "--data-dir", str(self.data_dir), "--host", HOST, "--port", str(port)]
            self._spawn(argv, {**os.environ, "PYTHONUNBUFFERED": "1"})
            try:
                self._wait_ready(port, deadline)
            except _StartFailed as exc:
                self._kill()
                if exc.retryable and attempt < 2 and time.monotonic() < deadline:
                    time.sleep(0.5)  # a port asked for may still be held by the process just killed
                    continue
                raise RuntimeError(str(exc)) from None
            except BaseException:
                self._kill()
                raise
            self.port = port
            break
        self.startup_seconds = time.monotonic() - began
        return self

    def _wait_ready(self, port: int, deadline: float) -> None:
        assert self._proc is not None
        last_error = ""
        while True:
            if self._proc.poll() is not None:
                output = self.output()
                text = "\n".join(output)
                retryable = "address already in use" in text.lower() or "failed to bind" in text.lower()
                raise _StartFailed(
                    "\n".join([f"milvus-lite exited with code {self._proc.returncode} (port {port})", *output[-30:]]),
                    retryable=retryable,
                )
            if _port_open(port):
                last_error = self._probe(port)
                if not last_error:
                    return
            if time.monotonic() > deadline:
                raise _StartFailed("\n".join([f"milvus-lite not ready on port {port}: {last_error}", *self.output()[-30:]]))
            time.sleep(0.1)

    def start_again(self, timeout: float = 60) -> Self:
        """Start again after :meth:`stop`, on the same port and data: a store restart, as its clients see it."""
        if not self.port:
            raise RuntimeError("start_again() needs a server that was started (and stopped) before")
        return self.start(timeout, port=self.port)

    @staticmethod
    def _probe(port: int) -> str:
        """'' when a MilvusClient can list databases, else the error."""
        from pymilvus import MilvusClient

        try:
            # dedicated: a shared channel would outlive close() and be reused, with
            # pymilvus's 10 s idle pings, by every later client of this address.
            client = MilvusClient(f"http://{HOST}:{port}", timeout=5, dedicated=True)
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
        try:
            client.list_databases(timeout=5)
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
        finally:
            client.close()
        return ""


class TcpForwarder(Managed):
    """A TCP relay on a fixed loopback port to ``target`` (changeable): the stable address of a server that
    restarts on another port, as a Kubernetes Service is for a pod. Each connection is piped both ways."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = 0
        self._listener: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()

    @property
    def uri(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def running(self) -> bool:  # type: ignore[override]
        return self._listener is not None

    def start(self) -> Self:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((HOST, 0))
        sock.listen(64)
        self._listener, self.port = sock, sock.getsockname()[1]
        threading.Thread(target=self._accept, name="tcp-forwarder", daemon=True).start()
        return self

    def _accept(self) -> None:
        while self._listener is not None:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection((HOST, self.target), timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()  # the server is down: refuse, as it would
                continue
            with self._lock:
                self._conns |= {client, upstream}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
            with self._lock:
                self._conns.discard(sock)

    def stop(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        with self._lock:
            conns, self._conns = list(self._conns), set()
        for sock in conns:
            with contextlib.suppress(OSError):
                sock.close()


class S3Server(Managed):
    """moto's S3 (all AWS services, really) in this process, on a free loopback port.

    moto keeps its state per *process*: :meth:`reset` also wipes what
    ``moto.mock_aws`` set up elsewhere in the same process, and two S3Servers
    in one process share buckets.
    """

    ACCESS_KEY = "testing"
    SECRET_KEY = "testing"
    REGION = "us-east-1"

    def __init__(self) -> None:
        self._server: Any = None
        self.port = 0

    @property
    def endpoint_url(self) -> str:
        if not self.port:
            raise RuntimeError("S3Server is not started")
        return f"http://{HOST}:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> Self:
        from moto.server import ThreadedMotoServer

        if self._server is not None:
            raise RuntimeError("S3Server is already running")
        server = ThreadedMotoServer(ip_address=HOST, port=0, verbose=False)
        server.start()
        self.port = int(server.get_host_and_port()[1])
        self._server = server
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.stop()

    def env(self) -> dict[str, str]:
        """Environment for the code under test (boto3, s3fs and kbrelease's S3_ENDPOINT_URL).

        An ambient ``AWS_PROFILE`` is not overridden by this; unset it in tests.
        """
        return {
            "AWS_ACCESS_KEY_ID": self.ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": self.SECRET_KEY,
            "AWS_SESSION_TOKEN": "testing",
            "AWS_DEFAULT_REGION": self.REGION,
            "AWS_REGION": self.REGION,
            "AWS_ENDPOINT_URL_S3": self.endpoint_url,  # boto3 / aiobotocore (s3fs) without endpoint_url=
            "S3_ENDPOINT_URL": self.endpoint_url,  # kbrelease's s3.endpoint_url
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def client(self) -> Any:
        """A boto3 S3 client for this server (independent of the environment)."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.ACCESS_KEY,
            aws_secret_access_key=self.SECRET_KEY,
            region_name=self.REGION,
        )

    def make_bucket(self, name: str) -> str:
        """Create bucket ``name`` (3-63 chars, S3 rules) and return ``s3://name``."""
        self.client().create_bucket(Bucket=name)
        return f"s3://{name}"

    def reset(self) -> None:
        """Delete every bucket and object (moto's ``/moto-api/reset``)."""
        request = urllib.request.Request(self.endpoint_url + "/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()
