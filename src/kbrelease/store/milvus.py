"""The vector store adapter: every pymilvus call of kbrelease goes through here.

One ``MilvusClient`` per database (``use_database`` would change a shared
client's state under another thread's feet). pymilvus errors are translated
once, here, into :class:`StoreError` / :class:`StoreUnreachable`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar, cast

from kbrelease.config import Config, names_server
from kbrelease.errors import CompatibilityError, StoreError, StoreUnreachable
from kbrelease.retry import backoff
from kbrelease.store.engines import IndexChoice, connect_uri, index_for, large_index_for
from kbrelease.store.schema import SPARSE_FIELD, SPARSE_MIN_VERSION, milvus_schema
from kbrelease.trust.filters import str_literal
from kbrelease.trust.redact import redact_url

T = TypeVar("T")


class _DropMvccNoise(logging.Filter):
    # pymilvus warns on every query_iterator against Milvus Lite that it "failed to
    # get mvccTs"; it then uses a client timestamp, which is what we want.
    def filter(self, record: logging.LogRecord) -> bool:
        return "mvccTs" not in record.getMessage()


logging.getLogger("pymilvus.client.iterator.query_iterator").addFilter(_DropMvccNoise())


def clip_utf8(text: str, max_bytes: int) -> str:
    """Cut ``text`` to at most ``max_bytes`` UTF-8 bytes (Milvus servers count VARCHAR length in bytes)."""
    raw = text.encode("utf-8")
    return text if len(raw) <= max_bytes else raw[:max_bytes].decode("utf-8", errors="ignore")


def redact_uri(uri: str) -> str:
    """``http://user:secret@host`` → ``http://***@host`` (and no ``?token=``): URIs appear in error messages."""
    return redact_url(uri)


# pymilvus pings every 10 s, even on an idle channel. A gRPC server with the
# library's default policy (Milvus Lite's server) allows one ping per 5 min,
# answers the third early ping with GOAWAY "too_many_pings", and the client's
# reconnect then fails: seen as "cannot reach Milvus" in a long test run. On
# loopback nothing can silently drop a connection, so ping rarely and only
# during calls; remote servers keep pymilvus's defaults.
LOOPBACK_GRPC_OPTIONS: dict[str, Any] = {
    "grpc.keepalive_time_ms": 600_000,
    "grpc.keepalive_permit_without_calls": 0,
}


def _is_loopback(uri: str) -> bool:
    host = uri.split("://", 1)[-1].split("/", 1)[0].rsplit("@", 1)[-1].rsplit(":", 1)[0].strip("[]")
    return host in {"127.0.0.1", "localhost", "::1"} or host.startswith("127.")


def create_indexed(client: Any, name: str, schema: Any, index: Any, replica_number: int | None = None, where: str = "Milvus") -> None:
    """Create a collection with its index and load it (with ``replica_number`` in-memory replicas on a server).

    ``create_collection(index_params=...)`` costs a fixed 0.5 s: pymilvus sleeps
    before its first poll of the index, even on an empty collection (measured
    0.52 s against 0.009 s for this, same index and results). That is paid per
    source per release, so it matters for small incremental releases.
    """
    client.create_collection(name, schema=schema, consistency_level="Strong")
    client.create_index(name, index, sync=False)
    load_collection(client, name, replica_number, where)


def load_collection(client: Any, name: str, replica_number: int | None = None, where: str = "Milvus") -> None:
    """``load_collection``, with ``replica_number`` only when one is asked for (the embedded store takes none).

    A server that cannot place that many replicas (Milvus 2.3.5 standalone answers
    "nodes not enough") gets an error naming the setting and the fix.
    """
    if replica_number is None:
        client.load_collection(name)
        return
    try:
        client.load_collection(name, replica_number=replica_number)
    except Exception as exc:
        if replica_number == 1 or classify(exc) != "other":
            raise
        raise StoreError(
            f"{where} cannot load collection {name} with {replica_number} in-memory replicas "
            f"(milvus.replica_number, env MILVUS_REPLICA_NUMBER): the server said {str(exc)!r}. Each replica needs its own "
            f"query node: run a Milvus cluster with at least {replica_number} query nodes, or set MILVUS_REPLICA_NUMBER=1"
        ) from exc


COLLECTION_NOT_LOADED = 101
"""Milvus's error code (merr ``ErrCollectionNotLoaded``) for a read of a released collection; Milvus Lite uses it too
("Collection 'c' is in state 'released'; call load() ...", e.g. after the embedded server restarted)."""


def _chain(exc: BaseException, depth: int = 4) -> Iterator[BaseException]:
    seen: BaseException | None = exc
    for _ in range(depth):
        if seen is None:
            return
        yield seen
        seen = seen.__cause__ or seen.__context__


def not_loaded(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it was raised from) is Milvus's "collection not loaded", by its error code."""
    return any(COLLECTION_NOT_LOADED in (getattr(seen, "code", None), getattr(seen, "compatible_code", None)) for seen in _chain(exc))


def classify(exc: BaseException) -> str:
    """``unreachable``, ``auth`` or ``other``: by exception type and error code first (pymilvus, gRPC), by the
    message only for servers that send no code (Milvus Lite's plain errors)."""
    try:
        import grpc
        from pymilvus.exceptions import ConnectError, ConnectionNotExistException, MilvusException, MilvusUnavailableException
        from pymilvus.grpc_gen import common_pb2
    except ImportError:  # pragma: no cover - pymilvus brings both
        return "other"
    unreachable_codes = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
    auth_codes = {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED}
    for seen in _chain(exc):
        if isinstance(seen, ConnectError | MilvusUnavailableException | ConnectionNotExistException | ConnectionError | TimeoutError):
            return "unreachable"
        if isinstance(seen, grpc.RpcError) and callable(getattr(seen, "code", None)):
            code = seen.code()
            if code in unreachable_codes:
                return "unreachable"
            if code in auth_codes:
                return "auth"
        if isinstance(seen, MilvusException):
            compatible = getattr(seen, "compatible_code", None)
            if compatible in (common_pb2.ConnectFailed, common_pb2.NotReadyServe):
                return "unreachable"
            if compatible == common_pb2.PermissionDenied:
                return "auth"
    lowered = str(exc).lower()
    if any(s in lowered for s in ("unavailable", "connect", "timeout", "deadline", "fail connecting")):
        return "unreachable"
    if any(s in lowered for s in ("auth", "permission", "unauthenticated", "denied")):
        return "auth"
    return "other"


def is_embedded(uri: str) -> bool:
    """Whether ``uri`` is an embedded Milvus Lite folder (started by kbrelease) rather than a server."""
    return not names_server(uri)


def version_tuple(version: str) -> tuple[int, int] | None:
    """``(major, minor)`` of a Milvus version string (``v2.3.5-lite``, ``v2.5.4``, ``milvus_lite-3.2.2``), or None."""
    import re

    found = re.search(r"(\d+)\.(\d+)", version)
    return (int(found.group(1)), int(found.group(2))) if found else None


def _in_list(field: str, values: Sequence[str]) -> str:
    """``field in ["a", "b"]`` with every value an escaped literal (file ids come from data indexes and packages)."""
    return f"{field} in [" + ", ".join(str_literal(v) for v in values) + "]"


def _translated(op: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Translate foreign errors once; a call that failed on a connection the store then reset is tried once more."""

    def wrap(fn: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(fn)
        def inner(self: MilvusStore, *args: Any, **kwargs: Any) -> T:
            for attempt in range(2):
                try:
                    return fn(self, *args, **kwargs)
                except StoreUnreachable as exc:
                    if attempt or not exc.reconnected:
                        raise
                except (StoreError, CompatibilityError):
                    raise
                except Exception as exc:
                    translated = self.translate(exc, op, args)
                    if attempt or not isinstance(translated, StoreUnreachable) or not translated.reconnected:
                        raise translated from exc
                time.sleep(backoff(0, base=0.25))
            raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

        return inner

    return wrap


log = logging.getLogger(__name__)
_pymilvus_warm = threading.Lock()


def warm_pymilvus() -> None:
    """Run pymilvus's one-time scipy.sparse probe now, in one thread.

    pymilvus (``client.utils.SciPyHelper``) executes scipy.sparse by hand on its first search or insert, outside
    Python's import lock: two threads doing their first search at once (the service's request threads and its
    background pointer refresh) met a half-initialized scipy.sparse ("partially initialized module
    'scipy.sparse._bsr'", seen in CI) and the search failed with a 500.
    """
    with _pymilvus_warm:
        try:
            from pymilvus.client.utils import SciPyHelper

            SciPyHelper._init()
        except (ImportError, AttributeError):  # another pymilvus: nothing to warm
            pass


class MilvusStore:
    """Databases and collections of one Milvus (server, or the embedded Lite server).

    ``replica_number``: in-memory replicas of every collection this store loads, on a
    Milvus cluster (one query node per replica; the embedded store ignores it).

    Connections heal: an error that says Milvus cannot be reached closes this store's
    clients (and, for the embedded store, finds or restarts its Lite server), so the
    next call connects afresh instead of waiting out gRPC's reconnect backoff on a
    channel to a server that restarted.
    """

    def __init__(
        self,
        uri: str,
        token: str | None = None,
        timeout: float = 10.0,
        replica_number: int = 1,
        start_lite: Callable[[], str] | None = None,
        index: IndexChoice | None = None,
    ) -> None:
        """``start_lite``: for the embedded store, finds (or starts) its Lite server and returns the URI.
        ``index``: the vector index of the engine (kbrelease.store.engines.index_for; default: the server's)."""
        warm_pymilvus()
        self.uri = uri
        self.index = index or index_for("server")
        """The vector index new collections get, and how searches use it (per engine: kbrelease.store.engines)."""
        self.large_index: tuple[int, IndexChoice] | None = None
        """``(rows, index)``: a collection sealed with more rows gets this index instead (milvus-local: HNSW past 150,000)."""
        self._token = token
        self._timeout = timeout
        self.replica_number = replica_number
        self._start_lite = start_lite
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._version: str | None = None
        self._generation = 0
        self._used = threading.local()

    @classmethod
    def from_config(cls, cfg: Config) -> MilvusStore:
        token = cfg.milvus.token.get_secret_value() if cfg.milvus.token else None
        engine = cfg.store_engine
        index = index_for(engine)
        replicas = cfg.milvus.replica_number
        if engine == "server":
            return cls(connect_uri(cfg), token, replica_number=replicas, index=index)
        if replicas > 1:
            log.debug("milvus.replica_number=%d ignored: the %s store has one node", replicas, engine)
        if engine == "lite":
            start_lite = functools.partial(connect_uri, cfg)  # finds or restarts the Lite server with the same settings
            return cls(start_lite(), token, start_lite=start_lite, index=index)
        store = cls(connect_uri(cfg), token, index=index)  # milvus-local: a standalone server, one query node
        store.large_index = large_index_for(engine)
        return store

    @property
    def where(self) -> str:
        """``Milvus at <uri without credentials>``, for messages."""
        return f"Milvus at {redact_uri(self.uri)}"

    @property
    def embedded(self) -> bool:
        """Whether this is the embedded Lite server kbrelease started for a workspace folder."""
        return self._start_lite is not None

    def translate(self, exc: Exception, op: str, args: Sequence[Any] = ()) -> StoreError:
        text = str(exc)
        where = f"Milvus at {redact_uri(self.uri)}"
        target = "/".join(str(a) for a in args[:2] if isinstance(a, str))
        kind = classify(exc)
        if kind == "unreachable":
            err = StoreUnreachable(f"cannot reach {where} ({op} {target}); check MILVUS_URI and that the server is running")
            err.reconnected = self.reconnect()
            return err
        if kind == "auth":
            return StoreError(f"{where} refused {op} {target}: authentication failed; check MILVUS_TOKEN")
        return StoreError(f"{where}: {op} {target} failed: {text}")

    def reconnect(self) -> bool:
        """Drop the clients the failed call used, once per failure wave; True if this call did it.

        Other threads that failed on the same (old) clients find them replaced already and
        leave the new ones alone. The embedded store also finds its Lite server again,
        starting it if it died (it may come back on another port).
        """
        generation = getattr(self._used, "generation", None)
        with self._lock:
            if generation is not None and generation != self._generation:
                return False  # another thread reconnected since this one took its client
            old = list(self._clients.values())
            self._clients.clear()
            self._generation += 1
        for c in old:
            with contextlib.suppress(Exception):  # closing is best effort
                c.close()
        if self._start_lite is not None:
            try:
                self.uri = self._start_lite()
            except StoreError as exc:
                log.warning("the embedded Milvus Lite server could not be restarted: %s", exc)
                return False
        log.info("reconnecting to Milvus at %s", redact_uri(self.uri))
        return True

    def client(self, db: str = "default") -> Any:
        with self._lock:
            self._used.generation = self._generation
            found = self._clients.get(db)
            if found is not None:
                return found
            from pymilvus import MilvusClient

            try:
                # dedicated: pymilvus otherwise shares one channel per address|token
                # across every MilvusClient of the process, created with the options
                # of whichever client came first (see LOOPBACK_GRPC_OPTIONS).
                kwargs: dict[str, Any] = {"uri": self.uri, "db_name": db, "timeout": self._timeout, "dedicated": True}
                if _is_loopback(self.uri):
                    kwargs["grpc_options"] = LOOPBACK_GRPC_OPTIONS
                if self._token:
                    kwargs["token"] = self._token
                made = MilvusClient(**kwargs)
            except Exception as exc:  # noqa: BLE001 - translated below, outside the lock (a reconnect takes it)
                made = None
                failure = exc
            if made is not None:
                self._clients[db] = made
                return made
        err = self.translate(failure, "connect", (db,))
        if isinstance(err, StoreUnreachable) and not self.embedded:
            err.reconnected = False  # no connection to retry: a server that refuses a new one now refuses it again at once
        raise err from failure

    def close(self) -> None:
        with self._lock:
            for c in self._clients.values():
                with contextlib.suppress(Exception):  # closing is best effort
                    c.close()
            self._clients.clear()

    @_translated("ping")
    def ping(self, timeout: float = 2.0) -> None:
        """One cheap round trip (list the databases) within ``timeout`` seconds; raises StoreUnreachable if Milvus does not answer."""
        self.client().list_databases(timeout=timeout)

    def load_with_replicas(self, c: Any, name: str) -> None:
        """Load a collection, with ``replica_number`` replicas on a server; a refused replica count is explained."""
        load_collection(c, name, None if self.embedded else self.replica_number, self.where)

    def _reloading(self, db: str, name: str, read: Callable[[], T]) -> T:
        """``read()``; if Milvus says the collection is not loaded (a store restart, an operator freeing
        memory, the service's idle unload), load it and try once more instead of failing every read from now on."""
        try:
            return read()
        except Exception as exc:
            if not not_loaded(exc):
                raise
        self.load_with_replicas(self.client(db), name)
        return read()

    # --- databases -------------------------------------------------------
    @_translated("list databases")
    def databases(self) -> list[str]:
        return list(self.client().list_databases())

    @_translated("create database")
    def ensure_database(self, db: str) -> None:
        if db not in self.databases():
            self.client().create_database(db)

    @_translated("drop database")
    def drop_database(self, db: str) -> None:
        if db not in self.databases():
            return
        c = self.client(db)
        for coll in c.list_collections():
            c.drop_collection(coll)
        with self._lock:
            self._clients.pop(db, None)
        with contextlib.suppress(Exception):  # closing is best effort
            c.close()
        self.client().drop_database(db)

    # --- collections -----------------------------------------------------
    @_translated("list collections")
    def collections(self, db: str) -> list[str]:
        return list(self.client(db).list_collections())

    @_translated("server version")
    def server_version(self) -> str:
        """The Milvus version the store reports (``v2.3.5-lite``, ``milvus_lite-3.2.2``); asked once per store."""
        if self._version is None:
            self._version = str(self.client().get_server_version())
        return self._version

    def check_sparse(self, what: str, fix: str = "use Milvus 2.5 or later, or the embedded store") -> None:
        """Refuse ``what`` (a hybrid source, a package with a sparse field) on a Milvus without BM25 functions.

        Checked before anything is created: Milvus 2.3.5 accepts a schema with a BM25 function and silently drops the
        function, which would leave an empty sparse field.
        """
        version = self.server_version()
        found = version_tuple(version)
        if found is not None and found < SPARSE_MIN_VERSION:
            raise CompatibilityError(
                f"{what} needs sparse (BM25) search, but Milvus at {redact_uri(self.uri)} is version {version}, which has no BM25 function "
                f"(Milvus {'.'.join(map(str, SPARSE_MIN_VERSION))} or later, or the embedded store, has one); {fix}"
            )

    @_translated("create collection")
    def ensure_collection(self, db: str, name: str, dim: int, description: str = "", sparse: bool = False) -> None:
        """Create collection ``name`` unless it exists; with ``sparse``, with a BM25 field for hybrid search (see :meth:`check_sparse`)."""
        c = self.client(db)
        if c.has_collection(name):
            return
        if sparse:
            self.check_sparse(f"collection {db}/{name}")
        schema = milvus_schema(dim, description, sparse=sparse)
        index = c.prepare_index_params()
        index.add_index(field_name="vector", metric_type="COSINE", index_type=self.index.index_type, params=dict(self.index.build))
        if sparse:
            index.add_index(field_name=SPARSE_FIELD, metric_type="BM25", index_type="SPARSE_INVERTED_INDEX")
        create_indexed(c, name, schema, index, None if self.embedded else self.replica_number, self.where)

    @_translated("describe collection")
    def has_sparse(self, db: str, name: str) -> bool:
        """Whether collection ``name`` has the BM25 sparse field filled by a BM25 function (what hybrid search reads)."""
        info = self.client(db).describe_collection(name)
        fields = {f.get("name") for f in info.get("fields", [])}
        outputs = {out for fn in info.get("functions", []) for out in fn.get("output_field_names", [])}
        return SPARSE_FIELD in fields and SPARSE_FIELD in outputs

    @_translated("load")
    def ensure_loaded(self, db: str, name: str) -> None:
        """Load a collection for search unless it is loaded already (after a server restart it is not)."""
        c = self.client(db)
        state = str(c.get_load_state(name).get("state", ""))
        if state.endswith("NotExist"):
            raise StoreError(f"collection {db}/{name} does not exist in Milvus at {redact_uri(self.uri)}; the release is incomplete or was dropped")
        if not state.endswith("Loaded"):
            self.load_with_replicas(c, name)

    @_translated("release")
    def release(self, db: str, name: str) -> None:
        """Free a collection's memory in Milvus (it stays on disk; a read loads it again)."""
        self.client(db).release_collection(name)

    @_translated("load state")
    def load_state(self, db: str, name: str) -> str:
        """``Loaded``, ``Loading``, ``NotLoad`` or ``NotExist``."""
        state = str(self.client(db).get_load_state(name).get("state", ""))
        return state.rsplit(".", 1)[-1].removeprefix("LoadState").strip(": <>") or "unknown"

    @_translated("upsert")
    def upsert(self, db: str, name: str, rows: list[dict[str, Any]]) -> None:
        if rows:
            self.client(db).upsert(name, rows)

    @_translated("seal")
    def seal(self, db: str, name: str, attempts: int = 5) -> None:
        """Flush, then release and load, so every row is in an indexed segment.

        Milvus Lite searches unflushed rows with a Python loop (~1 s at 100k
        rows) and indexes sealed segments only when a collection is loaded, so
        a release is sealed once after its last insert. Lite writes index files
        in the background; a load that meets a half-written one is retried.
        """
        c = self.client(db)
        c.flush(name)
        c.release_collection(name)
        self._index_for_size(c, name)
        for attempt in range(attempts):
            try:
                self.load_with_replicas(c, name)
                return
            except StoreError:
                raise  # refused for a reason a retry does not change (replicas)
            except Exception:
                if attempt == attempts - 1:
                    raise
                time.sleep(backoff(attempt, base=1.0, cap=5.0, jitter=False))

    def _index_for_size(self, c: Any, name: str) -> None:
        """Past ``large_index``'s row count, replace the collection's vector index with the large one (the collection is released)."""
        if self.large_index is None:
            return
        rows, large = self.large_index
        if int(c.get_collection_stats(name).get("row_count", 0)) <= rows:
            return
        names = list(c.list_indexes(name, field_name="vector"))
        if any(c.describe_index(name, index).get("index_type") == large.index_type for index in names):
            return
        log.info("collection %s has more than %d rows: indexing it with %s %s", name, rows, large.index_type, large.build)
        for index in names:
            c.drop_index(name, index)
        spec = c.prepare_index_params()
        spec.add_index(field_name="vector", metric_type="COSINE", index_type=large.index_type, params=dict(large.build))
        c.create_index(name, spec)

    @_translated("count")
    def count(self, db: str, name: str) -> int:
        res = self._reloading(db, name, lambda: self.client(db).query(name, filter="", output_fields=["count(*)"]))
        return int(res[0]["count(*)"])

    @_translated("scan")
    def file_rows(self, db: str, name: str, file_ids: Sequence[str] | None = None) -> dict[str, tuple[int, int]]:
        """``file_id -> (rows present, n_chunks expected)`` over the whole collection, or only ``file_ids``.

        A shard of a parallel build asks for its own files only, so its cost
        does not grow with the size of the whole collection.
        """
        return self._reloading(db, name, lambda: self._file_rows(db, name, file_ids))

    def _file_rows(self, db: str, name: str, file_ids: Sequence[str] | None) -> dict[str, tuple[int, int]]:
        c = self.client(db)
        out: dict[str, tuple[int, int]] = {}
        if file_ids is None:
            filters = [""]
        else:
            ids = sorted(set(file_ids))
            filters = [_in_list("file_id", ids[i : i + 1000]) for i in range(0, len(ids), 1000)]
        for expr in filters:
            it = c.query_iterator(name, batch_size=4096, filter=expr, output_fields=["file_id", "n_chunks"])
            try:
                while True:
                    batch = it.next()
                    if not batch:
                        break
                    for row in batch:
                        have, _ = out.get(row["file_id"], (0, 0))
                        out[row["file_id"]] = (have + 1, int(row["n_chunks"]))
            finally:
                it.close()
        return out

    def iter_rows(
        self, db: str, name: str, fields: Sequence[str], batch_size: int = 2048, file_ids: Sequence[str] | None = None
    ) -> Iterator[list[dict[str, Any]]]:
        """Every row of a collection (or of ``file_ids`` only) in batches, with a server-side cursor (memory stays flat)."""
        expr = "" if file_ids is None else _in_list("file_id", sorted(set(file_ids)))

        def first() -> tuple[Any, list[Any]]:
            it = self.client(db).query_iterator(name, batch_size=batch_size, filter=expr, output_fields=list(fields))
            try:
                return it, it.next()
            except BaseException:
                with contextlib.suppress(Exception):
                    it.close()
                raise

        try:
            # Only the first batch is retried after a reload: a later failure cannot restart without repeating rows.
            it, batch = self._reloading(db, name, first)
        except Exception as exc:
            raise self.translate(exc, "scan", (db, name)) from exc
        try:
            while True:
                if not batch:
                    return
                yield [dict(r) for r in batch]
                try:
                    batch = it.next()
                except Exception as exc:
                    raise self.translate(exc, "scan", (db, name)) from exc
        finally:
            with contextlib.suppress(Exception):  # closing is best effort
                it.close()

    @_translated("describe collection")
    def vector_dim(self, db: str, name: str) -> int:
        """Dimension of the ``vector`` field of a collection."""
        info = self.client(db).describe_collection(name)
        for f in info.get("fields", []):
            if f.get("name") == "vector":
                return int(f.get("params", {}).get("dim", 0))
        raise StoreError(f"collection {db}/{name} has no vector field; it was not created by kbrelease")

    @_translated("delete")
    def delete_files(self, db: str, name: str, file_ids: Sequence[str]) -> None:
        if not file_ids:
            return
        self.client(db).delete(name, filter=_in_list("file_id", file_ids))

    @_translated("query")
    def sample(self, db: str, name: str, limit: int = 1) -> list[dict[str, Any]]:
        rows = self._reloading(db, name, lambda: self.client(db).query(name, filter="", output_fields=["id", "vector"], limit=limit))
        return cast(list[dict[str, Any]], list(rows))

    @_translated("search")
    def search(
        self,
        db: str,
        name: str,
        vectors: Sequence[Sequence[float]],
        k: int,
        output_fields: Sequence[str] = ("file", "file_id", "chunk_index", "heading", "text", "start", "metadata"),
        expr: str = "",
    ) -> list[list[dict[str, Any]]]:
        c = self.client(db)
        kwargs: dict[str, Any] = {
            "data": [list(map(float, v)) for v in vectors],
            "anns_field": "vector",  # a hybrid source's collection has a second (sparse) vector field
            "limit": k,
            "filter": expr,
            "output_fields": list(output_fields),
            "search_params": self.index.search_params(k),
            # A release is searched once sealed (flushed and loaded): Strong would wait for the next time tick
            # (~200-400 ms a search on Milvus 2.3, measured by bench/engine_bench.py) for rows that cannot change.
            "consistency_level": "Bounded",
        }
        res = self._reloading(db, name, lambda: c.search(name, **kwargs))
        return [[dict(hit) for hit in hits] for hits in res]

    @_translated("sparse search")
    def search_text(
        self,
        db: str,
        name: str,
        query: str,
        k: int,
        output_fields: Sequence[str] = ("file", "file_id", "chunk_index", "heading", "text", "start", "metadata"),
        expr: str = "",
    ) -> list[dict[str, Any]]:
        """BM25 search of the sparse field with a text query (Milvus analyzes it as it analyzed the rows' text), best first."""
        c = self.client(db)
        kwargs: dict[str, Any] = {
            "data": [query],
            "anns_field": SPARSE_FIELD,
            "limit": k,
            "filter": expr,
            "output_fields": list(output_fields),
            "search_params": {"metric_type": "BM25"},
        }
        res = self._reloading(db, name, lambda: c.search(name, **kwargs))
        return [dict(hit) for hit in res[0]]
