"""Real processes for the service tests: `kbrelease serve` replicas, nginx, and a bounded load generator."""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import httpx
import pytest

from servers import HOST, _port_open, _ServerProcess, free_port


def require_binary(path: str, package: str) -> str:
    found = path if Path(path).is_file() else shutil.which(Path(path).name)
    if not found:
        pytest.skip(f"{package} is not installed ({path}); scripts/setup installs it when run as root (apt-get install {package})")
    return found


class ServeProcess(_ServerProcess):
    """``kbrelease -c CONFIG serve --port PORT`` in its own session."""

    name = "kbrelease-serve"

    def __init__(self, config: Path, port: int | None = None, env: Mapping[str, str] | None = None) -> None:
        super().__init__(keep_lines=400)
        self.config = config
        self.port = port or free_port()
        self.extra_env = dict(env or {})
        self.executable = sys.executable

    def start(self, timeout: float = 240, ready: bool = True) -> Self:
        exe = self._executable_to_start("python", "run the tests from the project's virtualenv")
        argv = [exe, "-m", "kbrelease.cli", "-c", str(self.config), "serve", "--port", str(self.port)]
        self._spawn(argv, {**os.environ, **self.extra_env})
        self.wait("/readyz" if ready else "/healthz", timeout)
        return self

    def wait(self, path: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running:
                raise RuntimeError("kbrelease serve exited:\n" + "\n".join(self.output()[-40:]))
            try:
                if httpx.get(f"{self.uri}{path}", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"kbrelease serve on {self.port} not 200 on {path} within {timeout:.0f}s:\n" + "\n".join(self.output()[-40:]))

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.get(f"{self.uri}{path}", timeout=10, **kwargs)


def raw_get(port: int, target: str, timeout: float = 30) -> tuple[int, str]:
    """One HTTP/1.1 GET over a plain socket: for request lines no HTTP client library will send (100 KB URLs)."""
    import socket

    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.decode("utf-8", "replace").partition("\r\n\r\n")
    return int(head.split(" ", 2)[1]), body


class NginxServer(_ServerProcess):
    """Debian's nginx, unprivileged-style: its own prefix folder, in the foreground, logging to stderr."""

    name = "nginx"

    def __init__(self, prefix: Path, upstreams: Sequence[str], port: int | None = None) -> None:
        super().__init__()
        self.prefix = prefix
        self.upstreams = list(upstreams)
        self.port = port or free_port()
        self.executable = require_binary("/usr/sbin/nginx", "nginx")

    def start(self, timeout: float = 30) -> Self:
        from kbrelease.service.nginx import render_nginx_conf

        exe = self._executable_to_start("nginx", "apt-get install nginx")
        self.prefix.mkdir(parents=True, exist_ok=True)
        conf = self.prefix / "nginx.conf"
        conf.write_text(render_nginx_conf(self.upstreams, self.port, worker_processes=1), encoding="utf-8")
        self._spawn([exe, "-p", str(self.prefix), "-c", str(conf), "-e", "stderr", "-g", "daemon off;"], os.environ)
        deadline = time.monotonic() + timeout
        while not _port_open(self.port):
            if not self.running or time.monotonic() > deadline:
                raise RuntimeError("nginx did not start:\n" + "\n".join(self.output()[-20:]))
            time.sleep(0.05)
        return self


@dataclass
class Outcome:
    at: float
    seconds: float
    status: int
    release: str | None
    error: str | None = None


@dataclass
class Load:
    """``workers`` threads searching through ``base_url`` until stopped; every outcome kept."""

    base_url: str
    workers: int = 4
    queries: Sequence[str] = ("vpn from home", "fire drill", "password rotation", "gym discount", "parental leave")
    outcomes: list[Outcome] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __enter__(self) -> Self:
        for i in range(self.workers):
            thread = threading.Thread(target=self._run, args=(i,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def _run(self, worker: int) -> None:
        with httpx.Client(base_url=self.base_url, timeout=30) as client:
            n = worker
            while not self._stop.is_set():
                q = self.queries[n % len(self.queries)]
                n += 1
                started = time.monotonic()
                try:
                    resp = client.get("/api/v1/search", params={"q": q, "k": 3})
                    release = resp.json().get("release") if resp.status_code == 200 else None
                    outcome = Outcome(started, time.monotonic() - started, resp.status_code, release, None if resp.status_code == 200 else resp.text[:300])
                except httpx.HTTPError as exc:
                    outcome = Outcome(started, time.monotonic() - started, 0, None, f"{type(exc).__name__}: {exc}")
                with self._lock:
                    self.outcomes.append(outcome)

    def failures(self) -> list[Outcome]:
        with self._lock:
            return [o for o in self.outcomes if o.status != 200]

    def since(self, t: float) -> list[Outcome]:
        with self._lock:
            return [o for o in self.outcomes if o.at >= t]


__all__ = ["HOST", "Load", "NginxServer", "Outcome", "ServeProcess", "raw_get", "require_binary"]
