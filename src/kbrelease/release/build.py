"""``build``: one data index → one NEW database with one collection per source.

Streaming: files are read and chunked (or decoded) a bounded window ahead on
worker threads, embedded in batches, and upserted; memory does not grow with
the corpus. Row ids are ``<file_id>:<chunk>``, and every row carries its
file's chunk count, so a rerun of an interrupted build finds the files that
are complete, deletes partial ones, and embeds only the rest: no duplicates.
Bad files are recorded with their reason and the build goes on.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from kbrelease import __version__
from kbrelease.cache.embeddings import EmbeddingCache, content_key, namespace
from kbrelease.chunking.formats import ReadOptions, read_document
from kbrelease.chunking.text import Chunk, TextChunker
from kbrelease.config import Config
from kbrelease.embedding.base import EmbedderIdentity, ImageEmbedder, TextEmbedder, Vectors
from kbrelease.embedding.models import Models
from kbrelease.errors import InputFileError, KbReleaseError, ReleaseError
from kbrelease.index.data_index import Bundle, FileRecord, SourceIndex, read_bundle, read_source_index
from kbrelease.progress import Quiet, Reporter
from kbrelease.release.manifest import write_manifest
from kbrelease.release.registry import Registry, ReleaseRecord, SourceCounts, check_release_name
from kbrelease.sources.metadata import row_metadata
from kbrelease.store.milvus import MilvusStore, clip_utf8
from kbrelease.store.schema import PATH_MAX, TEXT_MAX
from kbrelease.trust import faults
from kbrelease.workspace import Workspace

A = TypeVar("A")
B = TypeVar("B")
MAX_REPORTED = 50  # named failures/skips per source; the counts are exact. Milvus caps a JSON value at 64 KiB


def bounded_map(fn: Callable[[A], B], items: Iterable[A], workers: int, window: int) -> Iterator[B]:
    """``map`` on threads, in order, with at most ``window`` results pending."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: deque[Future[B]] = deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


@dataclass
class Prepared:
    """A file after reading: its chunks or its image array, or why it failed."""

    record: FileRecord
    chunks: list[Chunk] | None = None
    array: Any = None
    failure: str | None = None
    skip: str | None = None
    encoding: str = ""
    notes: tuple[str, ...] = ()
    """Parts left out of a file that is otherwise indexed (a PDF's scanned pages): listed with the skips, not counted."""


def database_name(cfg: Config, release: str) -> str:
    env = "" if cfg.environment == "default" else f"{cfg.environment}_"
    return f"{cfg.milvus.db_prefix}{env}{release}"


class Builder:
    """Builds releases of one configuration; see :func:`build`.

    The unit of work is :meth:`build_source`: one source, or one shard of it,
    into a release's database. A whole build (:meth:`run`) calls it for every
    source; a parallel build (:mod:`kbrelease.release.shards`) once per shard.
    """

    def __init__(
        self,
        cfg: Config,
        store: MilvusStore,
        registry: Registry,
        reporter: Reporter,
        models: Models,
        cache: EmbeddingCache | None = None,
    ) -> None:
        self.cfg = cfg
        self.cache = cache
        self.store = store
        self.registry = registry
        self.reporter = reporter
        self.models = models
        self._chunker: TextChunker | None = None
        self._release: str | None = None
        """The release being built (:meth:`use_release`): the cache's build and the live comparison refer to it."""
        self.ws = Workspace.of(cfg)

    # --- embedders, from the shared holder ------------------------------------
    @property
    def text(self) -> TextEmbedder:
        return self.models.text

    @property
    def image(self) -> ImageEmbedder:
        return self.models.image

    def hybrid(self, src: SourceIndex) -> bool:
        """Whether ``src`` is configured for hybrid search (``hybrid: true`` on a text source): its collection gets a BM25 field."""
        found = next((s for s in self.cfg.sources if s.name == src.channel), None)
        return src.modality == "text" and found is not None and found.hybrid

    def ensure_collection(self, db: str, src: SourceIndex) -> None:
        dim = self.text.identity.dim if src.modality == "text" else self.image.identity.dim
        self.store.ensure_collection(db, src.collection, dim, description=f"kbrelease source {src.channel}", sparse=self.hybrid(src))

    def use_release(self, release: str) -> None:
        """Build into ``release`` from now on (once per release: the embedding cache records which build used what)."""
        if self._release != release:
            self._release = release
            if self.cache is not None:
                self.cache.begin_build(release)

    @property
    def chunker(self) -> TextChunker:
        if self._chunker is None:
            emb = self.text
            self._chunker = TextChunker(
                max_tokens=emb.max_tokens,
                target_tokens=self.cfg.text.chunk_target_tokens,
                overlap_tokens=self.cfg.text.chunk_overlap_tokens,
                hf_tokenizer=getattr(emb, "hf_tokenizer", None),
                count_tokens=emb.count_tokens,
            )
        return self._chunker

    # --- per file -----------------------------------------------------------
    def _read(self, source: str, rec: FileRecord, max_mb: float) -> bytes:
        from kbrelease.errors import UnsafePath
        from kbrelease.trust.paths import contained, is_regular_file

        try:  # the path comes from a data index, which may come from a package: never outside the mirror
            path = contained(self.ws.mirror(source), rec.relative_path, "file of the data index")
        except UnsafePath as exc:
            raise InputFileError(str(exc)) from exc
        if not path.exists():
            raise InputFileError("missing from the workspace mirror; run `kbrelease sync` again")
        if not is_regular_file(path):
            raise InputFileError("not a regular file in the workspace mirror (a folder, FIFO or device); run `kbrelease sync` again")
        size = path.stat().st_size
        if size > max_mb * 1024 * 1024:
            raise InputFileError(f"file is {size / 1048576:.1f} MB, over the {max_mb:g} MB limit; split it or raise max_file_mb")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise InputFileError(f"cannot be read ({exc.strerror}); fix its permissions") from exc
        if hashlib.sha256(data).hexdigest() != rec.checksum:
            raise InputFileError("changed since the data index was written; run `kbrelease sync` and build again")
        return data

    def _prepare_text(self, source: str, rec: FileRecord) -> Prepared:
        try:
            data = self._read(source, rec, self.cfg.text.max_file_mb)
            if not data.strip():
                return Prepared(rec, skip="empty file")
            options = ReadOptions.for_text(self.cfg.text.fallback_encoding, self.cfg.text.max_file_mb)
            doc = read_document(rec.relative_path, data, options)  # by the file's suffix: kbrelease.chunking.formats
            chunks = self.chunker.chunk_sections(doc.sections, markdown=doc.markdown)
            if not chunks:
                return Prepared(rec, skip=doc.empty_reason or "no text after decoding (whitespace only)")
            return Prepared(rec, chunks=chunks, encoding=doc.encoding, notes=doc.notes)
        except InputFileError as exc:
            return Prepared(rec, failure=exc.reason)
        except KbReleaseError:
            raise  # the embedder or the workspace, not this file
        except Exception as exc:  # noqa: BLE001 - whatever one file does, it is that file's failure
            return Prepared(rec, failure=f"cannot be read ({type(exc).__name__}: {str(exc)[:200]}); replace or remove the file")

    def _prepare_image(self, source: str, rec: FileRecord) -> Prepared:
        from kbrelease.images.preprocess import preprocess_image

        try:
            data = self._read(source, rec, self.cfg.image.max_file_mb)
            emb = self.image
            arr = preprocess_image(data, emb.input_size, emb.mean, emb.std, self.cfg.image.max_pixels, max_aspect_ratio=self.cfg.image.max_aspect_ratio)
            return Prepared(rec, array=arr)
        except InputFileError as exc:
            return Prepared(rec, failure=exc.reason)
        except KbReleaseError:
            raise  # the embedder or the workspace, not this file
        except Exception as exc:  # noqa: BLE001 - whatever one file does, it is that file's failure
            return Prepared(rec, failure=f"cannot be read ({type(exc).__name__}: {str(exc)[:200]}); replace or remove the file")

    # --- per source ---------------------------------------------------------
    def _base_row(self, rec: FileRecord, index: int, n: int) -> dict[str, Any]:
        return {
            "id": f"{rec.file_id}:{index}",
            "file_id": rec.file_id,
            "file": clip_utf8(rec.relative_path, PATH_MAX),
            "chunk_index": index,
            "n_chunks": n,
            "checksum": rec.checksum,
        }

    def build_source(self, release: str, db: str, src: SourceIndex, records: list[FileRecord] | None = None, shard: str = "") -> SourceCounts:
        """Build one source of ``release`` into database ``db``: all of it, or the ``records`` of one shard.

        Files whose rows are complete are kept, partial ones are rebuilt, the
        rest embedded (or copied from the cache). The whole source also drops
        rows of files no longer indexed, seals the collection and counts its
        rows; a shard leaves that to :func:`kbrelease.release.shards.finalize`.
        Safe to rerun after a crash, and to run for different shards at once.
        """
        self.use_release(release)
        whole = records is None
        if records is None:
            records = read_source_index(self.ws.release_index(release) / src.index_file)
        self.ensure_collection(db, src)
        present = self.store.file_rows(db, src.collection, None if whole else [r.file_id for r in records])
        wanted = {r.file_id for r in records}
        complete = {f for f, (have, n) in present.items() if have == n and f in wanted}
        self.store.delete_files(db, src.collection, [f for f in present if f not in complete])
        todo = [r for r in records if r.file_id not in complete]
        counts = SourceCounts(collection=src.collection, modality=src.modality, files=len(records))
        counts.sparse = src.modality == "text" and self.store.has_sparse(db, src.collection)  # what the collection has, not what was asked
        label = f"build {src.channel}" + (f" {shard}" if shard else "")
        self.reporter.start(label, len(records), "files")
        self.reporter.advance(label, len(records) - len(todo))
        self.reporter.start(self._embed_label(src), None, "chunks" if src.modality == "text" else "images")
        if src.modality == "text":
            self._build_text(db, src, todo, counts, label)
        else:
            self._build_images(db, src, todo, counts, label)
        self.reporter.finish(label)
        self.reporter.finish(self._embed_label(src))
        if whole:
            counts.removed = self.removed_since_live(src, wanted)
            self.store.seal(db, src.collection)
            counts.rows = self.store.count(db, src.collection)
        return counts

    def removed_since_live(self, src: SourceIndex, wanted: set[str]) -> int:
        """Files the live release had in ``src`` that ``wanted`` (this release's) lacks."""
        """Files the live release had in this source that this one no longer has."""
        live = self.registry.pointer().live
        if not live or live == self._release:
            return 0
        previous = read_source_index(self.ws.release_index(live) / src.index_file)
        return sum(1 for r in previous if r.file_id not in wanted)

    @staticmethod
    def _embed_label(src: SourceIndex) -> str:
        return f"  embedded {src.channel}"

    def _note(self, counts: SourceCounts, prep: Prepared) -> None:
        if prep.failure:
            counts.failed += 1
            if len(counts.failures) < MAX_REPORTED:
                counts.failures.append({"file": prep.record.relative_path, "reason": prep.failure[:300]})
        elif prep.skip:
            counts.skipped += 1
            if len(counts.skips) < MAX_REPORTED:
                counts.skips.append({"file": prep.record.relative_path, "reason": prep.skip})
        for note in prep.notes:  # the file is indexed; the parts it lacks are named with the skips
            if len(counts.skips) < MAX_REPORTED:
                counts.skips.append({"file": prep.record.relative_path, "reason": note[:300]})

    def _token_lengths(self, texts: list[str]) -> list[int]:
        """Token counts of ``texts`` (one batched call of a fast tokenizer where the embedder has one)."""
        tokenizer = getattr(self.text, "hf_tokenizer", None)
        if tokenizer is not None and hasattr(tokenizer, "encode_batch"):
            return [len(e.ids) for e in tokenizer.encode_batch(texts, add_special_tokens=False)]
        return [self.text.count_tokens(t) for t in texts]

    def _build_text(self, db: str, src: SourceIndex, todo: list[FileRecord], counts: SourceCounts, label: str) -> None:
        # Chunks are gathered across files (text.sort_window of them), sorted by token length and handed to the model
        # in calls of 4x batch_size: forward passes then hold texts of about one length, so little of what the model
        # computes is padding (bench/padding_bench.py), while progress, upserts and the embedding cache still advance
        # one call at a time.
        call = self.cfg.text.batch_size * 4
        window: list[tuple[Prepared, Chunk]] = []
        pending: list[tuple[Prepared, Chunk]] = []

        def drain() -> None:
            lengths = self._token_lengths([c.text for _, c in window])
            order = sorted(range(len(window)), key=lambda i: lengths[i], reverse=True)
            for start in range(0, len(order), call):
                pending.extend(window[i] for i in order[start : start + call])
                flush()
            window.clear()

        def flush() -> None:
            if not pending:
                return
            texts = [c.text for _, c in pending]
            vectors = self._vectors(self.text.identity, [content_key(t) for t in texts], lambda idx: self.text.embed_texts([texts[i] for i in idx]), counts)
            rows = []
            for (prep, chunk), vec in zip(pending, vectors, strict=True):
                assert prep.chunks is not None
                row = self._base_row(prep.record, chunk.index, len(prep.chunks))
                row.update(
                    vector=vec.tolist(),
                    start=chunk.start,
                    heading=clip_utf8(chunk.heading, PATH_MAX),
                    text=clip_utf8(chunk.text, TEXT_MAX),
                    metadata=row_metadata(prep.record.metadata, prep.record.timestamp, source=src.channel, encoding=prep.encoding)
                    | ({"page": chunk.page} if chunk.page is not None else {}),
                )
                rows.append(row)
            self._upsert(db, src.collection, rows)
            self.reporter.advance(self._embed_label(src), len(rows))
            pending.clear()

        prepare = lambda rec: self._prepare_text(src.channel, rec)  # noqa: E731
        for prep in bounded_map(prepare, todo, workers=2, window=64):
            self._note(counts, prep)
            for chunk in prep.chunks or []:
                window.append((prep, chunk))
            if len(window) >= self.cfg.text.sort_window:
                drain()
            self.reporter.advance(label)
        drain()

    def _build_images(self, db: str, src: SourceIndex, todo: list[FileRecord], counts: SourceCounts, label: str) -> None:
        import numpy as np

        batch: list[Prepared] = []

        def write(records: list[FileRecord], vectors: Any) -> None:
            rows = []
            for rec, vec in zip(records, vectors, strict=True):
                row = self._base_row(rec, 0, 1)
                row.update(vector=vec.tolist(), start=0, heading="", text="", metadata=row_metadata(rec.metadata, rec.timestamp, source=src.channel))
                rows.append(row)
            self._upsert(db, src.collection, rows)
            self.reporter.advance(self._embed_label(src), len(rows))

        def flush() -> None:
            if not batch:
                return
            arrays = np.stack([p.array for p in batch])
            keys = [p.record.checksum for p in batch]  # an image's key is its file's sha256
            write([p.record for p in batch], self._vectors(self.image.identity, keys, lambda idx: self.image.embed_arrays(arrays[idx]), counts))
            batch.clear()

        # Cached images are not even decoded.
        cached = self.cache.get_many(namespace(self.image.identity), [r.checksum for r in todo]) if self.cache else {}
        hits = [r for r in todo if r.checksum in cached]
        for i in range(0, len(hits), self.cfg.milvus.insert_batch):
            part = hits[i : i + self.cfg.milvus.insert_batch]
            write(part, [cached[r.checksum] for r in part])
            self.reporter.advance(label, len(part))
        counts.reused += len(hits)
        if self.cache:
            self.cache.record(hits=len(hits), misses=0)
        prepare = lambda rec: self._prepare_image(src.channel, rec)  # noqa: E731
        rest = [r for r in todo if r.checksum not in cached]
        for prep in bounded_map(prepare, rest, workers=2, window=2 * self.cfg.image.batch_size):
            self._note(counts, prep)
            if prep.array is not None:
                batch.append(prep)
            if len(batch) >= self.cfg.image.batch_size:
                flush()
            self.reporter.advance(label)
        flush()

    def _vectors(self, identity: EmbedderIdentity, keys: list[str], embed: Callable[[list[int]], Vectors], counts: SourceCounts) -> list[Vectors]:
        """One vector per key: from the cache where it has it, else from ``embed(indexes)``.

        Identical keys in one batch are embedded once. New vectors are written
        to the cache (one transaction) before the rows that use them.
        """
        ns = namespace(identity)
        found = self.cache.get_many(ns, keys) if self.cache else {}
        first_missing: dict[str, int] = {}
        for i, key in enumerate(keys):
            if key not in found and key not in first_missing:
                first_missing[key] = i
        if first_missing:
            fresh = dict(zip(first_missing, embed(list(first_missing.values())), strict=True))
            if self.cache:
                self.cache.put_many(ns, fresh.items())
            found.update(fresh)
        counts.embedded += len(first_missing)
        counts.reused += len(keys) - len(first_missing)
        if self.cache:
            self.cache.record(hits=len(keys) - len(first_missing), misses=len(first_missing))
        return [found[k] for k in keys]

    def _upsert(self, db: str, collection: str, rows: list[dict[str, Any]]) -> None:
        step = self.cfg.milvus.insert_batch
        for i in range(0, len(rows), step):
            self.store.upsert(db, collection, rows[i : i + step])

    # --- the release ----------------------------------------------------------
    def begin(self, name: str | None, index_dir: Path | None = None) -> ReleaseRecord:
        """Open release ``name`` for building: freeze the data index into it, record it as ``building``.

        ``index_dir`` is the data index to build (default: the current one, i.e.
        the last sync; a resolved bundle's folder otherwise). A
        ``building``/``failed`` release with the same data index is resumed;
        with another data index it starts over (its database is dropped).
        """
        from kbrelease.index.compat import VersionCheck

        index_dir = index_dir or self.ws.index_dir
        bundle = read_bundle(index_dir, VersionCheck.of(self.cfg))
        release = check_release_name(name) if name else self.registry.next_name()
        self.use_release(release)
        record = self.registry.get(release)
        db = database_name(self.cfg, release)
        if record is not None and record.state not in ("building", "failed"):
            raise ReleaseError(f"release {release!r} is already {record.state}; releases are immutable — build a new one (omit --release for the next name)")
        for src in bundle.data_manifest:  # before anything is dropped or created
            if self.hybrid(src):
                self.store.check_sparse(f"source {src.channel!r} (hybrid: true)", "set `hybrid: false` on the source, or use Milvus 2.5 or later")
        restart = record is None or record.data_index_checksum != bundle.checksum
        if restart:
            self.store.drop_database(db)
            frozen = self.ws.release_index(release)
            if frozen.exists():
                shutil.rmtree(frozen)
            shutil.copytree(index_dir, frozen, ignore=shutil.ignore_patterns(".*"))
        record = self._new_record(release, db, bundle, record)
        self.registry.put(record)
        return record

    def run(self, name: str | None, index_dir: Path | None = None) -> ReleaseRecord:
        """Build release ``name`` from ``index_dir`` (default: the current data index, i.e. the last sync)."""
        record = self.begin(name, index_dir)
        faults.point("after:build.begin")
        release, db = record.name, record.database
        started = time.monotonic()
        try:
            self.store.ensure_database(db)
            for src in read_bundle(self.ws.release_index(release)).data_manifest:
                record.sources[src.channel] = self.build_source(release, db, src)
                faults.point("after:build.source")
            record.state = "built"
            record.error = None
        except BaseException as exc:  # noqa: BLE001 - recorded, then re-raised (KeyboardInterrupt too)
            record.state = "failed"
            record.error = f"{type(exc).__name__}: {exc}"[:2000]
            record.build_seconds = time.monotonic() - started
            try:
                self.registry.put(record)
            finally:
                raise
        record.build_seconds = round(time.monotonic() - started, 3)
        self.registry.put(record)
        write_manifest(self.ws.release_dir(release), record)
        return record

    def _new_record(self, release: str, db: str, bundle: Bundle, old: ReleaseRecord | None) -> ReleaseRecord:
        embedders: dict[str, dict[str, Any]] = {}
        modalities = {s.modality for s in bundle.data_manifest}
        if "text" in modalities:
            embedders["text"] = vars(self.text.identity) | {"max_tokens": self.text.max_tokens}
        if "image" in modalities:
            embedders["image"] = vars(self.image.identity) | {"input_size": self.image.input_size}
        created = old.created_at if old is not None else None
        record = ReleaseRecord(
            name=release,
            environment=self.cfg.environment,
            database=db,
            data_index_checksum=bundle.checksum,
            embedders=embedders,
            chunking={
                "max_tokens": self.text.max_tokens if "text" in modalities else None,
                "target_tokens": self.cfg.text.chunk_target_tokens,
                "overlap_tokens": self.cfg.text.chunk_overlap_tokens,
                "splitter": "semantic-text-splitter",
            },
            tool_version=__version__,
        )
        if created:
            record.created_at = created
        return record


def build(
    cfg: Config,
    store: MilvusStore,
    registry: Registry,
    name: str | None = None,
    reporter: Reporter | None = None,
    text_embedder: TextEmbedder | None = None,
    image_embedder: ImageEmbedder | None = None,
    cache: EmbeddingCache | None = None,
    index_dir: Path | None = None,
) -> ReleaseRecord:
    """Build release ``name`` (default: the next ``vN``) from the current data index (or ``index_dir``, e.g. a bundle's).

    A rerun for a ``building``/``failed`` release resumes if the data index is
    the same, else starts over. Never touches the live pointer.
    """
    builder = Builder(cfg, store, registry, reporter or Quiet(), Models(cfg, text_embedder, image_embedder), cache)
    return builder.run(name, index_dir)
