"""What one running app holds: the facade, the live follower, models, metrics, the log.

Models are loaded once, in a background thread started with the app, so the
process answers ``/healthz`` at once and ``/readyz`` turns 200 when the
embedders are warm, the live release is resolved and its collections loaded.
A search that arrives earlier gets 503 with Retry-After (a load balancer sends
it to a ready replica instead). ``/readyz`` also pings Milvus, so a replica whose
store is down (restarting) reports not ready until the store answers again.

Collections of retired releases are released from Milvus memory after
``service.unload_after_seconds`` without a search here (:meth:`ServiceState.unload_idle`,
run by the app's housekeeping loop, which also pings Milvus for ``kbrelease_store_up``).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from kbrelease.api import KbRelease
from kbrelease.config import CanaryConfig, Config
from kbrelease.errors import KbReleaseError
from kbrelease.release.files import ReleaseFiles
from kbrelease.release.follow import LiveFollower
from kbrelease.release.registry import ReleaseRecord
from kbrelease.release.search import SearchResult
from kbrelease.service.errors import ApiError
from kbrelease.service.metrics import Metrics


@dataclass
class Warmup:
    """Progress of loading the models, for /readyz."""

    modalities: list[str] = field(default_factory=list)
    ready: dict[str, bool] = field(default_factory=dict)
    error: str | None = None
    seconds: float | None = None
    done: threading.Event = field(default_factory=threading.Event)


class ThumbnailCache:
    """Small LRU of rendered thumbnails, keyed by file checksum and size (content never changes under a key)."""

    def __init__(self, max_items: int = 512) -> None:
        self._items: OrderedDict[tuple[str, int], bytes] = OrderedDict()
        self._lock = threading.Lock()
        self._max = max_items

    def get(self, key: tuple[str, int]) -> bytes | None:
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
            return found

    def put(self, key: tuple[str, int], data: bytes) -> None:
        with self._lock:
            self._items[key] = data
            while len(self._items) > self._max:
                self._items.popitem(last=False)


READY_PING_SECONDS = 2.0
"""How long /readyz waits for Milvus: well under a probe's timeout, long enough for a busy server."""


class ServiceState:
    """Everything the routes share; one per app (``app.state.service``)."""

    def __init__(self, cfg: Config, kb: KbRelease, metrics: Metrics, logger: logging.Logger) -> None:
        self.cfg = cfg
        self.kb = kb
        self.metrics = metrics
        self.log = logger
        self.follower: LiveFollower = kb.follow(cfg.service.live_refresh_seconds, background=True)  # no request waits on a registry read
        self.follower.on_change = self._live_changed
        self.files: ReleaseFiles = kb.release_files()
        self.thumbnails = ThumbnailCache()
        self.warmup = Warmup()
        self.started_at = time.time()
        self._thread: threading.Thread | None = None
        self._model_lock = threading.Lock()
        self.canary: CanaryConfig | None = cfg.service.canary
        """The canary split in force (service.canary at start, then PUT/DELETE /api/v1/canary)."""

    # --- startup ------------------------------------------------------------
    def start(self) -> None:
        """Warm up once per app, even if its lifespan runs again (some test clients start it per call)."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._warm, name="kbrelease-warmup", daemon=True)
        self._thread.start()

    def wait_ready(self, timeout: float | None = None) -> bool:
        return self.warmup.done.wait(timeout)

    def modalities(self) -> list[str]:
        """Embedders to load: those of the configured sources and of the live release."""
        kinds: set[str] = {s.modality for s in self.cfg.sources}
        try:
            live = self.follower.snapshot().record
        except KbReleaseError:
            live = None
        if live is not None:
            kinds |= set(live.embedders)
        return sorted(kinds) or ["text"]

    def _warm(self) -> None:
        started = time.monotonic()
        try:
            self.warmup.modalities = self.modalities()
            for kind in self.warmup.modalities:
                self.warmup.ready[kind] = False
                self.metrics.model_ready.labels(kind).set(0)
            for kind in self.warmup.modalities:
                if kind == "text":
                    # concurrent searches share model calls, each on service.query_threads threads
                    self.kb.coalesce_text_queries(self.cfg.service.query_threads)
                    self.kb.query_text_embedder.embed_texts(["warm up"])  # first call allocates; keep it off a request
                else:
                    import numpy as np

                    emb = self.kb.image_embedder
                    emb.embed_arrays(np.zeros((1, 3, emb.input_size, emb.input_size), dtype=np.float32))
                self.warmup.ready[kind] = True
                self.metrics.model_ready.labels(kind).set(1)
            self.warmup.seconds = round(time.monotonic() - started, 3)
            self.log.info("models ready", extra={"modalities": self.warmup.modalities, "seconds": self.warmup.seconds})
            try:
                self.follower.resolve()
            except KbReleaseError as exc:
                self.log.warning("live release not resolved yet", extra={"reason": str(exc)})
        except Exception as exc:  # reported by /readyz and the log, the process stays up
            self.warmup.error = f"{type(exc).__name__}: {exc}"
            self.log.error("model warm-up failed", exc_info=exc)
        finally:
            self.warmup.done.set()

    def require_model(self, kind: str) -> None:
        """503 while the models warm up in the background (a request never waits for a model load).

        A modality that neither the sources nor the live release had at start (a pinned
        release, or images published later) is loaded once, by the first request that needs it.
        """
        if self.warmup.ready.get(kind):
            return
        if self.warmup.done.is_set():
            if kind not in self.warmup.ready:
                with self._model_lock:
                    if not self.warmup.ready.get(kind):
                        if kind == "text":
                            self.kb.coalesce_text_queries(self.cfg.service.query_threads)
                        else:
                            _ = self.kb.image_embedder
                        self.warmup.ready[kind] = True
                        self.metrics.model_ready.labels(kind).set(1)
                return
            reason = self.warmup.error or f"the {kind} model failed to load"
            raise ApiError(503, "model_unavailable", f"{reason}; see /readyz and the service log")
        raise ApiError(503, "warming_up", f"the {kind} model is still loading; retry in a few seconds (see /readyz)", headers={"Retry-After": "2"})

    # --- live pointer -------------------------------------------------------
    def _live_changed(self, old: str | None, new: str | None) -> None:
        self.metrics.set_live(self.cfg.environment, old, new)
        if old is not None:
            self.metrics.switches.inc()
        self.log.info("live release", extra={"previous": old, "live": new})

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        checks: dict[str, Any] = {"models": dict(self.warmup.ready), "models_error": self.warmup.error}
        models_ok = self.warmup.done.is_set() and not self.warmup.error and all(self.warmup.ready.values())
        live: str | None = None
        loaded = False
        store_ok = self.store_answers(checks)
        if store_ok:  # else the follower would only repeat its last snapshot
            try:
                record = self.follower.resolve()
                live, loaded = record.name, self.follower.is_loaded(record.name)
            except KbReleaseError as exc:
                checks["live_error"] = str(exc)
        checks.update({"live": live, "collections_loaded": loaded, "registry_error": self.follower.last_error})
        return models_ok and store_ok and live is not None and loaded, checks

    def store_answers(self, checks: dict[str, Any]) -> bool:
        """One short round trip to Milvus (a failed one also makes the store reconnect for the next)."""
        try:
            self.kb.store.ping(timeout=READY_PING_SECONDS)
        except KbReleaseError as exc:
            checks.update({"store": False, "store_error": str(exc)})
            self.metrics.store_up.set(0)
            return False
        checks["store"] = True
        self.metrics.store_up.set(1)
        return True

    def housekeeping(self) -> None:
        """The background loop's work: keep ``kbrelease_store_up`` current between probes, unload idle releases."""
        if self.store_answers({}):
            self.unload_idle()

    def unload_idle(self) -> list[str]:
        """Release the collections of retired releases idle for ``service.unload_after_seconds`` (see the module docstring)."""
        grace = self.cfg.service.unload_after_seconds
        if grace <= 0:
            return []
        keep = [self.canary.release] if self.canary is not None else []
        released = self.follower.unload_idle(grace, keep)
        for name in released:
            self.metrics.unloads.inc()
            self.log.info("release unloaded from memory", extra={"release": name, "idle_seconds": grace})
        return released

    def observe(self, result: SearchResult, canary: bool = False) -> None:
        self.metrics.embed.labels(result.modality).observe(result.embed_seconds)
        self.metrics.search.labels(result.modality).observe(result.search_seconds)
        self.metrics.release_latency.labels(result.release).observe(result.embed_seconds + result.search_seconds)
        self.metrics.release_searches.labels(result.release, "true" if canary else "false").inc()
        if not result.hits:
            self.metrics.release_zero_hits.labels(result.release).inc()

    def route(self, pinned: str | None) -> tuple[ReleaseRecord, bool]:
        """The release a search uses, and whether it is a canary answer: a pinned one, else the canary's share, else live."""
        canary = self.canary
        if pinned is None and canary is not None and canary.share > 0 and random.random() < canary.share:  # noqa: S311 - traffic split, not crypto
            return self.follower.resolve(canary.release), True
        return self.follower.resolve(pinned), False
