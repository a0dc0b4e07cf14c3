"""``kbrelease check``: would anything break queries?

Compares, for one environment: the configured embedding models, the data
index in the workspace, the releases in the registry (manifest schema
versions, models, databases, vector dimensions), and optionally a running
service: ``GET /api/v1/info``, then one real search per source of the live
release (the seed's ``api_test.sh``), each of which must return a hit; with
``KBRELEASE_API_TOKEN`` set, the token is sent. Each finding is ``ok``, ``warning`` (works
now, will bite later) or ``error`` (queries fail or return vectors of another
model now); any error makes the command exit non-zero.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from kbrelease.config import Config
from kbrelease.embedding.base import EmbedderIdentity, RecordedEmbedder
from kbrelease.errors import KbReleaseError
from kbrelease.release.registry import Registry, ReleaseRecord
from kbrelease.release.schema import MANIFEST_SCHEMA_VERSION, READS, manifest_version
from kbrelease.store.milvus import MilvusStore
from kbrelease.workspace import Workspace

Level = Literal["ok", "warning", "error"]
_MARK = {"ok": "ok  ", "warning": "WARN", "error": "FAIL"}


@dataclass
class Finding:
    subject: str
    level: Level
    message: str


@dataclass
class CheckReport:
    """Everything ``check`` compared, with a verdict."""

    environment: str
    kbrelease_version: str
    manifest_schema_version: int
    reads: list[int]
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(f.level == "error" for f in self.findings)

    def add(self, subject: str, level: Level, message: str) -> None:
        self.findings.append(Finding(subject, level, message))

    def asdict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ok"] = self.ok
        data["errors"] = sum(f.level == "error" for f in self.findings)
        data["warnings"] = sum(f.level == "warning" for f in self.findings)
        return data

    def __str__(self) -> str:
        lines = [
            f"kbrelease {self.kbrelease_version} (writes manifest schema {self.manifest_schema_version}, reads {', '.join(map(str, self.reads))}), "
            f"environment {self.environment}"
        ]
        lines += [f"  {_MARK[f.level]}  {f.subject}: {f.message}" for f in self.findings]
        errors = sum(f.level == "error" for f in self.findings)
        warnings = sum(f.level == "warning" for f in self.findings)
        lines.append(f"{errors} error(s): queries would break" if errors else f"compatible ({warnings} warning(s))")
        return "\n".join(lines)


def _describe(ident: dict[str, Any] | EmbedderIdentity) -> str:
    return (ident if isinstance(ident, EmbedderIdentity) else RecordedEmbedder.from_record(ident)).describe()


_LEVELS: dict[str, Level] = {"different": "error", "compatible": "warning", "same": "ok"}


def _compare(recorded: dict[str, Any], current: dict[str, Any] | EmbedderIdentity) -> Level:
    """error: other model or dimension (queries are refused or meaningless); warning: same model, other revision/preprocessing."""
    now = current if isinstance(current, EmbedderIdentity) else RecordedEmbedder.from_record(current)
    return _LEVELS[RecordedEmbedder.from_record(recorded).compare(now)]


def _models(cfg: Config, identity: Callable[[str], EmbedderIdentity], kinds: set[str], report: CheckReport) -> dict[str, EmbedderIdentity]:
    found: dict[str, EmbedderIdentity] = {}
    for kind in sorted(kinds):
        try:
            found[kind] = identity(kind)
        except KbReleaseError as exc:
            report.add(f"{kind} model", "error", f"the configured model cannot be used: {exc}")
            continue
        report.add(f"{kind} model", "ok", f"configured {_describe(found[kind])}")
    return found


def _data_index(cfg: Config, report: CheckReport, live: ReleaseRecord | None) -> None:
    from kbrelease.index.compat import VersionCheck
    from kbrelease.index.data_index import read_bundle

    ws = Workspace.of(cfg)
    if not (ws.index_dir / "bundle.yaml").is_file():
        report.add("data index", "warning", f"none in {ws.index_dir} yet; `kbrelease sync` writes it (queries do not need it)")
        return
    versions = VersionCheck.of(cfg)
    try:
        bundle = read_bundle(ws.index_dir, replace(versions, enabled=False))
    except Exception as exc:  # noqa: BLE001 - any damage is reported, not raised
        report.add("data index", "error", f"{ws.index_dir / 'bundle.yaml'} cannot be read ({exc}); run `kbrelease sync` again")
        return
    version = bundle.meta.get("schema_version", 1)
    verdict = versions.assess(bundle.meta)
    if verdict is not None and not verdict.compatible:
        # The compatibility matrix (shipped, or version_check.matrix) says this kbrelease does not read it.
        message = verdict.message(str(ws.index_dir / "bundle.yaml"))
        versions.tell(f"compatibility:check:{ws.index_dir}:{verdict.index_version}", message)
        report.add("compatibility", "error" if versions.fail_on_incompatible else "warning", message)
        if versions.fail_on_incompatible:
            return
    indexed = {s.channel: s for s in bundle.data_manifest}
    for src in cfg.sources:
        entry = indexed.get(src.name)
        if entry is None:
            report.add("data index", "warning", f"configured source {src.name!r} is not in the data index; run `kbrelease sync`")
        elif entry.modality != src.modality or entry.collection != src.collection_name:
            report.add(
                "data index",
                "warning",
                f"source {src.name!r} is {src.modality} → {src.collection_name} in the config but {entry.modality} → {entry.collection} "
                "in the index; run `kbrelease sync`",
            )
    for name in sorted(set(indexed) - {s.name for s in cfg.sources}):
        report.add("data index", "warning", f"source {name!r} is in the data index but no longer configured; the next sync drops it")
    note = ""
    if live is not None:
        same = bundle.checksum == live.data_index_checksum
        note = "; same as the live release" if same else f"; changed since live release {live.name} (publish builds a new one)"
    if verdict is not None and verdict.compatible:
        note += f"; compatible with kbrelease {verdict.reader} (matrix: {verdict.matrix})"
    report.add("data index", "ok", f"{bundle.meta.get('total_files', '?')} files in {len(indexed)} source(s), schema {version}{note}")


def _release(
    store: MilvusStore, record: ReleaseRecord, stored_version: int, role: str, models: dict[str, EmbedderIdentity], report: CheckReport, strict: bool
) -> None:
    subject = f"{role} release {record.name}"
    broken: Level = "error" if strict else "warning"
    note = f", migrated from schema {stored_version}" if stored_version < MANIFEST_SCHEMA_VERSION else ""
    problems = 0
    for kind, built in record.embedders.items():
        current = models.get(kind)
        if current is None:
            continue  # the model itself was reported as unusable
        level = _compare(built, current)
        if level != "ok":
            problems += 1
            report.add(
                subject,
                broken if level == "error" else "warning",
                f"{kind} vectors are {_describe(built)} but the configured model is {_describe(current)}; "
                + ("queries would be refused" if level == "error" else "query vectors may differ slightly")
                + " — configure the release's model, or publish a release built with the configured one",
            )
    if role != "live":
        if not problems:
            report.add(subject, "ok", f"{record.state}, models match{note}")
        return
    try:
        databases = set(store.databases())
        if record.database not in databases:
            report.add(subject, "error", f"its database {record.database} is missing from Milvus; roll back or publish again")
            return
        collections = set(store.collections(record.database))
        for source, counts in record.sources.items():
            if counts.collection not in collections:
                report.add(subject, "error", f"collection {counts.collection} (source {source}) is missing from {record.database}")
                problems += 1
                continue
            want = int(record.embedders.get(counts.modality, {}).get("dim") or 0)
            have = store.vector_dim(record.database, counts.collection)
            if want and have != want:
                report.add(subject, "error", f"collection {counts.collection} holds {have}-d vectors, the manifest says {want}-d")
                problems += 1
    except KbReleaseError as exc:
        report.add(subject, "error", f"cannot inspect its database: {exc}")
        return
    if not problems:
        report.add(subject, "ok", f"{record.state}, database {record.database}, models and collections match{note}")


SMOKE_QUERY = "test"
"""The text of each text source's smoke search: any word finds the nearest chunk of a non-empty collection."""


def _smoke_image() -> bytes:
    """A small gradient PNG for the image sources' smoke search (made here: no file of the corpus is needed)."""
    import io

    from PIL import Image

    img = Image.new("RGB", (64, 64))
    img.putdata([(x * 4, y * 4, (x + y) * 2) for y in range(64) for x in range(64)])
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


def _smoke(client: Any, subject: str, live: ReleaseRecord, served: str | None, report: CheckReport) -> None:
    """One search per source of the live release; each must answer 200 with at least one hit."""
    import httpx

    for source, counts in sorted(live.sources.items()):
        what = f"{subject} source {source}"
        try:
            if counts.modality == "image":
                files = {"file": ("smoke.png", _smoke_image(), "image/png")}
                resp = client.post("/api/v1/search/image", params={"source": source, "k": 1}, files=files)
            else:
                resp = client.get("/api/v1/search", params={"q": SMOKE_QUERY, "source": source, "k": 1})
        except httpx.HTTPError as exc:
            report.add(what, "error", f"the {counts.modality} search failed ({type(exc).__name__}); check the service log")
            continue
        if resp.status_code != 200:
            try:
                message = str(resp.json()["error"]["message"])
            except (ValueError, KeyError, TypeError):
                message = resp.text[:200]
            report.add(what, "error", f"the {counts.modality} search answered HTTP {resp.status_code}: {message}")
            continue
        body = resp.json()
        hits = body.get("hits") if isinstance(body, dict) else None
        if not hits:
            report.add(what, "error", f"the {counts.modality} search found nothing in release {body.get('release')}; the collection may be empty")
            continue
        release = resp.headers.get("x-kb-release") or body.get("release")
        level: Level = "ok" if release == (served or live.name) else "warning"
        report.add(what, level, f"{counts.modality} search: {len(hits)} hit(s) from release {release} in {body.get('took_ms', '?')} ms")


def _service(url: str, timeout: float, cfg: Config, live: ReleaseRecord | None, live_version: int | None, report: CheckReport) -> None:
    import httpx

    subject = f"service {url}"
    token = cfg.service.api_token.get_secret_value() if cfg.service.api_token else None
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(base_url=url.rstrip("/"), timeout=timeout, headers=headers) as client:
        _service_checks(client, subject, cfg, live, live_version, report)


def _service_checks(client: Any, subject: str, cfg: Config, live: ReleaseRecord | None, live_version: int | None, report: CheckReport) -> None:
    import httpx

    try:
        resp = client.get("/api/v1/info")
    except httpx.HTTPError as exc:
        report.add(subject, "error", f"cannot be reached ({type(exc).__name__}: {exc}); check the URL and that the service runs")
        return
    if resp.status_code in (401, 403):
        report.add(subject, "error", f"GET /api/v1/info answered HTTP {resp.status_code}: set KBRELEASE_API_TOKEN to the service's read token")
        return
    if resp.status_code != 200:
        report.add(subject, "error", f"GET /api/v1/info answered HTTP {resp.status_code}; is it a kbrelease service of a version with /api/v1/info?")
        return
    try:
        info = resp.json()
        if not isinstance(info, dict):
            raise ValueError("not an object")
    except ValueError:
        report.add(subject, "error", "GET /api/v1/info did not return a JSON object; is it a kbrelease service?")
        return
    problems = 0
    version = info.get("manifest_schema_version")
    if not isinstance(version, int):
        report.add(subject, "error", "its /api/v1/info has no manifest_schema_version; upgrade the service")
        return
    if live_version is not None and version < live_version:
        report.add(subject, "error", f"reads manifest schema up to {version} but the live release is schema {live_version}; upgrade the service")
        problems += 1
    elif version < MANIFEST_SCHEMA_VERSION:
        report.add(
            subject,
            "warning",
            f"reads manifest schema up to {version}; releases this kbrelease writes are schema {MANIFEST_SCHEMA_VERSION} — "
            "upgrade the service before the next switch",
        )
        problems += 1
    elif version > MANIFEST_SCHEMA_VERSION:
        report.add(subject, "warning", f"is newer (kbrelease {info.get('kbrelease_version')}, schema {version}) than this kbrelease; upgrade this command line")
        problems += 1
    if info.get("environment") != cfg.environment:
        other = info.get("environment")
        report.add(subject, "error", f"serves environment {other!r}, this check is for {cfg.environment!r}; pass --env {other}")
        return
    live_name = live.name if live else None
    if info.get("live") != live_name:
        served = info.get("live") or "-"
        report.add(subject, "warning", f"serves release {served} but the live pointer says {live_name or '-'}; it has not followed the last switch")
        problems += 1
    raw = info.get("embedders")
    embedders: dict[str, Any] = raw if isinstance(raw, dict) else {}
    for kind, built in (live.embedders if live else {}).items():
        current = embedders.get(kind)
        if not isinstance(current, dict):
            report.add(subject, "error", f"has no {kind} embedder but the live release has {kind} sources; {kind} queries would fail")
            problems += 1
            continue
        level = _compare(built, current)
        if level != "ok":
            problems += 1
            report.add(
                subject,
                level,
                f"embeds {kind} queries with {_describe(current)} but the live release holds {_describe(built)}; "
                "configure the service with the release's model",
            )
    if not problems:
        report.add(subject, "ok", f"kbrelease {info.get('kbrelease_version')}, schema {version}, serves {info.get('live') or '-'} with matching models")
    if live is not None:
        _smoke(client, subject, live, info.get("live"), report)


class _NoRegistry(Exception):
    pass


def check(
    cfg: Config,
    store: MilvusStore,
    registry: Registry,
    identity: Callable[[str], EmbedderIdentity],
    service_url: str | None = None,
    timeout: float = 5.0,
) -> CheckReport:
    """Compare models, data index, releases and (optionally) a service; see the module docstring."""
    from kbrelease import __version__

    report = CheckReport(cfg.environment, __version__, MANIFEST_SCHEMA_VERSION, list(READS))
    records: dict[str, tuple[ReleaseRecord, int]] = {}
    pointer = None
    try:
        if not registry.exists():  # reading the registry would create it; a check writes nothing
            raise _NoRegistry
        pointer = registry.pointer()
        for body in registry.list_raw():
            where = f"release {body.get('name')!r}"
            try:
                stored = manifest_version(body, where)
                records[str(body.get("name"))] = (ReleaseRecord.from_dict(body, where), stored)
            except KbReleaseError as exc:
                is_live = pointer.live == body.get("name")
                report.add(f"{'live ' if is_live else ''}release {body.get('name')}", "error" if is_live else "warning", str(exc))
    except _NoRegistry:
        report.add("registry", "warning", f"no releases yet (database {registry.db} does not exist); run `kbrelease publish` or import a package")
    except KbReleaseError as exc:
        report.add("registry", "error", f"cannot be read: {exc}")
    live = records.get(pointer.live) if pointer and pointer.live else None
    kinds = {s.modality for s in cfg.sources} | set(live[0].embedders if live else ())
    models = _models(cfg, identity, kinds, report)
    _data_index(cfg, report, live[0] if live else None)
    if pointer is not None and not pointer.live:
        from kbrelease.release.search import no_live_message

        report.add("live release", "warning", no_live_message(registry))
    if live is not None:
        _release(store, live[0], live[1], "live", models, report, strict=True)
    if pointer is not None and pointer.previous and pointer.previous in records:
        prev = records[pointer.previous]
        _release(store, prev[0], prev[1], "rollback target", models, report, strict=False)
    if service_url:
        _service(service_url, timeout, cfg, live[0] if live else None, live[1] if live else None, report)
    return report
