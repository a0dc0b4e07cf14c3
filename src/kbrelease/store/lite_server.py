"""The embedded Milvus Lite server process, which stops itself when idle.

Started by :func:`kbrelease.store.lite.ensure_server` as
``python -m kbrelease.store.lite_server --data-dir D --port P`` in a session of
its own. It serves Milvus Lite's gRPC adapter on 127.0.0.1:P in this process,
registers in the per-user folder (``--servers-dir``) for ``kbrelease store
status``, and watches its use: it is *in use* while a process registered in
``<data dir>.server.clients/`` is alive or a connection to its port is open.
After ``--idle-stop-seconds`` not in use (0: never), it takes the server lock
(so no command is handed this server meanwhile), checks once more, removes its
``server.json``, closes the database and exits. SIGTERM (``kbrelease store
stop``) closes it the same way.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from kbrelease.store.lite import live_clients, locked, open_connections, registry_entry, state_file


class IdleWatch:
    """When the server was last in use, and the registry entry that shows it."""

    def __init__(self, data_dir: Path, port: int, idle_stop_seconds: float, servers_dir: Path | None) -> None:
        self.data_dir = data_dir
        self.port = port
        self.idle_stop_seconds = idle_stop_seconds
        self.entry = registry_entry(servers_dir, os.getpid()) if servers_dir is not None else None
        self.idle_since: float | None = time.time()
        self.started_at = time.time()
        self._shown: dict[str, Any] = {}

    def in_use(self) -> tuple[list[int], int | None]:
        clients = [pid for pid in live_clients(self.data_dir, prune=True) if pid != os.getpid()]
        return clients, open_connections(self.port)

    def look(self) -> bool:
        """Update the idle clock and the registry entry; True when the server has been idle long enough to stop."""
        clients, connections = self.in_use()
        now = time.time()
        if clients or connections:
            self.idle_since = None
        elif self.idle_since is None:
            self.idle_since = now
        self.show({"clients": clients, "connections": connections, "idle_since": self.idle_since})
        return bool(self.idle_stop_seconds) and self.idle_since is not None and now - self.idle_since >= self.idle_stop_seconds

    def show(self, state: dict[str, Any]) -> None:
        if self.entry is None or state == self._shown:
            return
        self._shown = state
        data = {
            "pid": os.getpid(),
            "port": self.port,
            "data_dir": str(self.data_dir),
            "started_at": self.started_at,
            "idle_stop_minutes": round(self.idle_stop_seconds / 60, 3),
            "log": str(self.data_dir.parent / f"{self.data_dir.name}.server.log"),
            **state,
        }
        try:
            self.entry.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.entry.with_suffix(".tmp")
            tmp.write_text(json.dumps(data))
            os.replace(tmp, self.entry)
        except OSError as exc:  # the listing is a convenience: the server serves without it
            print(f"kbrelease: cannot register in {self.entry.parent} ({exc}); `kbrelease store status` will not list this server", flush=True)
            self.entry = None

    def unregister(self) -> None:
        if self.entry is not None:
            self.entry.unlink(missing_ok=True)


def serve(data_dir: Path, port: int, idle_stop_seconds: float, servers_dir: Path | None) -> int:
    from milvus_lite.adapter.grpc.server import start_server_in_thread

    server, db, bound = start_server_in_thread(str(data_dir), "127.0.0.1", port)
    idle = f"after {idle_stop_seconds:g} s unused" if idle_stop_seconds else "never"
    print(f"kbrelease: Milvus Lite serving {data_dir} on 127.0.0.1:{bound} (pid {os.getpid()}); idle stop: {idle}", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    watch = IdleWatch(data_dir, bound, idle_stop_seconds, servers_dir)
    closed = False
    poll = max(0.2, min(15.0, idle_stop_seconds / 10)) if idle_stop_seconds else 5.0
    reason = "stopped by signal"
    try:
        watch.look()  # registered at once, for `kbrelease store status`
        while not stop.wait(poll):
            if not watch.look():
                continue
            with locked(data_dir):
                clients, connections = watch.in_use()  # a command may have been handed this server while we waited
                if clients or connections:
                    watch.idle_since = None
                    continue
                reason = f"idle for {idle_stop_seconds:g} s"
                state_file(data_dir).unlink(missing_ok=True)
                _close(server, db)
                closed = True
                break
    finally:
        watch.unregister()
        if not closed:
            _close(server, db)
        print(f"kbrelease: Milvus Lite for {data_dir} stopped ({reason})", flush=True)
    return 0


def _close(server: Any, db: Any) -> None:
    server.stop(grace=2).wait(5)
    db.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kbrelease.store.lite_server", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--data-dir", required=True, type=Path)
    parser.add_argument("--port", required=True, type=int)
    parser.add_argument("--idle-stop-seconds", type=float, default=1800.0, help="0: never")
    parser.add_argument("--servers-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    return serve(args.data_dir.resolve(), args.port, max(0.0, args.idle_stop_seconds), args.servers_dir)


if __name__ == "__main__":
    sys.exit(main())
