"""One holder of a configuration's embedders, shared by the facade, the builder and the service.

Models are expensive (seconds and hundreds of MB each), so each is created on
first need and then shared: a publish loads MiniLM once for its build and its
verify; the service's searches reuse what a build in the same process loaded.
Queries have their own light embedder (:attr:`Models.query_text`): ONNX Runtime
when it gives the configured model's vectors, so a process that only searches
never imports torch.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable

from kbrelease.config import Config
from kbrelease.embedding.base import EmbedderIdentity, ImageEmbedder, TextEmbedder


class Models:
    """The text, image and query embedders of ``cfg``, each created on first use; ones handed in are used as they are."""

    def __init__(self, cfg: Config, text: TextEmbedder | None = None, image: ImageEmbedder | None = None) -> None:
        self.cfg = cfg
        self._text = text
        self._image = image
        self._query_text: TextEmbedder | None = None
        self._identities: dict[str, EmbedderIdentity] = {}
        self._preloading: threading.Thread | None = None

    def preload(self, kinds: Iterable[str]) -> None:
        """Start loading the build's ``kinds`` ("text", "image") in a background thread, and return at once.

        A publish calls this before it syncs, so that importing torch and reading
        the weights (seconds) overlap the sync, the store's start and the
        build's first file reads. The first use of a model waits for the thread;
        a model that failed to load there is loaded again by that use, which
        then raises the error itself.
        """
        wanted = [k for k in kinds if (k == "text" and self._text is None) or (k == "image" and self._image is None)]
        if not wanted or self._preloading is not None:
            return

        def load() -> None:
            for kind in wanted:
                with contextlib.suppress(Exception):  # the first real use loads it again and raises the error
                    getattr(self, f"_load_{kind}")()

        # Not a daemon: the interpreter waits for it at exit. A process that ends while torch is still loading in a daemon
        # thread aborts in C++ ("terminate called without an active exception", exit 134) instead of exiting with its code.
        self._preloading = threading.Thread(target=load, name="kbrelease-preload", daemon=False)
        self._preloading.start()

    def _wait_for_preload(self) -> None:
        thread = self._preloading
        if thread is not None and thread is not threading.current_thread():
            thread.join()
            self._preloading = None

    def _load_text(self) -> TextEmbedder:
        if self._text is None:
            from kbrelease.embedding.factory import make_text_embedder

            self._text = make_text_embedder(self.cfg)
        return self._text

    def _load_image(self) -> ImageEmbedder:
        if self._image is None:
            from kbrelease.embedding.factory import make_image_embedder

            self._image = make_image_embedder(self.cfg)
        return self._image

    @property
    def text(self) -> TextEmbedder:
        """The build's text embedder (loaded now if it is not yet)."""
        self._wait_for_preload()
        return self._load_text()

    @property
    def image(self) -> ImageEmbedder:
        """The image embedder (loaded now if it is not yet)."""
        self._wait_for_preload()
        return self._load_image()

    @property
    def loaded_text(self) -> TextEmbedder | None:
        """The build's text embedder if it is loaded, else None (loads nothing)."""
        return self._text

    @property
    def loaded_image(self) -> ImageEmbedder | None:
        """The image embedder if it is loaded, else None (loads nothing)."""
        return self._image

    @property
    def query_text(self) -> TextEmbedder:
        """The embedder of text queries: the build's model when it is loaded, else the light runtime."""
        self._wait_for_preload()
        if self._text is not None:
            return self._text
        if self._query_text is None:
            from kbrelease.embedding.factory import make_query_text_embedder

            self._query_text = make_query_text_embedder(self.cfg)
        return self._query_text

    def identity(self, kind: str) -> EmbedderIdentity:
        """The configured ``kind`` ("text"/"image") embedder's identity; loads no model unless one is loaded already."""
        loaded = self._text if kind == "text" else self._image if kind == "image" else None
        if loaded is not None:
            return loaded.identity
        if kind not in self._identities:
            from kbrelease.embedding.identity import configured_identity

            self._identities[kind] = configured_identity(self.cfg, kind)
        return self._identities[kind]

    def coalesce_text_queries(self, threads: int | None = 1) -> None:
        """Let concurrent one-text queries share model calls (services); idempotent, transparent to builds.

        ``threads``: intra-op threads of each coalesced model call (None: the runtime's default).
        """
        from kbrelease.embedding.batching import BatchingTextEmbedder

        self._wait_for_preload()
        if self._text is not None:
            if not isinstance(self._text, BatchingTextEmbedder):
                self._text = BatchingTextEmbedder(self._text, threads=threads)
            return
        if self._query_text is None:
            from kbrelease.embedding.factory import make_query_text_embedder

            self._query_text = make_query_text_embedder(self.cfg, threads)
        if not isinstance(self._query_text, BatchingTextEmbedder):
            self._query_text = BatchingTextEmbedder(self._query_text, threads=threads)
