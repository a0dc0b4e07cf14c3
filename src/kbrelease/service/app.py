"""The search service: ``create_app(cfg)`` builds the FastAPI app that ``kbrelease serve`` runs.

    from kbrelease import load_config
    from kbrelease.service.app import create_app
    app = create_app(load_config())          # uvicorn.run(app, port=8000)

What the app holds (``app.state``): ``kb`` (the :class:`~kbrelease.api.KbRelease`
facade), ``cfg`` (the :class:`~kbrelease.config.Config`), ``registry`` (the
Prometheus ``CollectorRegistry`` that ``/metrics`` renders; register more
collectors into it), ``service`` (:class:`~kbrelease.service.state.ServiceState`:
live follower, models, caches), ``log`` and ``log_tail`` (the structured log).

Routers are listed in ONE place, :func:`routers`; add a router there.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI
from fastapi.staticfiles import StaticFiles
from prometheus_client import CollectorRegistry

from kbrelease import __version__
from kbrelease.api import KbRelease
from kbrelease.config import Config
from kbrelease.service import errors
from kbrelease.service.logs import install_redaction, make_logger
from kbrelease.service.metrics import Metrics
from kbrelease.service.middleware import RequestMiddleware
from kbrelease.service.state import ServiceState
from kbrelease.service.web import STATIC

API_PREFIX = "/api/v1"
HOUSEKEEPING_SECONDS = 15.0

DESCRIPTION = """Search the knowledge base that kbrelease publishes: text and images, from
the live release (followed across switches without a restart) or a pinned one.
Errors are `{"error": {"status", "code", "message", "request_id"}}`."""


def routers() -> list[tuple[APIRouter, str]]:
    """Every router of the app with its prefix: the one place to add a router."""
    from kbrelease.service import bundles, files, ops, releases, search, web

    return [
        (ops.probes, ""),
        (web.router, ""),
        (search.router, API_PREFIX),
        (releases.router, API_PREFIX),
        (files.router, API_PREFIX),
        (ops.router, API_PREFIX),
        (bundles.router, ""),  # the data-index access API; its routes carry /api/v1/bundles
    ]


def create_app(cfg: Config, kb: KbRelease | None = None) -> FastAPI:
    """The app for ``cfg``. Pass ``kb`` to share loaded models (tests, embedding in another app)."""
    owns_kb = kb is None
    # An admin switch during a long publish answers 409 environment_locked at once instead of hanging the request.
    facade = kb if kb is not None else KbRelease(cfg, wait_for_lock=False)
    registry = CollectorRegistry()
    logger, tail = make_logger(cfg)
    svc = ServiceState(cfg, facade, Metrics(registry), logger)
    monitor = None
    if cfg.monitor.in_service:
        # The integrity monitor's gauges go into this app's /metrics (registered once per app,
        # however often the app starts); each run is in a worker thread.
        from kbrelease.monitor.monitor import Monitor

        monitor = Monitor(facade.cfg, facade.store, facade.registry, metrics=registry)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        install_redaction()
        svc.start()
        logger.info(
            "service started",
            extra={"environment": cfg.environment, "version": __version__, "live_refresh_seconds": cfg.service.live_refresh_seconds},
        )
        if cfg.service.api_token is None and not is_loopback(cfg.service.host):
            logger.warning(
                "listening beyond this machine without KBRELEASE_API_TOKEN: every read endpoint is open to whoever reaches "
                "this address; set KBRELEASE_API_TOKEN, or keep it behind a proxy that authenticates",
                extra={"host": cfg.service.host},
            )
        for line in await asyncio.to_thread(_store_advice, facade):
            logger.warning(line, extra={"engine": cfg.store_engine})
        monitor_stop, monitor_task = asyncio.Event(), None
        if monitor is not None:
            monitor_task = asyncio.create_task(monitor.run_async(monitor_stop))
        housekeeper = asyncio.create_task(housekeeping_loop(svc, monitor_stop))
        try:
            yield
        finally:
            logger.info("service stopping")
            monitor_stop.set()
            if monitor_task is not None:
                await monitor_task
            await housekeeper
            if owns_kb:
                facade.close()

    app = FastAPI(
        title="kbrelease",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=None,  # Swagger UI would load its assets from a CDN; the spec is published instead
        redoc_url=None,
    )
    app.state.kb = facade
    app.state.cfg = cfg
    app.state.registry = registry
    app.state.service = svc
    app.state.log = logger
    app.state.log_tail = tail
    errors.install(app, logger)
    for router, prefix in routers():
        app.include_router(router, prefix=prefix)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(RequestMiddleware, state=svc)
    return app


async def housekeeping_loop(svc: ServiceState, stop: asyncio.Event) -> None:
    """Every 15 s (or half the unload grace period, if shorter), in a worker thread: ping Milvus for
    ``kbrelease_store_up`` and release the collections of idle retired releases."""
    from fastapi.concurrency import run_in_threadpool

    grace = svc.cfg.service.unload_after_seconds
    period = min(HOUSEKEEPING_SECONDS, max(0.5, grace / 2)) if grace > 0 else HOUSEKEEPING_SECONDS
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), timeout=period)
            return
        except TimeoutError:
            pass
        try:
            await run_in_threadpool(svc.housekeeping)
        except Exception as exc:  # noqa: BLE001 - a store hiccup must not end the loop; logged, tried next period
            svc.log.warning("housekeeping failed", extra={"reason": str(exc)})


def is_loopback(host: str) -> bool:
    """``host`` only accepts connections from this machine (127.0.0.0/8, ::1, localhost)."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: assume it resolves beyond this machine


def app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory`` (what ``kbrelease serve --reload/--workers`` runs): config from the environment."""
    from kbrelease.config import load_config

    return create_app(load_config())


def _store_advice(kb: KbRelease) -> list[str]:
    """The store advice for the live release, logged once at start; nothing when the store cannot answer yet (readiness reports that)."""
    from kbrelease.errors import KbReleaseError

    try:
        return kb.status()["advice"]  # type: ignore[no-any-return]
    except KbReleaseError:
        return []
