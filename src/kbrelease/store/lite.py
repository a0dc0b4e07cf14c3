"""The embedded store: one Milvus Lite server per workspace, shared by every process.

Milvus Lite 3.x holds an exclusive lock on its data folder, so a search
service and a build in another terminal cannot both open it. kbrelease
therefore runs ``milvus-lite server`` on 127.0.0.1 for the data folder, started
on first use by whichever process needs it and found again by the others
through ``server.json`` beside the folder. ``kbrelease store stop`` ends it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from kbrelease.errors import StoreError, StoreUnreachable


def _state_file(data_dir: Path) -> Path:
    return data_dir.parent / f"{data_dir.name}.server.json"


@contextlib.contextmanager
def _locked(data_dir: Path) -> Iterator[None]:
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    lock_path = data_dir.parent / f"{data_dir.name}.server.lock"
    with lock_path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _alive(pid: int) -> bool:
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
    path = _state_file(data_dir)
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    pid, port = int(state.get("pid", 0)), int(state.get("port", 0))
    if pid and _alive(pid) and _port_open(port):
        return {"pid": pid, "port": port}
    return None


def _binary() -> str:
    here = Path(sys.executable).parent / "milvus-lite"
    found = str(here) if here.exists() else shutil.which("milvus-lite")
    if not found:
        raise StoreError("the milvus-lite command is missing; pip install 'milvus-lite>=3.2' (or set MILVUS_URI to a Milvus server)")
    return found


def ensure_server(data_dir: Path, timeout: float = 60.0) -> str:
    """Start (or find) the Lite server for ``data_dir``; return its URI."""
    data_dir = data_dir.resolve()
    with _locked(data_dir):
        found = running_server(data_dir)
        if found:
            return f"http://127.0.0.1:{found['port']}"
        data_dir.mkdir(parents=True, exist_ok=True)
        port = _free_port()
        log = (data_dir.parent / f"{data_dir.name}.server.log").open("ab")
        proc = subprocess.Popen(
            [_binary(), "server", "--data-dir", str(data_dir), "--host", "127.0.0.1", "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # outlives the command that started it
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise StoreError(
                    f"the embedded Milvus Lite server for {data_dir} exited with code {proc.returncode}; "
                    f"see {data_dir.parent / (data_dir.name + '.server.log')}"
                )
            if _port_open(port):
                _state_file(data_dir).write_text(json.dumps({"pid": proc.pid, "port": port, "data_dir": str(data_dir)}))
                return f"http://127.0.0.1:{port}"
            time.sleep(0.1)
        proc.kill()
        raise StoreUnreachable(f"the embedded Milvus Lite server for {data_dir} did not start within {timeout:.0f}s; see its log beside the folder")


def stop_server(data_dir: Path) -> bool:
    """Stop the Lite server of ``data_dir``; True if one was running."""
    data_dir = data_dir.resolve()
    with _locked(data_dir):
        found = running_server(data_dir)
        _state_file(data_dir).unlink(missing_ok=True)
        if not found:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.killpg(found["pid"], signal.SIGTERM)
        for _ in range(50):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(found["pid"], os.WNOHANG)  # reap it if this process started it
            if not _alive(found["pid"]):
                break
            time.sleep(0.1)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(found["pid"], signal.SIGKILL)
        return True
