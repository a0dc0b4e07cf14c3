"""Server processes kbrelease runs on 127.0.0.1: ports, process groups, memory, log tails, file locks.

Linux-first: process groups and resident memory are read from ``/proc`` (an
empty answer elsewhere). Used by the managed engines (:mod:`kbrelease.store.milvus_local`)
and by the test suite's servers (``tests/servers.py``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

HOST = "127.0.0.1"


def free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports on 127.0.0.1 (all held open until chosen)."""
    with contextlib.ExitStack() as stack:
        ports: list[int] = []
        for _ in range(n):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((HOST, 0))
            ports.append(sock.getsockname()[1])
        return ports


def port_open(port: int, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:``port``."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X") or _threads_alive(str(pid))


def group_pids(pgid: int) -> list[int]:
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


def rss_bytes(pid: int) -> int:
    """Resident memory of one process (Linux; 0 elsewhere or when gone)."""
    try:
        for line in Path("/proc", str(pid), "status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def group_rss_bytes(pgid: int) -> int:
    """Resident memory of a whole process group (a server and the processes it started)."""
    return sum(rss_bytes(pid) for pid in group_pids(pgid))


def environ_of(pid: int) -> dict[str, str]:
    """The environment process ``pid`` started with ({} when unreadable)."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}


def kill_group(pgid: int, wait_s: float = 10.0) -> None:
    """SIGKILL process group ``pgid`` and wait until every member (and thread) is gone."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pgid, os.WNOHANG)  # reap the leader if this process started it
        if not group_pids(pgid):
            return
        time.sleep(0.05)


def tail(path: Path, lines: int, max_bytes: int = 1 << 20, keep: Callable[[str], bool] | None = None) -> list[str]:
    """The last ``lines`` lines of a log file (only those ``keep`` accepts); [] when unreadable."""
    try:
        with path.open("rb") as fh:
            fh.seek(max(0, path.stat().st_size - max_bytes))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return []
    selected = [line for line in text.splitlines() if keep is None or keep(line)]
    return selected[-lines:]


@contextlib.contextmanager
def file_lock(path: Path, timeout: float) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (blocks other threads and processes); TimeoutError after ``timeout``."""
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
