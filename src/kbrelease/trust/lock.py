"""One lock per environment: the commands that change releases take turns.

``publish``, ``build`` (whole, ``--prepare``, ``--finalize``), ``verify``,
``switch``, ``rollback``, ``gc``, ``package import`` and ``promote`` (into the
target environment) hold the environment's lock for their whole run, so two of
them (cron and a person) never pick the same next release name, never build
into the same database, and never lose the ``previous`` of a switch. Shards of
a parallel build (``build --source``) run at once by design and take no lock.

Two kinds, chosen by the store:

- the embedded store (``milvus_uri`` is a folder): a file lock
  (``filelock``) at ``<workspace>/state/locks/<environment>.lock``. The kernel
  releases it when its process dies, even on ``kill -9``.
- a Milvus server (``milvus_uri`` is a URL, possibly shared by many machines):
  a lease stored in the registry collection. Each contender upserts its own
  claim row (kind ``lock``: holder ``host:pid:uuid``, operation, since,
  ``expires_at``), then reads every claim of the environment: it holds the lock
  when its claim is the only unexpired one on two reads 0.3 s apart (one read
  that misses a row, as a server flushing its memory table can answer, must
  not make a second holder); otherwise it deletes its claim and waits. Reads
  are strongly consistent, so of two contenders at least one sees the other:
  never two holders. A background thread renews the lease every third of its
  length (a failed renewal is retried within a second); a holder that crashed
  is taken over once its lease has expired on both reads
  (``KBRELEASE_LOCK_LEASE_S``, default 60 s).

A second command waits, saying who holds the lock ("waiting for the
environment lock held by pid N on host H since T (publish)"), or with
``--no-wait`` refuses at once with :class:`LockBusy` (exit code 75, "try
again later").
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from kbrelease.errors import LockBusy
from kbrelease.store.milvus import is_embedded
from kbrelease.trust import faults
from kbrelease.trust.names import check_name

if TYPE_CHECKING:
    from kbrelease.release.registry import Registry

log = logging.getLogger("kbrelease.lock")
LEASE_ENV = "KBRELEASE_LOCK_LEASE_S"
DEFAULT_LEASE_S = 60.0
POLL_S = 0.5
SETTLE_S = 0.3
REPEAT_MESSAGE_S = 60.0


def lease_seconds() -> float:
    try:
        return max(1.0, float(os.environ.get(LEASE_ENV, DEFAULT_LEASE_S)))
    except ValueError:
        return DEFAULT_LEASE_S


@dataclass
class Holder:
    """Who holds (or claims) an environment lock."""

    id: str
    host: str
    pid: int
    operation: str
    since: str
    expires_at: float = 0.0

    @classmethod
    def me(cls, operation: str, lease: float = 0.0) -> Holder:
        host = socket.gethostname()[:64] or "localhost"
        pid = os.getpid()
        return cls(f"{host}:{pid}:{uuid.uuid4().hex[:12]}", host, pid, operation, datetime.now(UTC).isoformat(timespec="seconds"), time.time() + lease)

    @classmethod
    def parse(cls, data: Any) -> Holder | None:
        if not isinstance(data, dict):
            return None
        try:
            return cls(str(data["id"]), str(data["host"]), int(data["pid"]), str(data["operation"]), str(data["since"]), float(data.get("expires_at", 0.0)))
        except (KeyError, TypeError, ValueError):
            return None

    def describe(self) -> str:
        return f"pid {self.pid} on host {self.host} since {self.since} ({self.operation})"


class _Backend(Protocol):
    def try_acquire(self, me: Holder) -> Holder | None:
        """None when ``me`` now holds the lock; else the holder seen (or ``me`` when unknown)."""

    def release(self, me: Holder) -> None: ...


class FileBackend:
    """The embedded store's lock: ``flock`` on a file in the workspace, holder details beside it."""

    def __init__(self, path: Path) -> None:
        from filelock import FileLock

        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.info = path.with_name(path.name + ".holder.json")
        self._lock = FileLock(str(path), thread_local=False)

    def try_acquire(self, me: Holder) -> Holder | None:
        from filelock import Timeout

        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            try:
                return Holder.parse(json.loads(self.info.read_text(encoding="utf-8"))) or me
            except (OSError, ValueError):
                return me
        tmp = self.info.with_name(f".{self.info.name}.{os.getpid()}")
        tmp.write_text(json.dumps(asdict(me)), encoding="utf-8")
        os.replace(tmp, self.info)
        return None

    def release(self, me: Holder) -> None:
        with contextlib.suppress(OSError):
            self.info.unlink()
        self._lock.release(force=True)


class LeaseBackend:
    """A Milvus server's lock: a lease with expiry in the registry collection (see the module doc)."""

    def __init__(self, registry: Registry, lease: float) -> None:
        self.registry = registry
        self.lease = lease
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self._created: bool | None = None

    def _claims(self) -> list[Holder]:
        return [h for h in (Holder.parse(b) for b in self.registry.lock_claims()) if h is not None]

    def _others(self, me: Holder) -> tuple[bool, list[Holder], list[Holder]]:
        """(our claim is there, the unexpired claims of others, the expired ones) as one read shows them."""
        now = time.time()
        claims = self._claims()
        mine = any(claim.id == me.id for claim in claims)
        others = [c for c in claims if c.id != me.id]
        return mine, [c for c in others if c.expires_at >= now], [c for c in others if c.expires_at < now]

    def try_acquire(self, me: Holder) -> Holder | None:
        if self._created is None:
            self._created = not self.registry.exists()
        me.expires_at = time.time() + self.lease
        self.registry.put_lock_claim(me.id, asdict(me))
        # Two reads a moment apart must agree that no other claim is alive before we hold the lock: one read
        # that misses a row (a server flushing its memory table, a renewal in flight) must not make two holders.
        expired_seen: dict[str, float] = {}
        for attempt in range(2):
            if attempt:
                time.sleep(SETTLE_S)
            mine, alive, expired = self._others(me)
            if not mine:
                return me  # our claim is gone (the registry was dropped and created again meanwhile): try again
            if alive:
                self.registry.delete_lock_claim(me.id)
                return min(alive, key=lambda h: (h.since, h.id))
            for claim in expired:
                if expired_seen.get(claim.id) == claim.expires_at:  # expired on both reads, not renewed between
                    log.warning("taking over the environment lock of %s: its lease expired (the process is gone)", claim.describe())
                    self.registry.delete_lock_claim(claim.id)
                expired_seen[claim.id] = claim.expires_at
        self._start_renewing(me)
        return None

    def _start_renewing(self, me: Holder) -> None:
        self._stop.clear()

        def renew() -> None:
            wait = self.lease / 3
            while not self._stop.wait(wait):
                try:
                    me.expires_at = time.time() + self.lease
                    self.registry.put_lock_claim(me.id, asdict(me))
                    wait = self.lease / 3
                except Exception as exc:  # noqa: BLE001 - renewing is retried soon; the build goes on
                    log.warning("could not renew the environment lock (trying again in 1 s): %s", exc)
                    wait = min(1.0, self.lease / 10)

        self._renewer = threading.Thread(target=renew, name="kbrelease-lock-renew", daemon=True)
        self._renewer.start()

    def release(self, me: Holder) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(timeout=5)
            self._renewer = None
        self.registry.delete_lock_claim(me.id)
        created, self._created = self._created, None
        if created:
            # The lock created the registry and the command wrote nothing (a refused import): leave no trace.
            self.registry.drop_if_empty()


class EnvLock:
    """The lock of one environment, reentrant within one process object (publish → build → switch)."""

    def __init__(self, backend: _Backend, environment: str, wait: bool = True, on_wait: Callable[[str], None] | None = None) -> None:
        self.backend = backend
        self.environment = environment
        self.wait = wait
        self.on_wait = on_wait or log.warning
        self._mutex = threading.RLock()
        self._depth = 0
        self._me: Holder | None = None

    @classmethod
    def for_config(
        cls, milvus_uri: str, state_dir: Path, environment: str, registry: Registry, wait: bool = True, on_wait: Callable[[str], None] | None = None
    ) -> EnvLock:
        check_name("environment", environment)  # it names the lock file
        if is_embedded(milvus_uri):
            backend: _Backend = FileBackend(state_dir / "locks" / f"{environment}.lock")
        else:
            backend = LeaseBackend(registry, lease_seconds())
        return cls(backend, environment, wait, on_wait)

    @property
    def held(self) -> bool:
        return self._depth > 0

    @property
    def depth(self) -> int:
        """How many nested holds this object has now (1 inside the outermost)."""
        return self._depth

    @contextlib.contextmanager
    def hold(self, operation: str) -> Iterator[None]:
        """Hold the lock for ``operation`` (taken once; nested holds of the same object are free)."""
        with self._mutex:
            if self._depth == 0:
                self._acquire(operation)
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0 and self._me is not None:
                    me, self._me = self._me, None
                    self.backend.release(me)

    def _acquire(self, operation: str) -> None:
        me = Holder.me(operation)
        told_at: float | None = None
        while True:
            other = self.backend.try_acquire(me)
            if other is None:
                self._me = me
                faults.point("after:lock.acquired")
                return
            who = "another process" if other.id == me.id else other.describe()
            if not self.wait:
                raise LockBusy(
                    f"environment {self.environment!r} is locked by {who}; {operation} refused (--no-wait). "
                    "Run it again when that command has finished, or without --no-wait to wait for it"
                )
            now = time.monotonic()
            if told_at is None or now - told_at > REPEAT_MESSAGE_S:
                self.on_wait(f"waiting for the environment lock of {self.environment!r} held by {who} before {operation}")
                told_at = now
            time.sleep(POLL_S + random.uniform(0, POLL_S))  # noqa: S311 - jitter, not security
