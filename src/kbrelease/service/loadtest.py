"""Load test of a running search service: ``kbrelease loadtest URL`` (and ``bench/serve_bench.py``).

    from kbrelease.service.loadtest import run_loadtest
    report = run_loadtest("http://127.0.0.1:8080", duration=30, concurrency=8, switch_every=10, admin_token="...")
    print(report)                      # QPS, p50/p95/p99, errors by status, answers per release

``concurrency`` client threads each send ``GET /api/v1/search`` back to back (a
closed loop over keep-alive connections) until ``duration`` seconds have passed
or ``max_requests`` requests were sent, whichever comes first: a load test is
always bounded. Each answer's ``X-KB-Release`` header says which release
answered it. With ``switch_every``, another thread moves the live pointer between
two releases through the admin API every so many seconds (and back to the
release that was live at the start when the test ends), so the report shows what
switches cost under load: failed requests, latency, and how long the old release
kept answering.

Only the client side is measured; point it at nginx to test several replicas.
"""

from __future__ import annotations

import itertools
import math
import re
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kbrelease.errors import ConfigError, ServiceError

DEFAULT_QUERIES = (
    "how do I connect to the VPN from home",
    "what is the parental leave policy",
    "the printer on floor two is jammed",
    "password rotation every ninety days",
    "where is the fire assembly point",
    "expense report for a conference trip",
    "how many days can I work remotely",
    "request a new laptop",
    "guest wifi password",
    "on-call rotation handover",
    "code review guidelines for large changes",
    "gym partnership discount",
)
MAX_DURATION = 3600.0
"""Longest load test, seconds (a forgotten one must end)."""
MAX_REQUESTS = 1_000_000
"""Default cap on the requests of one load test."""
MAX_CONCURRENCY = 256
MAX_QUERY_CHARS = 2000

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_SCALE = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(text: str, what: str = "--duration") -> float:
    """``"30s"``, ``"2m"``, ``"500ms"``, ``"1h"`` or plain seconds, as seconds."""
    match = _DURATION.match(text)
    if not match:
        raise ConfigError(f"{what}: {text!r} is not a duration; write e.g. 30s, 2m, 500ms or a number of seconds")
    return float(match.group(1)) * _SCALE[match.group(2)]


def read_queries(path: Path) -> list[str]:
    """One query per line of a UTF-8 text file; blank lines and lines starting with ``#`` are skipped."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--queries {path}: cannot be read ({exc}); give a UTF-8 text file with one query per line") from exc
    queries = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not queries:
        raise ConfigError(f"--queries {path}: no queries in it; write one query per line")
    for number, query in enumerate(queries, 1):
        if len(query) > MAX_QUERY_CHARS:
            raise ConfigError(f"--queries {path}: query {number} is {len(query):,} characters; keep each under {MAX_QUERY_CHARS:,}")
    return queries


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100), linear between the closest ranks (numpy's default); NaN for no values."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    at = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(at), math.ceil(at)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (at - lo)


@dataclass(frozen=True)
class Outcome:
    """One request: when it started (seconds since the test began), how long it took, its status and release."""

    at: float
    seconds: float
    status: int
    """HTTP status; 0 when no response came (connection refused, reset, timeout)."""
    release: str | None


@dataclass
class SwitchEvent:
    """One move of the live pointer during the test."""

    at_s: float
    release: str
    status: int
    ms: float
    error: str | None = None


@dataclass
class LoadReport:
    """What a load test saw, from the client side."""

    url: str
    concurrency: int
    duration_s: float
    requests: int
    ok: int
    qps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    errors: dict[str, int]
    """Failed requests by HTTP status (``"connection"``: no response at all)."""
    releases: dict[str, int]
    """Successful answers by the release that gave them (``X-KB-Release``)."""
    stopped_by: str
    switches: list[SwitchEvent] = field(default_factory=list)
    windows: list[dict[str, Any]] = field(default_factory=list)
    """Between consecutive switches: the span, its requests and the releases that answered them."""
    outcomes: list[Outcome] = field(default_factory=list, repr=False)

    def asdict(self) -> dict[str, Any]:
        data = asdict(self)
        del data["outcomes"]
        return data

    def __str__(self) -> str:
        errors = ", ".join(f"{k}: {v}" for k, v in sorted(self.errors.items())) or "none"
        releases = ", ".join(f"{k}: {v}" for k, v in sorted(self.releases.items())) or "none"
        lines = [
            f"{self.url}: {self.requests:,} requests in {self.duration_s:.1f}s at concurrency {self.concurrency} "
            f"(stopped by {self.stopped_by}): {self.qps:.1f} req/s",
            f"  latency ms: p50 {self.p50_ms:.1f}  p95 {self.p95_ms:.1f}  p99 {self.p99_ms:.1f}  max {self.max_ms:.1f}",
            f"  errors by status: {errors}",
            f"  answers by release: {releases}",
        ]
        for s in self.switches:
            outcome = f"HTTP {s.status}" + (f" ({s.error})" if s.error else "")
            lines.append(f"  switch to {s.release} at {s.at_s:.1f}s: {outcome} in {s.ms:.0f} ms")
        for w in self.windows if self.switches else []:
            shares = ", ".join(f"{k}: {v}" for k, v in sorted(w["releases"].items())) or "none"
            lines.append(f"  {w['from_s']:5.1f}s - {w['to_s']:5.1f}s: {w['requests']:,} requests, p99 {w['p99_ms']:.1f} ms; answered by {shares}")
        return "\n".join(lines)


def _headers(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


class LoadTest:
    """``concurrency`` threads searching ``url`` until :meth:`stop`, ``max_requests`` or ``duration``; every outcome kept.

    A building block: :func:`run_loadtest` drives it for the CLI; a benchmark can
    start it, act on the service meanwhile, and read :attr:`outcomes`.
    """

    def __init__(
        self,
        url: str,
        concurrency: int = 8,
        queries: Sequence[str] = DEFAULT_QUERIES,
        token: str | None = None,
        k: int = 5,
        timeout: float = 30.0,
        max_requests: int = MAX_REQUESTS,
    ) -> None:
        if not 1 <= concurrency <= MAX_CONCURRENCY:
            raise ConfigError(f"--concurrency must be between 1 and {MAX_CONCURRENCY} (got {concurrency})")
        if max_requests < 1:
            raise ConfigError(f"--max-requests must be at least 1 (got {max_requests})")
        if not queries:
            raise ConfigError("a load test needs at least one query")
        self.url = url.rstrip("/")
        self.concurrency = concurrency
        self.queries = list(queries)
        self.k = k
        self.timeout = timeout
        self.max_requests = max_requests
        self._headers = _headers(token)
        self.outcomes: list[Outcome] = []
        self._lock = threading.Lock()
        self._sent = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.started = 0.0

    def start(self) -> LoadTest:
        self.started = time.monotonic()
        for i in range(self.concurrency):
            thread = threading.Thread(target=self._run, args=(i,), name=f"kbrelease-load-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self.timeout + 5)

    @property
    def exhausted(self) -> bool:
        """Whether ``max_requests`` requests were sent."""
        with self._lock:
            return self._sent >= self.max_requests

    def _take(self) -> bool:
        with self._lock:
            if self._sent >= self.max_requests:
                return False
            self._sent += 1
            return True

    def _run(self, worker: int) -> None:
        import httpx

        n = worker
        with httpx.Client(base_url=self.url, timeout=self.timeout, headers=self._headers) as client:
            while not self._stop.is_set() and self._take():
                q = self.queries[n % len(self.queries)]
                n += self.concurrency
                began = time.monotonic()
                try:
                    resp = client.get("/api/v1/search", params={"q": q, "k": self.k})
                    status, release = resp.status_code, resp.headers.get("x-kb-release")
                except httpx.HTTPError:
                    status, release = 0, None
                outcome = Outcome(began - self.started, time.monotonic() - began, status, release if status == 200 else None)
                with self._lock:
                    self.outcomes.append(outcome)

    def __enter__(self) -> LoadTest:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def live_releases(url: str, token: str | None, timeout: float = 10.0) -> tuple[str | None, str | None]:
    """``(live, previous)`` as the service at ``url`` reports them (``GET /api/v1/live``)."""
    import httpx

    try:
        resp = httpx.get(f"{url.rstrip('/')}/api/v1/live", headers=_headers(token), timeout=timeout)
    except httpx.HTTPError as exc:
        raise ServiceError(f"cannot reach {url} ({type(exc).__name__}); check the URL and that the service runs") from exc
    if resp.status_code != 200:
        raise ServiceError(f"GET {url}/api/v1/live answered HTTP {resp.status_code}; with KBRELEASE_API_TOKEN set, pass the token (--token)")
    body = resp.json()
    return body.get("live"), body.get("previous")


def switch_release(url: str, release: str, admin_token: str, timeout: float = 30.0) -> tuple[int, str | None]:
    """``POST /api/v1/releases/{release}/switch``: the status, and the error message if it failed."""
    import httpx

    try:
        resp = httpx.post(f"{url.rstrip('/')}/api/v1/releases/{release}/switch", headers=_headers(admin_token), timeout=timeout)
    except httpx.HTTPError as exc:
        return 0, f"{type(exc).__name__}"
    if resp.status_code == 200:
        return 200, None
    try:
        message = str(resp.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        message = resp.text[:200]
    return resp.status_code, message


def summarize(url: str, concurrency: int, outcomes: list[Outcome], seconds: float, stopped_by: str, switches: list[SwitchEvent]) -> LoadReport:
    """The report of a finished test; ``windows`` split the run at each switch."""
    ok = [o for o in outcomes if o.status == 200]
    ms = [o.seconds * 1000 for o in ok]
    errors = Counter("connection" if o.status == 0 else str(o.status) for o in outcomes if o.status != 200)
    releases = Counter(o.release or "-" for o in ok)
    edges = [0.0, *(s.at_s for s in switches), seconds]
    windows = []
    for lo, hi in itertools.pairwise(edges):
        inside = [o for o in outcomes if lo <= o.at < hi]
        windows.append(
            {
                "from_s": round(lo, 2),
                "to_s": round(hi, 2),
                "requests": len(inside),
                "failed": sum(o.status != 200 for o in inside),
                "p99_ms": round(percentile([o.seconds * 1000 for o in inside if o.status == 200], 99), 2) if inside else math.nan,
                "releases": dict(Counter(o.release or "-" for o in inside if o.status == 200)),
            }
        )

    def r(x: float) -> float:
        return round(x, 2) if not math.isnan(x) else x

    return LoadReport(
        url=url,
        concurrency=concurrency,
        duration_s=round(seconds, 3),
        requests=len(outcomes),
        ok=len(ok),
        qps=round(len(outcomes) / seconds, 1) if seconds > 0 else 0.0,
        p50_ms=r(percentile(ms, 50)),
        p95_ms=r(percentile(ms, 95)),
        p99_ms=r(percentile(ms, 99)),
        max_ms=r(max(ms)) if ms else math.nan,
        errors=dict(errors),
        releases=dict(releases),
        stopped_by=stopped_by,
        switches=switches,
        windows=windows,
        outcomes=sorted(outcomes, key=lambda o: o.at),
    )


def run_loadtest(
    url: str,
    duration: float = 30.0,
    concurrency: int = 8,
    queries: Sequence[str] = DEFAULT_QUERIES,
    token: str | None = None,
    switch_every: float | None = None,
    admin_token: str | None = None,
    releases: Sequence[str] | None = None,
    max_requests: int = MAX_REQUESTS,
    k: int = 5,
    timeout: float = 30.0,
) -> LoadReport:
    """Search ``url`` for ``duration`` seconds (at most ``max_requests`` requests); see the module docstring.

    ``switch_every``: move the live pointer every so many seconds, alternating
    between ``releases`` (default: the live and the previous release), with the
    ``admin_token``; the release live at the start is live again at the end.
    """
    if not 0 < duration <= MAX_DURATION:
        raise ConfigError(f"--duration must be more than 0 and at most {MAX_DURATION:.0f}s (got {duration:g}s)")
    cycle: list[str] = []
    first_live: str | None = None
    if switch_every is not None:
        if switch_every <= 0:
            raise ConfigError(f"--switch-every must be more than 0 seconds (got {switch_every:g})")
        if not admin_token:
            raise ConfigError("--switch-every needs the admin token: pass --admin-token or set KBRELEASE_ADMIN_TOKEN")
        first_live, previous = live_releases(url, token, timeout)
        cycle = list(releases or [r for r in (first_live, previous) if r])
        if len(set(cycle)) < 2:
            raise ConfigError(
                f"--switch-every needs two releases to switch between; the service has live {first_live or '-'} and previous "
                f"{previous or '-'}: name them with --release A --release B"
            )
    load = LoadTest(url, concurrency, queries, token, k, timeout, max_requests)
    switches: list[SwitchEvent] = []
    load.start()
    deadline = load.started + duration
    next_switch = load.started + switch_every if switch_every else math.inf
    # Start with the release after the one live now, so the first switch moves the pointer.
    position = (cycle.index(first_live) + 1) % len(cycle) if first_live in cycle else 0
    stopped_by = "duration"
    try:
        while True:
            now = time.monotonic()
            if now >= deadline:
                break
            if load.exhausted:
                stopped_by = "max_requests"
                break
            if now >= next_switch and cycle:
                switches.append(_switch(url, cycle[position], admin_token or "", load.started, timeout))
                position = (position + 1) % len(cycle)
                next_switch += switch_every or math.inf
            time.sleep(min(0.05, max(0.0, min(deadline, next_switch) - time.monotonic())))
    finally:
        load.stop()
    seconds = time.monotonic() - load.started
    moved = [s.release for s in switches if s.status == 200]
    if first_live and moved and moved[-1] != first_live:
        # Leave the service as it was found. (Not by asking it what is live: a replica
        # behind the balancer may not have followed the last switch yet.)
        switch_release(url, first_live, admin_token or "", timeout)
    return summarize(load.url, concurrency, list(load.outcomes), seconds, stopped_by, switches)


def _switch(url: str, release: str, admin_token: str, started: float, timeout: float) -> SwitchEvent:
    began = time.monotonic()
    status, error = switch_release(url, release, admin_token, timeout)
    return SwitchEvent(round(began - started, 3), release, status, round((time.monotonic() - began) * 1000, 1), error)
