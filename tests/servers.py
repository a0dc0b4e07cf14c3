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

``MilvusServer`` runs ``milvus-server`` (PyPI package ``milvus==2.3.5``) through the
library's :class:`kbrelease.store.milvus_local.MilvusStandalone`, the same code that runs
the ``milvus-local`` engine; its docstring lists what it works around (ports, etcd,
the start lock, SIGKILL of the process group, the binary cache). Extracted binaries
are cached in ``$KBRELEASE_MILVUS_BIN_CACHE`` or the temp dir.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import weakref
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from kbrelease.store.processes import HOST, free_ports, group_pids, port_open, rss_bytes

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


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (chosen by the OS)."""
    return free_ports(1)[0]


def find_executable(name: str) -> str | None:
    """``name`` next to the running interpreter (its venv), else on ``PATH``."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which(name)


_port_open = port_open
_group_pids = group_pids
_rss_bytes = rss_bytes


_LIVE: weakref.WeakSet[Managed] = weakref.WeakSet()


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


class MilvusServer(Managed):
    """Milvus 2.3.5 standalone (``milvus-server`` from ``pip install milvus==2.3.5``), for one test.

    A thin wrapper around the library's :class:`kbrelease.store.milvus_local.MilvusStandalone`
    (the ``milvus-local`` engine): the same start, health wait and stop, plus the test
    conventions (RuntimeError on failure, stopped at exit). ``data_dir`` should be fresh
    for each server. :attr:`uri` is ``http://127.0.0.1:PORT``; auth is off, so any token
    (or none) is accepted.
    """

    name = "milvus-server"

    def __init__(
        self,
        data_dir: Path,
        *,
        executable: str | os.PathLike[str] | None = None,
        extra_config: Mapping[str, str | int | float | bool] | None = None,
        cache_binaries: bool = True,
    ) -> None:
        from kbrelease.store.milvus_local import MilvusStandalone, default_bin_cache

        cache = Path(os.environ["KBRELEASE_MILVUS_BIN_CACHE"]) if os.environ.get("KBRELEASE_MILVUS_BIN_CACHE") else default_bin_cache()
        self._server = MilvusStandalone(data_dir, executable=executable, extra_config=extra_config, bin_cache=cache if cache_binaries else None)
        self.data_dir = self._server.data_dir
        self.startup_seconds = 0.0

    @classmethod
    def available(cls) -> bool:
        """Whether ``milvus-server`` can be found (use for ``pytest.skip``)."""
        return find_executable("milvus-server") is not None

    @property
    def executable(self) -> str | None:
        return self._server.executable

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def ports(self) -> dict[str, int]:
        return self._server.ports

    @property
    def uri(self) -> str:
        if not self.port:
            raise RuntimeError("MilvusServer is not started")
        return self._server.uri

    @property
    def running(self) -> bool:
        return self._server.running

    @property
    def pid(self) -> int | None:
        """Pid of the launched wrapper (also its process-group id)."""
        return self._server.pid

    def pids(self) -> list[int]:
        return self._server.pids()

    def rss_bytes(self) -> int:
        return self._server.rss_bytes()

    def output(self) -> list[str]:
        return self._server.output()

    def start(self, timeout: float = 120) -> Self:
        """Start and wait for the welcome line; RuntimeError with log tails on failure."""
        from kbrelease.errors import StoreError

        if self.running:
            raise RuntimeError("MilvusServer is already running")
        exe = self.executable
        if not exe or not Path(exe).is_file():
            raise RuntimeError(f"milvus-server not found ({exe or 'not beside ' + sys.executable + ' nor on PATH'}); pip install milvus==2.3.5")
        _LIVE.add(self)
        try:
            self._server.start(timeout)
        except StoreError as exc:
            raise RuntimeError(str(exc)) from None
        self.startup_seconds = self._server.startup_seconds
        return self

    def start_again(self, timeout: float = 120) -> Self:
        """Start again after :meth:`stop`, asking for the same ports, on the same data.

        A port with connections of the killed server in TIME_WAIT is skipped and the next
        free one taken: :attr:`port` is updated. Put a :class:`TcpForwarder` in front for an
        address that survives restarts.
        """
        from kbrelease.errors import StoreError

        if not self.port:
            raise RuntimeError("start_again() needs a server that was started (and stopped) before")
        _LIVE.add(self)
        try:
            self._server.start_again(timeout)
        except StoreError as exc:
            raise RuntimeError(str(exc)) from None
        return self

    def stop(self) -> None:
        """SIGKILL the whole process group and wait for it; idempotent."""
        _LIVE.discard(self)
        self._server.stop()


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
