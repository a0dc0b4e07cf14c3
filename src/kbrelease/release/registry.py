"""The release registry and the live pointer, stored in Milvus itself.

Milvus aliases cannot point across databases, so the pointer lives beside the
releases: a small collection ``releases`` in the registry database, readable by
every process and replica that can reach the Milvus. One row per release and
one pointer row per environment. Switching is ONE upsert of the pointer row,
so a reader sees either the old or the new release, never a mix.

``live`` and ``retired`` are not stored as states: they are derived from the
pointer (live = the pointer's release; retired = went live once, not now), so
there is no second write that could disagree with the pointer.
"""

from __future__ import annotations

import builtins
import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

from kbrelease.config import Modality
from kbrelease.errors import StoreError, UnknownRelease
from kbrelease.release.schema import MANIFEST_SCHEMA_VERSION as MANIFEST_SCHEMA_VERSION
from kbrelease.release.schema import migrate_manifest
from kbrelease.store.milvus import MilvusStore, create_indexed, not_loaded
from kbrelease.trust.filters import eq
from kbrelease.trust.names import check_name

StoredState = Literal["registered", "importing", "building", "built", "verified", "failed", "dropping", "dropped"]
"""``registered → importing → built`` for a release imported from a package, ``building → built`` for one built here.
``dropping`` is written by gc before it drops the database, so a gc killed half-way is finished by the next command."""
State = Literal["registered", "importing", "building", "built", "verified", "live", "retired", "failed", "dropping", "dropped"]
REGISTRY_COLLECTION = "releases"
T = TypeVar("T")


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def check_release_name(name: str) -> str:
    """``name`` if it is a valid release name (:func:`kbrelease.trust.names.check_name`), else InvalidName."""
    return check_name("release", name)


@dataclass
class SourceCounts:
    """Per-source counts of a release."""

    collection: str
    modality: Modality
    files: int = 0
    rows: int = 0
    embedded: int = 0
    """Chunks or images whose vector the model computed in this build."""
    reused: int = 0
    """Chunks or images whose vector came from the embedding cache."""
    removed: int = 0
    """Files the live release had in this source that this release no longer has."""
    skipped: int = 0
    failed: int = 0
    failures: list[dict[str, str]] = field(default_factory=list)
    skips: list[dict[str, str]] = field(default_factory=list)
    sparse: bool = False
    """The collection has the BM25 sparse field (the source was built with ``hybrid: true``); without it (and in every
    release built before hybrid search existed) the source is searched by its vectors only."""


@dataclass
class ReleaseRecord:
    """The release manifest (``RELEASE_INFO``) as kept in the registry."""

    name: str
    environment: str
    database: str
    state: StoredState = "building"
    created_at: str = field(default_factory=now_iso)
    updated_at: str = field(default_factory=now_iso)
    data_index_checksum: str = ""
    sources: dict[str, SourceCounts] = field(default_factory=dict)
    embedders: dict[str, dict[str, Any]] = field(default_factory=dict)
    chunking: dict[str, Any] = field(default_factory=dict)
    tool_version: str = ""
    schema_version: int = MANIFEST_SCHEMA_VERSION
    went_live_at: str | None = None
    error: str | None = None
    verification: dict[str, Any] = field(default_factory=dict)
    build_seconds: float = 0.0
    origin: dict[str, Any] | None = None
    """For an imported release: the package it came from (sha256, source environment and release, when)."""

    def asdict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str | None = None) -> ReleaseRecord:
        """A record from any manifest schema this kbrelease reads (older ones are migrated)."""
        data = migrate_manifest(data, where or f"release {data.get('name')!r}")
        data["sources"] = {k: SourceCounts(**{**v, "sparse": v.get("sparse") is True}) for k, v in (data.get("sources") or {}).items()}
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})

    def display_state(self, pointer: Pointer) -> State:
        if self.state in ("dropped", "dropping"):
            return self.state
        if pointer.live == self.name:
            return "live"
        # The pointer's history is the truth; went_live_at is written after the pointer
        # (a switch killed in between leaves it unset until the next switch repairs it).
        if self.went_live_at or pointer.went_live(self.name):
            return "retired"
        return self.state


@dataclass
class Pointer:
    """The live pointer of one environment."""

    environment: str
    live: str | None = None
    previous: str | None = None
    switched_at: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    """Switches, rollbacks and refused quality gates, oldest first: live/to, from, at, action, by, reason, recall, skip_quality."""

    def went_live(self, name: str) -> bool:
        """Whether ``name`` was live at some point the pointer remembers."""
        return name == self.live or name == self.previous or any(h.get("live") == name for h in self.history)


class Registry:
    """Releases and the live pointer of one environment."""

    def __init__(self, store: MilvusStore, database: str, environment: str) -> None:
        self.store = store
        self.db = database
        self.env = environment
        self._ready = False

    def _client(self) -> Any:
        if not self._ready:
            self._ensure()
        return self.store.client(self.db)

    def _ensure(self) -> None:
        for attempt in range(2):
            self.store.ensure_database(self.db)
            try:
                self._create_collection()
                break
            except Exception as exc:
                # Another process's lock cleanup (drop_if_empty) may drop the database right after our create: once more.
                if attempt == 0 and not self.exists():
                    continue
                if isinstance(exc, StoreError):
                    raise
                raise self.store.translate(exc, "open registry", (self.db,)) from exc
        self._ready = True

    def _create_collection(self) -> None:
        from pymilvus import DataType, MilvusClient

        c = self.store.client(self.db)
        if not c.has_collection(REGISTRY_COLLECTION):
            schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
            schema.add_field("key", DataType.VARCHAR, is_primary=True, max_length=256)
            schema.add_field("env", DataType.VARCHAR, max_length=128)
            schema.add_field("kind", DataType.VARCHAR, max_length=16)
            schema.add_field("body", DataType.JSON)
            schema.add_field("vector", DataType.FLOAT_VECTOR, dim=2)  # Milvus requires one
            index = c.prepare_index_params()
            index.add_index(field_name="vector", metric_type="L2", index_type="AUTOINDEX")
            create_indexed(c, REGISTRY_COLLECTION, schema, index, None if self.store.embedded else self.store.replica_number, self.store.where)
        self.store.load_with_replicas(c, REGISTRY_COLLECTION)

    def _call(self, op: str, fn: Callable[[Any], T]) -> T:
        """``fn(client)``; if the registry database vanished meanwhile (dropped by another process's
        lock cleanup, see :meth:`drop_if_empty`), create it again and retry once; if Milvus restarted and
        has not loaded it yet, load it and retry once."""
        try:
            return fn(self._client())
        except StoreError:
            raise  # translated already (Milvus unreachable)
        except Exception as exc:  # noqa: BLE001 - translated below, after one retry if the database vanished
            first = exc
        if not_loaded(first):
            try:
                c = self._client()
                self.store.load_with_replicas(c, REGISTRY_COLLECTION)
                return fn(c)
            except StoreError:
                raise
            except Exception as exc:
                raise self.store.translate(exc, op, (self.db,)) from exc
        try:
            vanished = self._ready and not self.exists()  # a drop during the create itself is retried by _ensure
        except Exception:  # noqa: BLE001 - report the first error
            vanished = False
        if not vanished:
            raise self.store.translate(first, op, (self.db,)) from first
        self._ready = False
        try:
            return fn(self._client())
        except Exception as exc:
            raise self.store.translate(exc, op, (self.db,)) from exc

    def _upsert(self, key: str, kind: str, body: dict[str, Any]) -> None:
        row = {"key": key, "env": self.env, "kind": kind, "body": json.loads(json.dumps(body)), "vector": [1.0, 0.0]}
        self._call("write registry", lambda c: c.upsert(REGISTRY_COLLECTION, [row]))

    def _query(self, expr: str) -> list[dict[str, Any]]:
        rows = self._call("read registry", lambda c: c.query(REGISTRY_COLLECTION, filter=expr, output_fields=["key", "kind", "body"], limit=16384))
        return [dict(r) for r in rows]

    # --- releases --------------------------------------------------------
    def put(self, record: ReleaseRecord) -> None:
        record.updated_at = now_iso()
        self._upsert(self._key("release", check_name("release", record.name)), "release", record.asdict())

    def _key(self, *parts: str) -> str:
        return "/".join((self.env, *parts))

    def _env_kind(self, kind: str) -> str:
        return f"{eq('env', self.env)} and {eq('kind', kind)}"

    def get(self, name: str) -> ReleaseRecord | None:
        check_name("release", name)
        rows = self._query(eq("key", self._key("release", name)))
        return ReleaseRecord.from_dict(rows[0]["body"]) if rows else None

    def require(self, name: str) -> ReleaseRecord:
        found = self.get(name)
        if found is None:
            known = ", ".join(r.name for r in self.list()) or "none"
            raise UnknownRelease(f"no release {name!r} in environment {self.env!r} (known: {known}); see `kbrelease list`")
        return found

    def list(self) -> list[ReleaseRecord]:
        rows = self._query(self._env_kind("release"))
        records = [ReleaseRecord.from_dict(r["body"]) for r in rows]
        return sorted(records, key=lambda r: (r.created_at, r.name))

    def list_raw(self) -> builtins.list[dict[str, Any]]:
        """The stored release manifests as written, unmigrated (``kbrelease check`` reads their versions)."""
        return [r["body"] for r in self._query(self._env_kind("release"))]

    def known_databases(self) -> set[str]:
        """The databases named by any release record of ANY environment in this registry (gc never reaps those)."""
        return {str(r["body"].get("database")) for r in self._query(eq("kind", "release")) if isinstance(r.get("body"), dict)}

    def exists(self) -> bool:
        """Whether the registry database exists (asking creates nothing)."""
        return self.db in self.store.databases()

    def next_name(self) -> str:
        numbers = [int(r.name[1:]) for r in self.list() if re.fullmatch(r"v\d+", r.name)]
        return f"v{max(numbers, default=0) + 1}"

    # --- pointer ---------------------------------------------------------
    def pointer(self) -> Pointer:
        rows = self._query(eq("key", self._key("pointer")))
        if not rows:
            return Pointer(environment=self.env)
        body = rows[0]["body"]
        return Pointer(**{k: v for k, v in body.items() if k in Pointer.__dataclass_fields__})

    def set_pointer(self, pointer: Pointer) -> None:
        """The atomic switch: one upsert of one row."""
        self._upsert(self._key("pointer"), "pointer", asdict(pointer))

    # --- registered files (kbrelease.release.registrations) --------------
    def put_file(self, file_id: str, body: dict[str, Any]) -> None:
        self._upsert(self._key("file", file_id), "file", body)

    def get_file(self, file_id: str) -> dict[str, Any] | None:
        rows = self._query(eq("key", self._key("file", file_id)))
        return dict(rows[0]["body"]) if rows else None

    def list_files(self) -> builtins.list[dict[str, Any]]:
        """Every registered file of the environment (at most 16,384 per query page)."""
        return [dict(r["body"]) for r in self._query(self._env_kind("file"))]

    # --- lease locks (kbrelease.trust.lock) ------------------------------
    def lock_claims(self) -> builtins.list[dict[str, Any]]:
        """Every lock claim row of this environment (live or expired)."""
        return [r["body"] for r in self._query(self._env_kind("lock"))]

    def put_lock_claim(self, holder: str, body: dict[str, Any]) -> None:
        self._upsert(self._key("lock", holder), "lock", body)

    def drop_if_empty(self) -> bool:
        """Drop the registry database if it holds no row of any environment (a lock taken by a command that then
        wrote nothing, e.g. a refused package import, leaves no trace). True if dropped."""
        if not self.exists():
            return False
        if self._query('key != ""'):
            return False
        self.store.drop_database(self.db)
        self._ready = False
        return True

    def delete_lock_claim(self, holder: str) -> None:
        self._call("write registry", lambda c: c.delete(REGISTRY_COLLECTION, filter=eq("key", self._key("lock", holder))))
