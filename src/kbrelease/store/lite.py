"""The embedded store: one Milvus Lite server per workspace, shared by every process.

Milvus Lite 3.x holds an exclusive lock on its data folder, so a search
service and a build in another terminal cannot both open it. kbrelease
therefore runs a Milvus Lite server on 127.0.0.1 for the data folder
(:mod:`kbrelease.store.lite_server`), started on first use by whichever
process needs it and found again by the others through ``server.json`` beside
the folder. ``kbrelease store stop`` ends it.

It does not run forever: every process that gets the server from
:func:`ensure_server` registers its pid beside the folder (``server.clients/``),
and the server stops itself once, for ``idle_stop_minutes``, no registered
process is alive and no connection is open (a program reading a release
collection directly counts by its connection). The next command starts it
again; the data stays. Each running server also registers in a per-user
folder (``store.servers_dir``), which ``kbrelease store status`` lists.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kbrelease.errors import StoreError, StoreUnreachable


def state_file(data_dir: Path) -> Path:
    return data_dir.parent / f"{data_dir.name}.server.json"


def log_file(data_dir: Path) -> Path:
    return data_dir.parent / f"{data_dir.name}.server.log"


def clients_dir(data_dir: Path) -> Path:
    """One empty file per process that got this server from :func:`ensure_server`, named by its pid."""
    return data_dir.parent / f"{data_dir.name}.server.clients"


@contextlib.contextmanager
def locked(data_dir: Path) -> Iterator[None]:
    """The lock of ``data_dir``'s server: starting, handing out, stopping (by command or when idle) take it."""
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    lock_path = data_dir.parent / f"{data_dir.name}.server.lock"
    with lock_path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def running_server(data_dir: Path) -> dict[str, int] | None:
    """``{"pid", "port"}`` of the live server for ``data_dir``, or None."""
    path = state_file(data_dir)
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    pid, port = int(state.get("pid", 0)), int(state.get("port", 0))
    if pid and alive(pid) and _port_open(port):
        return {"pid": pid, "port": port}
    return None


def _register_client(data_dir: Path) -> None:
    folder = clients_dir(data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / str(os.getpid())).touch()


def live_clients(data_dir: Path, prune: bool = False) -> list[int]:
    """Pids of the registered processes that are still alive (``prune``: delete the others' files)."""
    found = []
    with contextlib.suppress(FileNotFoundError):
        for entry in clients_dir(data_dir).iterdir():
            pid = int(entry.name) if entry.name.isdigit() else 0
            if pid and alive(pid):
                found.append(pid)
            elif prune:
                entry.unlink(missing_ok=True)
    return sorted(found)


def ensure_server(data_dir: Path, timeout: float = 60.0, idle_stop_minutes: float = 30.0, servers_dir: Path | None = None) -> str:
    """Start (or find) the Lite server for ``data_dir``; return its URI. This process is registered as one of its users.

    ``idle_stop_minutes`` (0: never) and ``servers_dir`` (the per-user registry) apply to a server started here.
    """
    data_dir = data_dir.resolve()
    with locked(data_dir):
        found = running_server(data_dir)
        if found:
            _register_client(data_dir)  # under the lock: an idle server about to stop sees this process first
            return f"http://127.0.0.1:{found['port']}"
        data_dir.mkdir(parents=True, exist_ok=True)
        port = _free_port()
        command = [sys.executable, "-m", "kbrelease.store.lite_server", "--data-dir", str(data_dir), "--port", str(port)]
        command += ["--idle-stop-seconds", str(idle_stop_minutes * 60)]
        if servers_dir is not None:
            command += ["--servers-dir", str(servers_dir)]
        log = log_file(data_dir).open("ab")
        proc = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # outlives the command that started it
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise StoreError(f"the embedded Milvus Lite server for {data_dir} exited with code {proc.returncode}; see {log_file(data_dir)}")
            if _port_open(port):
                state_file(data_dir).write_text(json.dumps({"pid": proc.pid, "port": port, "data_dir": str(data_dir)}))
                _register_client(data_dir)
                return f"http://127.0.0.1:{port}"
            time.sleep(0.1)
        proc.kill()
        raise StoreUnreachable(f"the embedded Milvus Lite server for {data_dir} did not start within {timeout:.0f}s; see its log beside the folder")


def stop_server(data_dir: Path) -> bool:
    """Stop the Lite server of ``data_dir``; True if one was running."""
    data_dir = data_dir.resolve()
    with locked(data_dir):
        found = running_server(data_dir)
        state_file(data_dir).unlink(missing_ok=True)
        if not found:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.killpg(found["pid"], signal.SIGTERM)
        for _ in range(50):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(found["pid"], os.WNOHANG)  # reap it if this process started it
            if not alive(found["pid"]):
                break
            time.sleep(0.1)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(found["pid"], signal.SIGKILL)
        return True


# --- the per-user registry of running servers ------------------------------------------
_ESTABLISHED = "01"


def open_connections(port: int) -> int | None:
    """Established TCP connections to 127.0.0.1:``port`` (server side), or None where that cannot be read."""
    tables = [Path("/proc/net/tcp"), Path("/proc/net/tcp6")]
    if tables[0].exists():
        count = 0
        for table in tables:
            with contextlib.suppress(OSError):
                for line in table.read_text().splitlines()[1:]:
                    fields = line.split()
                    if len(fields) > 3 and fields[3] == _ESTABLISHED and int(fields[1].rsplit(":", 1)[1], 16) == port:
                        count += 1
        return count
    with contextlib.suppress(OSError, subprocess.SubprocessError):  # macOS
        out = subprocess.run(["lsof", "-nP", f"-iTCP@127.0.0.1:{port}", "-sTCP:LISTEN,ESTABLISHED"], capture_output=True, text=True, timeout=10)
        return sum(1 for line in out.stdout.splitlines() if f":{port}->" in line)
    return None


def registry_entry(servers_dir: Path, pid: int) -> Path:
    return servers_dir / f"{pid}.json"


def rss_bytes(pid: int) -> int | None:
    """Resident memory of process ``pid`` (None if unknown)."""
    statm = Path(f"/proc/{pid}/statm")
    with contextlib.suppress(OSError, ValueError, IndexError):
        if statm.exists():
            return int(statm.read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    with contextlib.suppress(OSError, ValueError, subprocess.SubprocessError):
        out = subprocess.run(["ps", "-o", "rss=", "-p", str(pid)], capture_output=True, text=True, timeout=5).stdout.strip()
        return int(out) * 1024 if out else None
    return None


def list_servers(servers_dir: Path) -> list[dict[str, Any]]:
    """Every running embedded server registered in ``servers_dir`` (this user's), oldest first.

    Each: ``pid``, ``port``, ``data_dir``, ``workspace``, ``rss_bytes``, ``idle_seconds`` (0 while in use),
    ``clients`` (live processes using it), ``connections`` and ``idle_stop_minutes``. Entries of servers
    that died without unregistering are deleted.
    """
    found = []
    now = time.time()
    with contextlib.suppress(FileNotFoundError):
        for path in sorted(servers_dir.glob("*.json")):
            try:
                entry = json.loads(path.read_text())
                pid, port = int(entry["pid"]), int(entry["port"])
            except (OSError, ValueError, KeyError, TypeError):
                continue  # being written; the next look sees it
            if not alive(pid):
                path.unlink(missing_ok=True)
                continue
            data_dir = Path(str(entry.get("data_dir", "")))
            # Read now, not from the entry (written every few seconds): who uses it, and since when it is unused.
            clients, connections = live_clients(data_dir), open_connections(port)
            idle_since = None if clients or connections else entry.get("idle_since") or now
            found.append(
                {
                    **entry,
                    "workspace": str(data_dir.parent),
                    "clients": clients,
                    "connections": connections,
                    "rss_bytes": rss_bytes(pid),
                    "idle_seconds": round(now - float(idle_since), 1) if idle_since else 0.0,
                }
            )
    return sorted(found, key=lambda e: float(e.get("started_at") or 0))
