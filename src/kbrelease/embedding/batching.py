"""Coalesce concurrent single-query embeddings into one model call (the search service's hot path).

A local model answers one short query in a few milliseconds, and eight of them in
one batch in little more than that, while eight separate calls queue behind the
model's lock one after another. :class:`BatchingTextEmbedder` hands the model,
from one worker thread, every query that arrived while it was busy. Nothing waits
on a timer: a lone query goes to the model at once, so latency at concurrency 1
is unchanged (one thread hand-off, ~0.1 ms).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import Future

from kbrelease.embedding.base import EmbedderIdentity, TextEmbedder, Vectors


class BatchingTextEmbedder:
    """A :class:`TextEmbedder` with the same identity as ``inner``; calls of a few texts are coalesced."""

    def __init__(self, inner: TextEmbedder, max_batch: int = 32, small: int = 4, threads: int | None = None) -> None:
        self.inner = inner
        self.threads = threads
        self.identity: EmbedderIdentity = inner.identity
        self.max_tokens: int = inner.max_tokens
        self.max_batch = max_batch
        self.small = small
        self._pending: list[tuple[list[str], Future[Vectors]]] = []
        self._wake = threading.Condition()
        self._worker: threading.Thread | None = None
        self.batches = 0
        """Model calls made for coalesced queries."""
        self.coalesced = 0
        """Calls answered (more calls than batches: queries rode together)."""

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    def __getattr__(self, name: str) -> object:
        # Anything else (a tokenizer, counters) is the wrapped model's: the wrapper stays transparent.
        return getattr(self.inner, name)

    def embed_texts(self, texts: Sequence[str]) -> Vectors:
        items = list(texts)
        if not items or len(items) > self.small:
            return self.inner.embed_texts(items)  # a build's batch: nothing to gain from coalescing
        done: Future[Vectors] = Future()
        with self._wake:
            if self._worker is None:
                self._start_worker()
            self._pending.append((items, done))
            self._wake.notify()
        return done.result()

    def _start_worker(self) -> None:
        started = threading.Event()
        self._worker = threading.Thread(target=self._run, args=(started,), name="kbrelease-query-embedder", daemon=True)
        self._worker.start()
        started.wait()

    @staticmethod
    def _limit_threads(n: int) -> None:
        """Intra-op threads of the model calls made from this worker thread.

        Measured on a busy 2-core machine: a one-query MiniLM forward on 2 OpenMP
        threads took 0.55-0.8 s per batch in this worker, against 35-85 ms on one
        thread (docs/benchmarks.md, section 6). Batching already spreads requests
        over the cores; one small model call need not.
        """
        import sys

        torch = sys.modules.get("torch")
        if torch is None:  # an HTTP or ONNX Runtime embedder: no torch threads to limit (and no torch to import)
            return
        before = torch.get_num_threads()
        torch.set_num_threads(n)  # this thread's OpenMP setting, and torch's default for new threads...
        restore = threading.Thread(target=torch.set_num_threads, args=(before,))
        restore.start()  # ...which a helper thread puts back, so no other thread is affected
        restore.join()

    def _take(self) -> list[tuple[list[str], Future[Vectors]]]:
        with self._wake:
            while not self._pending:
                self._wake.wait()
            batch: list[tuple[list[str], Future[Vectors]]] = []
            size = 0
            while self._pending and (not batch or size + len(self._pending[0][0]) <= self.max_batch):
                job = self._pending.pop(0)
                batch.append(job)
                size += len(job[0])
            return batch

    def _run(self, started: threading.Event) -> None:
        if self.threads:
            self._limit_threads(self.threads)
        started.set()
        while True:
            batch = self._take()
            texts = [t for items, _ in batch for t in items]
            try:
                vectors = self.inner.embed_texts(texts)
            except BaseException as exc:  # noqa: BLE001 - every waiting caller gets the model's own error
                for _, fut in batch:
                    fut.set_exception(exc)
                continue
            self.batches += 1
            self.coalesced += len(batch)
            start = 0
            for items, fut in batch:
                fut.set_result(vectors[start : start + len(items)])
                start += len(items)
