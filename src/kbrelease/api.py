"""The library facade: every CLI command and HTTP endpoint is a call here first.

>>> from kbrelease import KbRelease, load_config
>>> kb = KbRelease(load_config("examples/kbrelease.yaml"))
>>> record = kb.publish()          # sync → build → verify → switch
>>> kb.search("how do I reset my password?", k=3)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kbrelease.cache.embeddings import CacheStats, EmbeddingCache
from kbrelease.config import Config
from kbrelease.embedding.base import ImageEmbedder, TextEmbedder
from kbrelease.progress import Quiet, Reporter
from kbrelease.release.file_packages import PackageInfo
from kbrelease.release.registry import Pointer, Registry, ReleaseRecord
from kbrelease.search import Hit, SearchResult
from kbrelease.sources.sync import SyncInfo
from kbrelease.store.milvus import MilvusStore

if TYPE_CHECKING:
    from kbrelease.release.files import ReleaseFiles
    from kbrelease.release.follow import LiveFollower


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

    def asdict(self) -> dict[str, Any]:
        return {
            "sync": self.sync.asdict(),
            "release": self.release.asdict(),
            "live": self.live,
            "previous": self.previous,
            "seconds": round(self.seconds, 3),
            "unchanged": self.unchanged,
        }


class KbRelease:
    """One configured project: its workspace, its Milvus, its environment."""

    def __init__(
        self,
        cfg: Config,
        reporter: Reporter | None = None,
        text_embedder: TextEmbedder | None = None,
        image_embedder: ImageEmbedder | None = None,
    ) -> None:
        self.cfg = cfg
        self.reporter = reporter or Quiet()
        self._text = text_embedder
        self._image = image_embedder
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

            self._cache = EmbeddingCache(self.cfg.cache_path)
        return self._cache

    @property
    def text_embedder(self) -> TextEmbedder:
        if self._text is None:
            from kbrelease.embedding.factory import make_text_embedder

            self._text = make_text_embedder(self.cfg)
        return self._text

    @property
    def image_embedder(self) -> ImageEmbedder:
        if self._image is None:
            from kbrelease.embedding.factory import make_image_embedder

            self._image = make_image_embedder(self.cfg)
        return self._image

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
    def sync(self, sources: list[str] | None = None) -> SyncInfo:
        from kbrelease.sources.sync import sync

        info, _ = sync(self.cfg, self.reporter, sources)
        return info

    def build(self, release: str | None = None) -> ReleaseRecord:
        from kbrelease.release.build import Builder

        builder = Builder(self.cfg, self.store, self.registry, self.reporter, self._text, self._image, self.cache)
        record = builder.run(release)
        self._text, self._image = builder._text, builder._image  # keep loaded models
        return record

    def verify(self, release: str) -> ReleaseRecord:
        from kbrelease.release.verify import verify

        return verify(self.cfg, self.store, self.registry, release)

    def switch(self, release: str) -> Pointer:
        from kbrelease.release.lifecycle import switch

        return switch(self.registry, release)

    def rollback(self) -> Pointer:
        from kbrelease.release.lifecycle import rollback

        return rollback(self.registry)

    def publish(self, release: str | None = None, force: bool = False) -> PublishInfo:
        """sync → build → verify → switch. A failure at any step leaves the live release as it was.

        When the live release was built from the same data index with the same
        models and chunking, nothing is built (``unchanged=True``) unless ``force``.
        """
        import time

        started = time.monotonic()
        synced = self.sync()
        if not force:
            current = self._live_if_current(synced.index_checksum)
            if current is not None:
                pointer = self.registry.pointer()
                return PublishInfo(synced, current, pointer.live, pointer.previous, time.monotonic() - started, unchanged=True)
        record = self.build(release)
        record = self.verify(record.name)
        pointer = self.switch(record.name)
        return PublishInfo(synced, record, pointer.live, pointer.previous, time.monotonic() - started)

    def _live_if_current(self, index_checksum: str) -> ReleaseRecord | None:
        """The live release, if rebuilding it now would give the same release."""
        live = self.registry.pointer().live
        record = self.registry.get(live) if live else None
        if record is None or record.data_index_checksum != index_checksum:
            return None
        if record.chunking.get("target_tokens") != self.cfg.text.chunk_target_tokens:
            return None
        current = {"text": lambda: self.text_embedder.identity, "image": lambda: self.image_embedder.identity}
        if all(current[kind]().matches(built) for kind, built in record.embedders.items()):
            return record
        return None

    # --- reading --------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        from kbrelease.release.lifecycle import status

        return status(self.registry)

    def releases(self) -> list[ReleaseRecord]:
        return self.registry.list()

    def release(self, name: str) -> ReleaseRecord:
        return self.registry.require(name)

    def gc(self, keep: int | None = None) -> list[str]:
        from kbrelease.release.lifecycle import gc

        return gc(self.store, self.registry, keep or self.cfg.keep_releases)

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

    def cache_export(self, out: Path, files: list[str] | None = None, release: str | None = None) -> PackageInfo:
        """Write per-file content packages of a release (default: the live one)."""
        from kbrelease.release.file_packages import export_packages
        from kbrelease.search import resolve_release

        return export_packages(self.store, resolve_release(self.registry, release), out, files)

    def cache_import(self, folder: Path) -> PackageInfo:
        """Load per-file content packages into the embedding cache (checksums and models checked)."""
        from kbrelease.release.file_packages import import_packages

        cache = self._require_cache()
        identities = {"text": self.text_embedder.identity, "image": self.image_embedder.identity}
        return import_packages(cache, folder, identities)

    # --- searching --------------------------------------------------------------
    def follow(self, refresh_seconds: float | None = None) -> LiveFollower:
        """A cached follower of the live pointer, for long-running processes (the service)."""
        from kbrelease.release.follow import LiveFollower

        return LiveFollower(self.registry, self.store, refresh_seconds or self.cfg.service.live_refresh_seconds)

    def coalesce_text_queries(self, threads: int | None = 1) -> None:
        """Let concurrent one-text queries share model calls (for services; idempotent, transparent to builds).

        ``threads``: intra-op threads of each coalesced model call (None: torch's default).
        """
        from kbrelease.embedding.batching import BatchingTextEmbedder

        if not isinstance(self.text_embedder, BatchingTextEmbedder):
            self._text = BatchingTextEmbedder(self.text_embedder, threads=threads)

    def resolve(self, release: str | ReleaseRecord | None = None) -> ReleaseRecord:
        """The release a search uses: a record already resolved, the named one, or the live one (read now)."""
        from kbrelease.search import resolve_release

        return release if isinstance(release, ReleaseRecord) else resolve_release(self.registry, release)

    def query(self, query: str, k: int = 5, source: str | None = None, release: str | ReleaseRecord | None = None) -> SearchResult:
        """Text search of one release's text sources, with the release name and timings."""
        from kbrelease.search import check_query, run_search

        text = check_query(query, k)
        record = self.resolve(release)
        emb = self.text_embedder
        return run_search(self.store, record, "text", emb.identity, lambda: emb.embed_texts([text])[0].tolist(), k, source)

    def query_image(
        self,
        image: bytes | Path,
        k: int = 5,
        source: str | None = None,
        release: str | ReleaseRecord | None = None,
        max_pixels: int | None = None,
        limit_name: str = "image.max_pixels",
    ) -> SearchResult:
        """Image search by an example image. ``max_pixels`` (default ``image.max_pixels``) refuses bombs."""
        from kbrelease.images.preprocess import preprocess_image
        from kbrelease.search import check_k, run_search

        check_k(k)
        data = image.read_bytes() if isinstance(image, Path) else image
        emb = self.image_embedder
        # Decode first: a bad upload is the caller's error whatever is live.
        arr = preprocess_image(data, emb.input_size, emb.mean, emb.std, max_pixels or self.cfg.image.max_pixels, limit_name)
        record = self.resolve(release)
        return run_search(self.store, record, "image", emb.identity, lambda: emb.embed_arrays(arr[None, ...])[0].tolist(), k, source)

    def query_text_to_image(self, query: str, k: int = 5, source: str | None = None, release: str | ReleaseRecord | None = None) -> SearchResult:
        """Images described by a text, when the image model has a text tower (CLIP-like); else QueryError."""
        from kbrelease.embedding.base import ImageTextEmbedder
        from kbrelease.errors import QueryError
        from kbrelease.search import check_query, run_search

        text = check_query(query, k)
        emb = self.image_embedder
        if not isinstance(emb, ImageTextEmbedder):
            raise QueryError(
                f"image model {emb.identity.model!r} cannot embed text, so images cannot be searched by a description; "
                "search them with an example image, or configure an image model with a text encoder"
            )
        record = self.resolve(release)
        return run_search(self.store, record, "image", emb.identity, lambda: emb.embed_texts([text])[0].tolist(), k, source)

    def search(self, query: str, k: int = 5, source: str | None = None, release: str | ReleaseRecord | None = None) -> list[Hit]:
        return self.query(query, k, source, release).hits

    def search_image(self, image: bytes | Path, k: int = 5, source: str | None = None, release: str | ReleaseRecord | None = None) -> list[Hit]:
        return self.query_image(image, k, source, release).hits

    def release_files(self) -> ReleaseFiles:
        """Input files of releases, checked against their data index (thumbnails, downloads)."""
        from kbrelease.release.files import ReleaseFiles

        return ReleaseFiles(self.cfg.workspace)
