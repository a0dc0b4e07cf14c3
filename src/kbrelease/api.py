"""The library facade: every CLI command and HTTP endpoint is a call here first.

>>> from kbrelease import KbRelease, load_config
>>> kb = KbRelease(load_config("examples/kbrelease.yaml"))
>>> record = kb.publish()          # sync → build → verify → switch
>>> kb.search("how do I reset my password?", k=3)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from kbrelease.cache.embeddings import CacheStats, EmbeddingCache
from kbrelease.cache.file_packages import PackageInfo
from kbrelease.config import Config
from kbrelease.embedding.base import ImageEmbedder, RecordedEmbedder, TextEmbedder
from kbrelease.embedding.models import Models
from kbrelease.progress import Quiet, Reporter
from kbrelease.release.registry import Pointer, Registry, ReleaseRecord
from kbrelease.release.search import Hit, RowFilter, SearchMode, SearchResult, parse_when
from kbrelease.sources.sync import SyncInfo
from kbrelease.store.milvus import MilvusStore
from kbrelease.trust.names import check_name

if TYPE_CHECKING:
    from kbrelease.deploy.github import Flow
    from kbrelease.deploy.render import RenderInfo
    from kbrelease.embedding.base import EmbedderIdentity
    from kbrelease.index.bundles import ResolvedBundle
    from kbrelease.index.query import IndexQuery
    from kbrelease.monitor.checks import MonitorReport
    from kbrelease.monitor.notify import NotifyInfo
    from kbrelease.package.export import ExportInfo
    from kbrelease.package.importer import ImportInfo, ImportTarget
    from kbrelease.package.migrate import MigrateInfo
    from kbrelease.release.build import Builder
    from kbrelease.release.check import CheckReport
    from kbrelease.release.files import ReleaseFiles
    from kbrelease.release.follow import LiveFollower
    from kbrelease.release.lifecycle import GcReport
    from kbrelease.release.quality import GoldenQuery, QualityReport
    from kbrelease.release.registrations import FileStatus
    from kbrelease.release.shards import BuildPlan, ShardResult
    from kbrelease.trust.lock import EnvLock


def _read_image(path: Path) -> bytes:
    """The bytes of a query image file, or a clear error naming it."""
    from kbrelease.errors import QueryError

    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise QueryError(f"image file {path} not found; give the path of an image file, or its bytes") from None
    except (IsADirectoryError, PermissionError) as exc:
        raise QueryError(f"cannot read image file {path} ({exc.strerror}); give the path of a readable image file") from None


@dataclass
class PublishInfo:
    """What ``publish`` did: the sync, the release, and the new pointer."""

    sync: SyncInfo
    release: ReleaseRecord
    live: str | None
    previous: str | None
    seconds: float = 0.0
    unchanged: bool = False
    """True when the live release already has this data index and these models: nothing was built."""
    advice: list[str] = field(default_factory=list)
    """Warnings with measured numbers when a source has outgrown the store engine (kbrelease.store.engines.advice)."""

    def asdict(self) -> dict[str, Any]:
        return {
            "sync": self.sync.asdict(),
            "release": self.release.asdict(),
            "live": self.live,
            "previous": self.previous,
            "seconds": round(self.seconds, 3),
            "unchanged": self.unchanged,
            "advice": list(self.advice),
        }


def row_filter(where: str | None, after: datetime | str | None, before: datetime | str | None) -> RowFilter | None:
    """The search's metadata/time filter, checked now (a bad one raises QueryError before anything runs)."""
    if not (where and where.strip()) and after is None and before is None:
        return None
    rows = RowFilter(where, parse_when(after, "after"), parse_when(before, "before"))
    rows.expr()
    return rows


class KbRelease:
    """One configured project: its workspace, its Milvus, its environment."""

    def __init__(
        self,
        cfg: Config,
        reporter: Reporter | None = None,
        text_embedder: TextEmbedder | None = None,
        image_embedder: ImageEmbedder | None = None,
        wait_for_lock: bool = True,
        on_lock_wait: Callable[[str], None] | None = None,
    ) -> None:
        """``wait_for_lock``: when another command holds the environment lock, wait for it (default) or raise
        :class:`~kbrelease.trust.lock.LockBusy` at once; ``on_lock_wait`` receives the "waiting for ..." message."""
        self.cfg = cfg
        self.wait_for_lock = wait_for_lock
        self._on_lock_wait = on_lock_wait
        self._lock: EnvLock | None = None
        self._repaired: list[str] = []
        """Releases the last lock acquisition found half dropped (a killed gc) and finished dropping."""
        self.reporter = reporter or Quiet()
        self.models = Models(cfg, text_embedder, image_embedder)
        """The embedders, created on first need and shared by builds, verifies and searches of this facade."""
        self._store: MilvusStore | None = None
        self._registry: Registry | None = None
        self._cache: EmbeddingCache | None = None

    # --- resources ----------------------------------------------------------
    @property
    def store(self) -> MilvusStore:
        if self._store is None:
            self._store = MilvusStore.from_config(self.cfg)
        return self._store

    @property
    def registry(self) -> Registry:
        if self._registry is None:
            self._registry = Registry(self.store, self.cfg.milvus.registry_db, self.cfg.environment)
        return self._registry

    @property
    def cache(self) -> EmbeddingCache | None:
        """The embedding cache, or None when ``cache.enabled`` is false."""
        if self._cache is None and self.cfg.cache.enabled:
            from kbrelease.cache.embeddings import EmbeddingCache

            self._cache = EmbeddingCache(self.cfg.cache_path, self.cfg.cache.journal)
        return self._cache

    @property
    def text_embedder(self) -> TextEmbedder:
        return self.models.text

    @property
    def query_text_embedder(self) -> TextEmbedder:
        """The embedder of text queries: the build's model when this process has it, else the light runtime (no torch)."""
        return self.models.query_text

    @property
    def image_embedder(self) -> ImageEmbedder:
        return self.models.image

    def identity(self, kind: str) -> EmbedderIdentity:
        """The configured ``kind`` ("text"/"image") embedder's identity; loads no model unless one is loaded already."""
        return self.models.identity(kind)

    @contextmanager
    def locked(self, operation: str) -> Iterator[None]:
        """Hold this environment's lock (:mod:`kbrelease.trust.lock`) for ``operation``; nested calls share it.

        Taking it first finishes what a killed command left half done (a gc's ``dropping`` releases).
        """
        if self._lock is None:
            from kbrelease.trust.lock import EnvLock
            from kbrelease.workspace import Workspace

            self._lock = EnvLock.for_config(
                self.cfg.milvus_uri, Workspace.of(self.cfg).state_dir, self.cfg.environment, self.registry, self.wait_for_lock, self._on_lock_wait
            )
        self._lock.wait = self.wait_for_lock
        with self._lock.hold(operation):
            if self._lock.depth == 1:
                from kbrelease.release.lifecycle import repair

                self._repaired = repair(self.store, self.registry)
            yield

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
        if self._cache is not None:
            self._cache.close()

    def __enter__(self) -> KbRelease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- pipeline -----------------------------------------------------------
    def sync(self, sources: list[str] | None = None, index_only: bool = False) -> SyncInfo:
        """Mirror the sources and write the data index; ``index_only`` hashes files in place and keeps no mirror."""
        from kbrelease.sources.sync import sync

        info, _ = sync(self.cfg, self.reporter, sources, index_only=index_only)
        return info

    def _builder(self, preload: bool = False) -> Builder:
        """The builder; ``preload``: it is about to embed, so the models start loading now (while it opens the release and reads files)."""
        from kbrelease.release.build import Builder

        modalities = sorted({s.modality for s in self.cfg.sources})
        for modality in modalities:
            self.identity(modality)  # a model the config names but cannot run is refused before anything is written
        if preload:
            self.models.preload(modalities)
        return Builder(self.cfg, self.store, self.registry, self.reporter, self.models, self.cache)

    def build(self, release: str | None = None, bundle: str | None = None, bundle_version: str | None = None) -> ReleaseRecord:
        """Build a release from the current data index, or from a resolved bundle (its latest version by default)."""
        if release is not None:
            check_name("release", release)
        with self.locked("build"):
            index_dir = self._bundle_index(bundle, bundle_version) if bundle is not None else None
            return self._builder(preload=True).run(release, index_dir)

    def _bundle_index(self, bundle: str, version: str | None) -> Path:
        from kbrelease.index.bundles import bundle_versions, locate_index
        from kbrelease.workspace import Workspace

        ws = Workspace.of(self.cfg)
        if not bundle_versions(ws, bundle):
            from kbrelease.errors import NotInIndex

            raise NotInIndex(f"no resolved bundle {bundle!r} in the workspace; run `kbrelease index --bundle bundles/{bundle}.yaml` first")
        return locate_index(ws, bundle, version)

    # --- parallel builds (the Argo workflow's steps; see kbrelease.release.shards) ---
    def prepare_build(
        self, release: str | None = None, shard_files: int | None = None, bundle: str | None = None, bundle_version: str | None = None
    ) -> BuildPlan:
        """Open a release for a parallel build: freeze the data index (or a resolved bundle's), create the database, plan shards per source."""
        from kbrelease.release.shards import prepare

        if release is not None:
            check_name("release", release)
        with self.locked("build --prepare"):
            index_dir = self._bundle_index(bundle, bundle_version) if bundle is not None else None
            return prepare(self._builder(), release, shard_files or self.cfg.deploy.shard_files, index_dir)

    def build_plan(self, release: str) -> BuildPlan:
        """The shard plan of a prepared release."""
        from kbrelease.release.shards import read_plan
        from kbrelease.workspace import Workspace

        return read_plan(Workspace.of(self.cfg).release_dir(check_name("release", release)), release)

    def build_shard(self, release: str, source: str, shard: str | None = None) -> list[ShardResult]:
        """Build one shard (``"2/3"``) of one source of a prepared release, or all its shards in turn."""
        from kbrelease.release.shards import Shard, build_shard

        check_name("release", release)
        shards = [shard] if shard else self.build_plan(release).shards(source)
        builder = self._builder(preload=True)
        return [build_shard(builder, release, source, Shard.parse(s)) for s in shards]

    def finalize_build(self, release: str) -> ReleaseRecord:
        """Merge the shard results of a parallel build into the release record (state ``built``)."""
        from kbrelease.release.shards import finalize

        check_name("release", release)
        with self.locked("build --finalize"):
            return finalize(self._builder(), release)

    def verify(self, release: str) -> ReleaseRecord:
        """Check a built release is complete; with golden queries, also measure its answers against the live release's."""
        from kbrelease.release.verify import verify

        check_name("release", release)
        with self.locked("verify"):
            record = verify(self.cfg, self.store, self.registry, release)
            if self.cfg.quality.golden_queries is not None:
                record = self._measure_quality(record)
            return record

    # --- quality gate (kbrelease.release.quality) ----------------------------------
    def golden_queries(self, path: Path | None = None) -> list[GoldenQuery]:
        """The configured golden queries (or those of ``path``)."""
        from kbrelease.errors import ConfigError
        from kbrelease.release.quality import load_golden_queries

        path = path or self.cfg.quality.golden_queries
        if path is None:
            raise ConfigError("no golden queries: set quality.golden_queries in kbrelease.yaml or KBRELEASE_GOLDEN_QUERIES, or pass --queries FILE")
        return load_golden_queries(Path(path))

    def evaluate_quality(self, release: str | ReleaseRecord, queries: list[GoldenQuery], k: int | None = None) -> QualityReport:
        """recall@k, MRR and the hits of every golden query on one release."""
        from kbrelease.release.quality import evaluate

        record = self.resolve(release)

        def search(q: GoldenQuery, k: int) -> list[tuple[str, str]]:
            result = self.query_image(q.image, k, q.source, record) if q.image is not None else self.query(q.query or "", k, q.source, record)
            return [(h.source, h.file) for h in result.hits]

        return evaluate(record.name, queries, search, k or self.cfg.quality.k)

    def _measure_quality(self, record: ReleaseRecord) -> ReleaseRecord:
        from kbrelease.release.manifest import write_manifest
        from kbrelease.release.quality import gate
        from kbrelease.release.registry import now_iso
        from kbrelease.workspace import Workspace

        queries = self.golden_queries()
        candidate = self.evaluate_quality(record, queries)
        live_name = self.registry.pointer().live
        live = self.evaluate_quality(live_name, queries) if live_name and live_name != record.name else None
        decision = gate(self.cfg, candidate, live)
        record.verification["quality"] = {
            "golden_queries": str(self.cfg.quality.golden_queries),
            "checked_at": now_iso(),
            "candidate": candidate.asdict(),
            "live": live.asdict() if live else None,
            "gate": decision.asdict(),
        }
        self.registry.put(record)
        write_manifest(Workspace.of(self.cfg).release_dir(record.name), record)
        return record

    def _check_gate(self, record: ReleaseRecord, skip_quality: bool, reason: str | None) -> dict[str, Any]:
        """The history note of a switch to ``record``; refuses (and records the refusal) when its quality gate failed."""
        from kbrelease.release.lifecycle import record_event
        from kbrelease.release.quality import QualityGateRefused, refusal_message

        quality = record.verification.get("quality") or {}
        recall = (quality.get("candidate") or {}).get("recall")
        note: dict[str, Any] = {"reason": reason, "recall": recall}
        if quality and not (quality.get("gate") or {}).get("passed", True):
            if not skip_quality:
                record_event(self.registry, record.name, "refused", note)
                raise QualityGateRefused(refusal_message(record.name, quality))
            note["skip_quality"] = True
        return note

    def switch(self, release: str, skip_quality: bool = False, reason: str | None = None) -> Pointer:
        """Make a verified release live; one that failed its quality gate only with ``skip_quality`` (recorded in the history).

        Under the lock: two switches at once cannot lose ``previous``.
        """
        from kbrelease.release.lifecycle import switch

        check_name("release", release)
        with self.locked(f"switch {release}"):
            note = self._check_gate(self.registry.require(release), skip_quality, reason)
            return switch(self.registry, release, note)

    def rollback(self, reason: str | None = None) -> Pointer:
        from kbrelease.release.lifecycle import rollback

        with self.locked("rollback"):
            return rollback(self.registry, {"reason": reason})

    def history(self) -> list[dict[str, Any]]:
        """Every switch, rollback and refused quality gate of this environment, oldest first."""
        return list(self.registry.pointer().history)

    def diff(self, old: str, new: str, queries: list[GoldenQuery] | None = None) -> dict[str, Any]:
        """What changed from release ``old`` to ``new``: files and chunks per source, and golden queries whose top k changed."""
        from kbrelease.release.diff import diff_releases

        return diff_releases(self, self.registry.require(old), self.registry.require(new), queries)

    def publish(
        self, release: str | None = None, force: bool = False, bundle: Path | None = None, skip_quality: bool = False, reason: str | None = None
    ) -> PublishInfo:
        """sync → build → verify → switch. A failure at any step leaves the live release as it was.

        With ``bundle`` (a bundle spec file), only its sources are synced, the
        spec is resolved again, and the release is built from that bundle.
        When the live release was built from the same data index with the same
        models and chunking, nothing is built (``unchanged=True``) unless ``force``.
        """
        if release is not None:
            check_name("release", release)
        with self.locked("publish"):
            return self._publish(release, force, bundle, skip_quality, reason)

    def _publish(self, release: str | None, force: bool, bundle: Path | None, skip_quality: bool, reason: str | None) -> PublishInfo:
        import time

        from kbrelease.trust import faults

        started = time.monotonic()
        if force or not self._has_releases():
            # A build will follow: load the models while the sources sync (a publish with nothing to do loads none).
            self.models.preload({s.modality for s in self.cfg.sources})
        resolved = None
        if bundle is not None:
            from kbrelease.index.bundles import check_spec, load_spec, resolve

            spec = load_spec(bundle)
            check_spec(self.cfg, spec)
            synced = self.sync([s.source for s in spec.sources])
            resolved = resolve(self.cfg, spec, bundle)
            checksum = resolved.bundle.checksum
        else:
            synced = self.sync()
            checksum = synced.index_checksum
        if not force:
            current = self._live_if_current(checksum)
            if current is not None:
                pointer = self.registry.pointer()
                return PublishInfo(
                    synced, current, pointer.live, pointer.previous, time.monotonic() - started, unchanged=True, advice=self.store_advice(current)
                )
        record = self._builder(preload=True).run(release, resolved.folder) if resolved is not None else self.build(release)
        faults.point("after:publish.build")
        record = self.verify(record.name)
        faults.point("after:publish.verify")
        self._prepare_query_runtime()
        pointer = self.switch(record.name, skip_quality, reason)
        return PublishInfo(synced, record, pointer.live, pointer.previous, time.monotonic() - started, advice=self.store_advice(record))

    def _has_releases(self) -> bool:
        """Whether this environment's workspace has a release folder (cheap: no store, no model)."""
        from kbrelease.workspace import Workspace

        folder = Workspace.of(self.cfg).releases_dir
        return folder.is_dir() and any(folder.iterdir())

    def _prepare_query_runtime(self) -> None:
        """After a build with the local torch model, export it for ONNX Runtime once, so later searches never import torch.

        Costs ~2 s once per model revision; a failure only costs later searches their speed, never the publish.
        """
        from kbrelease.embedding.factory import BF16_QUERY_PRECISIONS
        from kbrelease.embedding.local_text import LocalTextEmbedder
        from kbrelease.embedding.onnx_text import onnxruntime_available

        t = self.cfg.text
        loaded = self.models.loaded_text
        if not isinstance(loaded, LocalTextEmbedder) or t.runtime != "torch" or loaded.quantize not in BF16_QUERY_PRECISIONS or not onnxruntime_available():
            return
        from kbrelease.embedding.onnx_text import export_onnx, onnx_file

        try:
            export_onnx(loaded.model_folder, onnx_file(self.cfg.workspace / "models", loaded.identity.revision, "none"))
        except Exception as exc:  # noqa: BLE001 - an optimisation: report it and go on
            import logging

            logging.getLogger(__name__).warning("could not export the text model for ONNX Runtime (searches will load torch): %s", exc)

    def _live_if_current(self, index_checksum: str) -> ReleaseRecord | None:
        """The live release, if rebuilding it now would give the same release."""
        live = self.registry.pointer().live
        record = self.registry.get(live) if live else None
        if record is None or record.data_index_checksum != index_checksum:
            return None
        if record.chunking.get("target_tokens") != self.cfg.text.chunk_target_tokens:
            return None
        if (record.chunking.get("overlap_tokens") or 0) != self.cfg.text.chunk_overlap_tokens:
            return None  # releases before the setting had none
        hybrid = {s.name: s.hybrid for s in self.cfg.sources}
        if any(counts.sparse != hybrid.get(name, counts.sparse) for name, counts in record.sources.items()):
            return None  # `hybrid:` was switched on or off since: the collections need (or lose) the BM25 field
        # The configured identities, read from the model files: a publish with nothing to do loads no model.
        if all(RecordedEmbedder.from_record(built).compare(self.identity(kind)) == "same" for kind, built in record.embedders.items()):
            return record
        return None

    # --- deployment -------------------------------------------------------------
    def render_kubernetes(
        self, out: Path, template_name: str | None = None, publish_schedule: str | None = None, monitor_schedule: str | None = None
    ) -> RenderInfo:
        """Write the Argo WorkflowTemplate and the Kubernetes objects for this config into ``out``.

        ``template_name`` names the WorkflowTemplate (``bg-deploy``: the seed's), the schedules add CronWorkflows;
        each overrides its ``deploy`` key for this rendering only.
        """
        from kbrelease.deploy.render import render, with_deploy

        changes = {"workflow_template": template_name, "schedule.publish": publish_schedule, "schedule.monitor": monitor_schedule}
        return render(with_deploy(self.cfg, changes), out)

    def github_workflow(self) -> str:
        """The GitHub Actions workflow (YAML) that keeps the data index on the branch data/<bundle>."""
        from kbrelease.deploy.github import github_workflow_yaml

        return github_workflow_yaml(self.cfg)

    def github_workflows(self, flow: Flow = "single") -> dict[str, str]:
        """The workflow files of a CI flow (``single``, ``one-repo``, ``two-repo``): file name → YAML.

        ``two-repo`` gives the spec repository's (changed bundle specs → repository_dispatch) then the index repository's.
        """
        from kbrelease.deploy.github import workflows_yaml

        return workflows_yaml(self.cfg, flow)

    # --- data index and bundles -------------------------------------------------
    def index_bundle(self, spec: Path, sync: bool = False) -> ResolvedBundle:
        """Resolve a bundle spec file into ``<workspace>/bundles/<name>/<version>/``.

        With ``sync``, the spec's sources are synced first; otherwise the last
        sync's data index is used.
        """
        from kbrelease.index.bundles import check_spec, load_spec, resolve

        loaded = load_spec(spec)
        check_spec(self.cfg, loaded)
        if sync:
            self.sync([s.source for s in loaded.sources])
        return resolve(self.cfg, loaded, spec)

    def bundles(self) -> list[dict[str, Any]]:
        """Resolved bundles in the workspace: name, versions, latest."""
        from kbrelease.index.bundles import list_bundles
        from kbrelease.workspace import Workspace

        return list_bundles(Workspace.of(self.cfg))

    def data_index(self, name: str = "current", version: str | None = None) -> IndexQuery:
        """Queries over a data index: a resolved bundle (``version`` or its latest),
        ``current`` (the last sync), ``live``, or a release's frozen index."""
        from kbrelease.index.bundles import LIVE, bundle_versions, locate_index
        from kbrelease.index.compat import VersionCheck
        from kbrelease.index.query import IndexQuery
        from kbrelease.workspace import Workspace

        ws = Workspace.of(self.cfg)
        live = self.registry.pointer().live if name == LIVE and not bundle_versions(ws, name) else None
        return IndexQuery(locate_index(ws, name, version, live), VersionCheck.of(self.cfg))

    # --- integrity ---------------------------------------------------------------
    def monitor(self, alerts: bool = True, checksum_sample: int | str | None = None) -> MonitorReport:
        """One integrity check (completeness, checksums, sync delay, storage); alerts once per incident."""
        from kbrelease.monitor.monitor import Monitor

        return Monitor(self.cfg, self.store, self.registry).run_once(alerts=alerts, checksum_sample=checksum_sample)

    # --- reading --------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """The live pointer and every release, the store engine, and advice when the live release has outgrown it."""
        from kbrelease.release.lifecycle import status

        data = status(self.registry)
        live = self.registry.get(data["live"]) if data["live"] else None
        return {**data, "engine": self.cfg.store_engine, "advice": self.store_advice(live)}

    # --- the store engine (kbrelease.store.engines) ----------------------------------
    def store_advice(self, record: ReleaseRecord | None = None) -> list[str]:
        """Warnings (with the measured numbers) for each source of ``record`` past the embedded store's size."""
        from kbrelease.store.engines import advice, largest_sources

        return advice(self.cfg, largest_sources(record))

    def store_status(self) -> dict[str, Any]:
        """The engine, its URI or folder, its index, and the server kbrelease runs for it (pid, port, RSS), if running."""
        from kbrelease.store.engines import server_status

        return server_status(self.cfg)

    def store_stop(self) -> bool:
        """Stop the server kbrelease runs for this environment (lite, milvus-local); True if one was running."""
        from kbrelease.store.engines import stop_managed

        if self._store is not None:
            self._store.close()
            self._store, self._registry = None, None
        return stop_managed(self.cfg)

    def migrate_store(self, to: str) -> MigrateInfo:
        """Move every built or verified release to engine ``to`` (lite or milvus-local) by package export/import,
        keep the live pointer, and record the engine in the workspace; nothing is re-embedded."""
        from kbrelease.config import ENGINES, record_engine, recorded_engine
        from kbrelease.errors import ConfigError
        from kbrelease.package.migrate import migrate

        source = self.cfg.store_engine
        if to not in ENGINES or to == "server":
            raise ConfigError(
                f"cannot migrate to {to!r}: choose lite or milvus-local (to move releases into a Milvus server, use "
                "`kbrelease promote` between two environments, or `package export` / `package import`)"
            )
        if source == "server":
            raise ConfigError(
                "store migrate moves releases out of the stores kbrelease runs (lite, milvus-local); this environment uses the "
                "Milvus server at milvus.uri: use `kbrelease promote` or `package export` / `package import` instead"
            )
        if to == source:
            raise ConfigError(f"environment {self.cfg.environment!r} already uses the {to} engine; nothing to migrate")
        pinned = self.cfg.store.engine
        if pinned is not None and pinned != recorded_engine(self.cfg.workspace, self.cfg.environment):
            raise ConfigError(
                f"store.engine is set to {pinned!r} in the configuration (kbrelease.yaml or KBRELEASE_STORE_ENGINE), which would "
                f"win over the migration; remove it (migrate records the engine in the workspace), then run the migration again"
            )
        target_cfg = self.cfg.model_copy(deep=True)
        target_cfg.store.engine = to  # type: ignore[assignment]
        target = KbRelease(target_cfg, self.reporter, wait_for_lock=self.wait_for_lock, on_lock_wait=self._on_lock_wait)
        target.models = self.models  # the same embedders: an import checks identities, it embeds nothing
        try:
            # One lock covers both: a managed engine's lock is the workspace's file for this environment, whatever the engine.
            with self.locked(f"store migrate --to {to}"):
                info = migrate(self.store, self.registry, self._release_dir, target._import_target(), source, to)
        finally:
            target.close()
        record_engine(self.cfg.workspace, self.cfg.environment, to, source)  # type: ignore[arg-type]
        return info

    def releases(self) -> list[ReleaseRecord]:
        return self.registry.list()

    def collection_states(self) -> list[dict[str, str]]:
        """Each collection of this environment's releases with its load state in Milvus memory
        (``Loaded``, ``Loading``, ``NotLoad``; ``NotExist`` for a missing one): what searches keep in RAM."""
        if not self.registry.exists():  # reading would create the registry; a status writes nothing
            return []
        pointer = self.registry.pointer()
        out = []
        for record in self.registry.list():
            if record.state in ("dropped", "dropping"):
                continue
            for source, counts in sorted(record.sources.items()):
                state = self.store.load_state(record.database, counts.collection)
                out.append(
                    {
                        "release": record.name,
                        "release_state": record.display_state(pointer),
                        "source": source,
                        "database": record.database,
                        "collection": counts.collection,
                        "state": state,
                    }
                )
        return out

    def release(self, name: str) -> ReleaseRecord:
        return self.registry.require(check_name("release", name))

    def gc(self, keep: int | None = None) -> list[str]:
        """Drop old releases (see :meth:`gc_report`); the names of the releases dropped."""
        report = self.gc_report(keep)
        return report.dropped + report.interrupted

    def gc_report(self, keep: int | None = None) -> GcReport:
        """Drop all but the newest ``keep`` releases (never live or previous), interrupted builds, and orphan databases."""
        from kbrelease.release.build import database_name
        from kbrelease.release.lifecycle import gc
        from kbrelease.workspace import Workspace

        with self.locked("gc"):
            ws = Workspace.of(self.cfg)
            parallel = {r.name for r in self.registry.list() if r.state == "building" and (ws.release_dir(r.name) / "plan.json").is_file()}
            prefix = database_name(self.cfg, "")
            foreign = tuple(f"{prefix}{e}_" for e in self.cfg.environments if e != self.cfg.environment) if self.cfg.environment == "default" else ()
            report = gc(self.store, self.registry, keep or self.cfg.keep_releases, prefix, parallel, foreign)
            report.finished = self._repaired + report.finished
            return report

    def _require_cache(self) -> EmbeddingCache:
        if self.cache is None:
            from kbrelease.errors import ConfigError

            raise ConfigError("the embedding cache is disabled (cache.enabled: false / KBRELEASE_CACHE=off); enable it for this command")
        return self.cache

    def cache_stats(self) -> CacheStats:
        return self._require_cache().stats()

    def cache_prune(self, keep_builds: int) -> int:
        """Drop cache entries none of the last ``keep_builds`` builds used."""
        return self._require_cache().prune(keep_builds)

    def cache_export(self, out: Path, files: list[str] | None = None, release: str | None = None, sign: Path | None = None) -> PackageInfo:
        """Write per-file content packages of a release (default: the live one); ``sign``: a PEM Ed25519 private key."""
        from kbrelease.cache.file_packages import export_packages
        from kbrelease.release.search import resolve_release
        from kbrelease.trust.signing import SigningKey

        signer = SigningKey.load(sign) if sign is not None else None
        return export_packages(self.store, resolve_release(self.registry, check_name("release", release) if release else None), out, files, signer)

    def cache_import(self, folder: Path) -> PackageInfo:
        """Load per-file content packages into the embedding cache: checksums and models checked, and the vectors
        believed only on a trusted signature or after a re-embedded sample agrees (see cache/file_packages.py)."""
        from kbrelease.cache.file_packages import Verifier, import_packages
        from kbrelease.trust.signing import load_trusted_keys
        from kbrelease.workspace import Workspace

        cache = self._require_cache()
        identities = {"text": self.identity("text"), "image": self.identity("image")}
        verifier = Verifier(
            environment=self.cfg.environment,
            trusted=load_trusted_keys(self.cfg.trusted_keys),
            text=lambda: self.text_embedder,
            image=lambda: self.image_embedder,
            mirror=Workspace.of(self.cfg).mirror,
            max_pixels=self.cfg.image.max_pixels,
        )
        return import_packages(cache, folder, identities, verifier)

    # --- searching --------------------------------------------------------------
    def follow(self, refresh_seconds: float | None = None, background: bool = False) -> LiveFollower:
        """A cached follower of the live pointer, for long-running processes (the service).

        ``background``: re-read the pointer in a background thread, never in a request (see :class:`LiveFollower`).
        """
        from kbrelease.release.follow import LiveFollower

        return LiveFollower(self.registry, self.store, refresh_seconds or self.cfg.service.live_refresh_seconds, background=background)

    def coalesce_text_queries(self, threads: int | None = 1) -> None:
        """Let concurrent one-text queries share model calls (for services; idempotent, transparent to builds).

        ``threads``: intra-op threads of each coalesced model call (None: torch's default).
        """
        self.models.coalesce_text_queries(threads)

    def resolve(self, release: str | ReleaseRecord | None = None) -> ReleaseRecord:
        """The release a search uses: a record already resolved, the named one, or the live one (read now)."""
        from kbrelease.release.search import resolve_release

        return release if isinstance(release, ReleaseRecord) else resolve_release(self.registry, release)

    def query(
        self,
        query: str,
        k: int = 5,
        source: str | None = None,
        release: str | ReleaseRecord | None = None,
        where: str | None = None,
        after: datetime | str | None = None,
        before: datetime | str | None = None,
        mode: SearchMode | None = None,
    ) -> SearchResult:
        """Text search of one release's text sources, with the release name and timings.

        ``where`` filters by the files' user metadata (``camera_id == "front" and speed > 3``, see
        :mod:`kbrelease.trust.where`); ``after``/``before`` by the files' timestamps (inclusive, UTC when no zone).
        ``mode``: ``dense`` (vectors), ``sparse`` (BM25 keywords) or ``hybrid`` (both, reciprocal rank fusion); none:
        hybrid on the sources built with ``hybrid: true``, dense on the others. Each hit says which retrievers found it.
        """
        from kbrelease.release.search import check_mode, check_query, run_search

        text = check_query(query, k)
        mode = check_mode(mode)
        rows = row_filter(where, after, before)
        record = self.resolve(release)
        if mode == "sparse":  # no model: BM25 needs only the words
            from kbrelease.embedding.base import EmbedderIdentity

            return run_search(self.store, record, "text", EmbedderIdentity("text", "", 0), list, k, source, rows, query=text, mode=mode)
        emb = self.query_text_embedder
        return run_search(self.store, record, "text", emb.identity, lambda: emb.embed_texts([text])[0].tolist(), k, source, rows, query=text, mode=mode)

    def query_image(
        self,
        image: bytes | str | Path,
        k: int = 5,
        source: str | None = None,
        release: str | ReleaseRecord | None = None,
        max_pixels: int | None = None,
        limit_name: str = "image.max_pixels",
        where: str | None = None,
        after: datetime | str | None = None,
        before: datetime | str | None = None,
    ) -> SearchResult:
        """Image search by an example image: its bytes, or the path of its file. ``max_pixels`` (default ``image.max_pixels``) refuses bombs."""
        from kbrelease.images.preprocess import preprocess_image
        from kbrelease.release.search import check_k, run_search

        check_k(k)
        rows = row_filter(where, after, before)
        data = image if isinstance(image, bytes) else _read_image(Path(image))
        emb = self.image_embedder
        # Decode first: a bad upload is the caller's error whatever is live.
        limit = max_pixels or self.cfg.image.max_pixels
        arr = preprocess_image(data, emb.input_size, emb.mean, emb.std, limit, limit_name, self.cfg.image.max_aspect_ratio)
        record = self.resolve(release)
        return run_search(self.store, record, "image", emb.identity, lambda: emb.embed_arrays(arr[None, ...])[0].tolist(), k, source, rows)

    def query_text_to_image(
        self,
        query: str,
        k: int = 5,
        source: str | None = None,
        release: str | ReleaseRecord | None = None,
        where: str | None = None,
        after: datetime | str | None = None,
        before: datetime | str | None = None,
    ) -> SearchResult:
        """Images described by a text, when the image model has a text tower (CLIP-like); else QueryError."""
        from kbrelease.embedding.base import ImageTextEmbedder
        from kbrelease.errors import QueryError
        from kbrelease.release.search import check_query, run_search

        text = check_query(query, k)
        emb = self.image_embedder
        if not isinstance(emb, ImageTextEmbedder):
            raise QueryError(
                f"image model {emb.identity.model!r} cannot embed text, so images cannot be searched by a description; "
                "search them with an example image, or configure an image model with a text encoder"
            )
        rows = row_filter(where, after, before)
        record = self.resolve(release)
        return run_search(self.store, record, "image", emb.identity, lambda: emb.embed_texts([text])[0].tolist(), k, source, rows)

    def search(
        self,
        query: str,
        k: int = 5,
        source: str | None = None,
        release: str | ReleaseRecord | None = None,
        where: str | None = None,
        after: datetime | str | None = None,
        before: datetime | str | None = None,
        mode: SearchMode | None = None,
    ) -> list[Hit]:
        return self.query(query, k, source, release, where=where, after=after, before=before, mode=mode).hits

    def search_image(
        self,
        image: bytes | str | Path,
        k: int = 5,
        source: str | None = None,
        release: str | ReleaseRecord | None = None,
        where: str | None = None,
        after: datetime | str | None = None,
        before: datetime | str | None = None,
    ) -> list[Hit]:
        """Hits for an example image: its bytes, or the path of its file (str or Path)."""
        return self.query_image(image, k, source, release, where=where, after=after, before=before).hits

    # --- registered files (seed 001) ---------------------------------------------
    def register_files(self, files: list[dict[str, Any]]) -> list[FileStatus]:
        """Register files for the next release: ``[{"source": "docs", "path": "it/vpn.md", "note": "..."}]``.

        Every item is validated before the first is written (a configured source, a plain
        relative path of its modality). Returns each file's id and current status.
        """
        from kbrelease.release.registrations import FileRegistry

        return FileRegistry(self.cfg, self.registry, self.store).register(files)

    def file_status(self, file_id: str | None = None) -> list[FileStatus]:
        """The status of one registered file (``file_id``) or of all: registered, synced, embedded, live or failed (with the reason)."""
        from kbrelease.release.registrations import FileRegistry

        files = FileRegistry(self.cfg, self.registry, self.store)
        return [files.get(file_id)] if file_id is not None else files.list()

    def notify(self, workflow: str, status: str, release: str | None = None, failures: str | None = None) -> NotifyInfo:
        """Post a workflow's result to the alert webhooks (what the Argo exit handler runs)."""
        from kbrelease.monitor.notify import notify_workflow

        return notify_workflow(self.cfg, workflow, status, release, failures)

    def release_files(self) -> ReleaseFiles:
        """Input files of releases, checked against their data index (thumbnails, downloads)."""
        from kbrelease.release.files import ReleaseFiles

        return ReleaseFiles(self.cfg.workspace)

    # --- packages, environments, compatibility ------------------------------------
    def _import_target(self) -> ImportTarget:
        from kbrelease.package.importer import ImportTarget

        return ImportTarget(self.cfg, self.store, self.registry, self.identity, self.reporter)

    def _release_dir(self, name: str) -> Path:
        from kbrelease.workspace import Workspace

        return Workspace.of(self.cfg).release_dir(name)

    def package_export(self, release: str, out: Path | IO[bytes], compress: bool = False, part_mb: float = 64, sign: Path | None = None) -> ExportInfo:
        """Write release ``release`` as one package: a file (atomically) or any writable stream.

        ``sign``: a PEM Ed25519 private key (``kbrelease package keygen``); the package then carries its signature.
        """
        from kbrelease.package.export import export_to_file, write_package
        from kbrelease.trust.signing import SigningKey

        signer = SigningKey.load(sign) if sign is not None else None
        record = self.registry.require(check_name("release", release))
        part_bytes = int(part_mb * (1 << 20))
        if isinstance(out, Path):
            return export_to_file(self.store, record, self._release_dir(release), out, compress, part_bytes, self.reporter, signer)
        return write_package(self.store, record, self._release_dir(release), out, compress, part_bytes, self.reporter, signer=signer)

    def package_import(self, package: Path | IO[bytes], switch: bool = False, name: str | None = None) -> ImportInfo:
        """Check a package completely, then load it into this environment; switch live only with ``switch``.

        A stream (stdin) is first copied to the workspace's tmp folder, because
        checking every member before writing anything takes a first pass.
        """
        if name is not None:
            check_name("release", name)
        with self.locked("package import"):
            return self._package_import(package, switch, name)

    def _package_import(self, package: Path | IO[bytes], switch: bool, name: str | None) -> ImportInfo:
        from kbrelease.package.importer import import_file
        from kbrelease.trust import faults

        faults.point("after:import.lock")
        if isinstance(package, Path):
            return import_file(package, self._import_target(), name, switch)
        import shutil
        import tempfile

        from kbrelease.workspace import Workspace

        tmp_dir = Workspace.of(self.cfg).tmp_dir
        tmp_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=tmp_dir, prefix="package-", suffix=".tar") as spool:
            shutil.copyfileobj(package, spool, 1 << 20)
            spool.flush()
            return import_file(Path(spool.name), self._import_target(), name, switch)

    def promote(self, release: str, target: KbRelease, switch: bool = False, name: str | None = None, part_mb: float = 64) -> ImportInfo:
        """Copy ``release`` of this environment into ``target``'s, streaming, without re-embedding."""
        from kbrelease.errors import ConfigError
        from kbrelease.package.promote import promote

        if target.cfg.environment == self.cfg.environment and target.cfg.milvus_uri == self.cfg.milvus_uri:
            raise ConfigError(f"--from and --to are both environment {self.cfg.environment!r}; promote copies between two environments")
        check_name("release", release)
        if self._embedded_store_missing():
            from kbrelease.errors import UnknownRelease

            raise UnknownRelease(
                f"environment {self.cfg.environment!r} has no releases yet (its embedded store {self.cfg.milvus_uri} does not exist); "
                f"run `kbrelease --env {self.cfg.environment} publish` first, or name the environment that has {release!r} with --from"
            )
        record = self.registry.require(release)
        if name is not None:
            check_name("release", name)
        with target.locked(f"promote {self.cfg.environment}/{release}"):
            return promote(self.store, record, self._release_dir(release), target._import_target(), name, switch, int(part_mb * (1 << 20)))

    def _embedded_store_missing(self) -> bool:
        """True when this environment's store is an embedded folder that does not exist (asking must not create it)."""
        from kbrelease.store.milvus import is_embedded

        uri = self.cfg.milvus_uri
        return self._store is None and is_embedded(uri) and not Path(uri).exists()

    def check(self, service_url: str | None = None, timeout: float = 5.0) -> CheckReport:
        """Report incompatibilities between the configured models, the data index, the releases and a service."""
        from kbrelease.release.check import check

        return check(self.cfg, self.store, self.registry, self.identity, service_url, timeout)
