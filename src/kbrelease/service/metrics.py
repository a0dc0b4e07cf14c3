"""Prometheus metrics of one app, in a registry of its own (``app.state.registry``).

Other parts of the service register their own collectors into the same
registry; ``GET /metrics`` renders all of it.
"""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Search requests take ~5-200 ms; the buckets resolve that range finely.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """The service's own instruments."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        b = LATENCY_BUCKETS
        self.requests = Counter("kbrelease_http_requests", "HTTP requests answered, by route template and status.", ["method", "route", "status"], registry=r)
        self.latency = Histogram(
            "kbrelease_http_request_duration_seconds", "Time to answer an HTTP request, by route template.", ["method", "route"], buckets=b, registry=r
        )
        self.embed = Histogram("kbrelease_embed_seconds", "Time to embed one query (decode included for images).", ["modality"], buckets=b, registry=r)
        self.search = Histogram("kbrelease_search_seconds", "Time in Milvus for one query, all sources of the modality.", ["modality"], buckets=b, registry=r)
        self.live = Gauge("kbrelease_live_release", "1 for the release this replica serves as live.", ["environment", "release"], registry=r)
        self.switches = Counter("kbrelease_live_switches_seen", "Moves of the live pointer this replica has seen.", registry=r)
        self.release_latency = Histogram(
            "kbrelease_search_release_seconds", "Time to answer one search (embed + Milvus), by the release that answered.", ["release"], buckets=b, registry=r
        )
        self.release_searches = Counter(
            "kbrelease_searches", "Searches answered, by release and whether it was a canary answer.", ["release", "canary"], registry=r
        )
        self.release_zero_hits = Counter("kbrelease_search_zero_hits", "Searches that found nothing, by release.", ["release"], registry=r)
        self.store_up = Gauge("kbrelease_store_up", "1 when Milvus answered this replica's last readiness ping, 0 when it did not.", registry=r)
        self.unloads = Counter(
            "kbrelease_release_unloads",
            "Releases whose collections this replica released from Milvus memory (idle past service.unload_after_seconds).",
            registry=r,
        )
        self.model_ready = Gauge("kbrelease_model_ready", "1 when the embedder of the modality is loaded and warm.", ["modality"], registry=r)

    def set_live(self, environment: str, old: str | None, new: str | None) -> None:
        if old is not None and old != new:
            with contextlib.suppress(KeyError):  # never set (e.g. a refresh that failed)
                self.live.remove(environment, old)
        if new is not None:
            self.live.labels(environment, new).set(1)
