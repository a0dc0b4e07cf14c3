"""Follow the live pointer from a long-running process (the search service).

Reading the pointer and the release record costs two registry queries; a
service answering hundreds of searches a second must not pay them per request.
A :class:`LiveFollower` keeps the last ``(pointer, live record)`` pair as one
immutable snapshot and re-reads it at most every ``refresh_seconds``, so:

* a switch reaches every replica within ``refresh_seconds`` (plus one read);
* with ``background=True`` (the service) no request waits for that read: the
  first request after half of ``refresh_seconds`` starts it in a background
  thread and is answered from the snapshot it has (on Milvus 2.3 a registry read waits for
  the server's next time tick, ~0.3-0.5 s, which made one request in fifty
  that slow: bench/serve_bench.py, docs/benchmarks.md section 14); only a
  snapshot older than ``sync_after_seconds`` is re-read in the request;
* a request resolves its release ONCE (:meth:`LiveFollower.resolve`) and uses
  that record for all its work, so it never mixes two releases;
* when the registry cannot be read for a moment (a busy embedded store), the
  last snapshot is served for up to ``stale_grace_seconds`` and the error is
  kept for ``/readyz``, instead of failing every search.

Records of pinned releases (``release=NAME``) are cached the same way.

Memory: every release's collections stay loaded in Milvus until gc drops them.
:meth:`LiveFollower.unload_idle` releases those of retired releases (neither live
nor previous) that no search of this process used for a while; a search that
pins one later loads it again (:meth:`LiveFollower.ensure_loaded`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from kbrelease.errors import KbReleaseError, NoLiveRelease
from kbrelease.release.registry import Pointer, Registry, ReleaseRecord
from kbrelease.release.search import check_searchable, no_live_message
from kbrelease.store.milvus import MilvusStore
from kbrelease.trust.names import check_name


@dataclass(frozen=True)
class Snapshot:
    """The live pointer and the record it names, read together."""

    pointer: Pointer
    record: ReleaseRecord | None
    read_at: float


class LiveFollower:
    """Cached, thread-safe resolution of the live (or a pinned) release."""

    def __init__(
        self,
        registry: Registry,
        store: MilvusStore,
        refresh_seconds: float = 2.0,
        stale_grace_seconds: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        background: bool = False,
    ) -> None:
        self.registry = registry
        self.store = store
        self.refresh_seconds = refresh_seconds
        self.stale_grace_seconds = stale_grace_seconds if stale_grace_seconds is not None else max(30.0, 10 * refresh_seconds)
        self._clock = clock
        self.background = background
        self.sync_after_seconds = max(10.0, 5 * refresh_seconds)
        """Older than this, a snapshot is re-read in the request even in background mode (the background reads keep failing)."""
        self._refreshing = threading.Lock()
        self._lock = threading.Lock()
        self._snapshot: Snapshot | None = None
        self._pinned: dict[str, tuple[ReleaseRecord, float]] = {}
        self._loaded: set[str] = set()
        self._last_used: dict[str, float] = {}
        self._unloaded: set[str] = set()
        self.last_error: str | None = None
        self.on_change: Callable[[str | None, str | None], None] | None = None
        """Called with (old live, new live) when a refresh sees the pointer move."""

    # --- reading ------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        """The current snapshot, re-read first if it is older than ``refresh_seconds``."""
        snap = self._snapshot
        if snap is not None:
            age = self._clock() - snap.read_at
            if self.background and age < self.sync_after_seconds:
                # Re-read from half the refresh time on, so that with requests flowing a switch is still seen within
                # ``refresh_seconds`` although the request that starts a read is answered from the snapshot it has.
                if age >= self.refresh_seconds / 2:
                    self._refresh_in_background()
                return snap
            if age < self.refresh_seconds:
                return snap
        with self._lock:
            snap = self._snapshot  # another thread may have refreshed while we waited
            if snap is not None and self._clock() - snap.read_at < self.refresh_seconds:
                return snap
            return self._refresh_locked()

    def resolve(self, pinned: str | None = None) -> ReleaseRecord:
        """The release a request should use: the pinned one, or the live one. Loaded for search."""
        if pinned:
            record = self._pinned_record(pinned)
        else:
            snap = self.snapshot()
            if snap.record is None:
                raise NoLiveRelease(no_live_message(self.registry))
            record = snap.record
        self._last_used[record.name] = self._clock()
        self.ensure_loaded(record)
        return record

    def live_name(self) -> str | None:
        return self.snapshot().pointer.live

    def refresh(self) -> Snapshot:
        """Re-read now (after this process switched, or for a test)."""
        with self._lock:
            self._pinned.clear()
            return self._refresh_locked()

    def ensure_loaded(self, record: ReleaseRecord) -> None:
        """Load the release's collections once per process (idempotent in Milvus, but a round trip each)."""
        if record.name in self._loaded:
            return
        for counts in record.sources.values():
            self.store.ensure_loaded(record.database, counts.collection)
        self._loaded.add(record.name)
        self._unloaded.discard(record.name)

    def is_loaded(self, name: str) -> bool:
        return name in self._loaded

    def unload_idle(self, idle_seconds: float, keep: Iterable[str] = ()) -> list[str]:
        """Release from Milvus memory the collections of retired releases unused here for ``idle_seconds``.

        Never the live or previous release (a rollback must be instant), nor ``keep``
        (the canary), nor a verified release that was never live (the next switch's
        candidate). A release first seen by this call counts as idle from now. Other
        replicas that still use one load it again on their next search of it.
        Returns the names released.
        """
        pointer = self.snapshot().pointer
        kept = {pointer.live, pointer.previous, *keep}
        now = self._clock()
        released: list[str] = []
        for record in self.registry.list():
            if record.name in kept or record.name in self._unloaded or record.display_state(pointer) != "retired":
                continue
            if now - self._last_used.setdefault(record.name, now) < idle_seconds:
                continue
            for counts in record.sources.values():
                self.store.release(record.database, counts.collection)
            self._loaded.discard(record.name)
            self._unloaded.add(record.name)
            released.append(record.name)
        return released

    # --- internals ----------------------------------------------------------
    def _refresh_in_background(self) -> None:
        """Start one background re-read unless one is running; its errors go to ``last_error`` (``/readyz``)."""
        if not self._refreshing.acquire(blocking=False):
            return

        def run() -> None:
            try:
                with self._lock:
                    snap = self._snapshot
                    if snap is None or self._clock() - snap.read_at >= self.refresh_seconds / 2:
                        self._refresh_locked()
            except Exception as exc:  # noqa: BLE001 - kept for /readyz; the request path retries synchronously when too stale
                self.last_error = str(exc)
            finally:
                self._refreshing.release()

        threading.Thread(target=run, name="kbrelease-live-refresh", daemon=True).start()

    def _refresh_locked(self) -> Snapshot:
        old = self._snapshot
        now = self._clock()
        try:
            pointer = self.registry.pointer()
            # The record is read by the name the pointer gives, so the pair is consistent
            # even when a switch lands between the two reads.
            record = self.registry.require(pointer.live) if pointer.live else None
        except KbReleaseError as exc:
            if old is not None and now - old.read_at < self.stale_grace_seconds:
                self.last_error = str(exc)
                return old
            self.last_error = str(exc)
            raise
        self.last_error = None
        snap = Snapshot(pointer, record, now)
        old_live = old.pointer.live if old is not None else None
        if self.on_change is not None and (old is None or old_live != pointer.live):
            self.on_change(old_live, pointer.live)  # before the new snapshot is served: metrics never lag the answers
        self._snapshot = snap
        return snap

    def _pinned_record(self, name: str) -> ReleaseRecord:
        now = self._clock()
        found = self._pinned.get(name)
        if found is not None and now - found[1] < self.refresh_seconds:
            return found[0]
        record = check_searchable(self.registry.require(check_name("release", name, "release=")))
        self._pinned[name] = (record, now)
        return record
