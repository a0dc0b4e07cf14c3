"""Bundle specs: a named, versioned selection of sources and time ranges.

A spec (``bundles/<name>.yaml``, usually kept in git)::

    name: weekly_docs              # default: the file name without .yaml
    version: v1.0.0-2025.25
    type: weekly                   # free label (the seed's bundle_type)
    sources:                       # 'channels' is accepted too
      - source: docs               # 'channel' is accepted too
        version: "1.2.0"           # must match the source's configured version, if it has one
        start_time: 2025-06-01T00:00:00Z   # optional, inclusive, on file timestamps
        end_time: 2025-06-15T23:59:59Z     # optional, inclusive
      - source: pictures

is resolved against the current data index (the last sync) into a data index
of its own, ``<workspace>/bundles/<name>/<version>/`` (``bundle.yaml`` with the
seed's ``meta`` and ``data_manifest`` + one Parquet file per source). Releases
can be built from it, and the data-index API serves it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from kbrelease.atomic import atomic_write
from kbrelease.config import Config
from kbrelease.errors import DataIndexError, NotInIndex
from kbrelease.index.data_index import ROW_GROUP_ROWS, Bundle, SourceIndex, access_config, read_bundle, table_checksum, write_bundle
from kbrelease.workspace import Workspace

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
LATEST = "LATEST"
CURRENT = "current"
"""Name under which the API serves the current data index (the last sync)."""
LIVE = "live"
"""Name under which the API serves the live release's frozen data index."""


def _as_label(value: Any) -> Any:
    # YAML reads `version: 1.2` as a float; a version label is text.
    return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class BundleSource(BaseModel):
    """One source (the seed's channel) of a bundle."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    source: str = Field(validation_alias=AliasChoices("source", "channel"), description="A source configured in kbrelease.yaml.")
    version: str = Field(default="", description="Version label; must equal the source's configured version when that is set.")
    start_time: datetime | None = Field(default=None, description="Keep files whose timestamp is at or after this (naive times are UTC).")
    end_time: datetime | None = Field(default=None, description="Keep files whose timestamp is at or before this (naive times are UTC).")

    _label = field_validator("version", mode="before")(_as_label)

    @field_validator("start_time", "end_time")
    @classmethod
    def _to_utc(cls, value: datetime | None) -> datetime | None:
        return _utc(value)

    @model_validator(mode="after")
    def _ordered(self) -> BundleSource:
        if self.start_time and self.end_time and self.start_time > self.end_time:
            raise ValueError(f"start_time {self.start_time.isoformat()} is after end_time {self.end_time.isoformat()} for source {self.source!r}; swap them")
        return self


class BundleSpec(BaseModel):
    """A bundle spec file."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(pattern=NAME_PATTERN, description="Bundle name (letters, digits, '_', '.', '-').")
    version: str = Field(pattern=NAME_PATTERN, description="Bundle version, e.g. v1.0.0-2025.25.")
    type: str = Field(default="", description="Free label, e.g. weekly.")
    description: str = Field(default="", description="Free text.")
    sources: list[BundleSource] = Field(validation_alias=AliasChoices("sources", "channels"), min_length=1)

    _label = field_validator("version", mode="before")(_as_label)

    @field_validator("sources")
    @classmethod
    def _unique(cls, sources: list[BundleSource]) -> list[BundleSource]:
        seen: set[str] = set()
        for src in sources:
            if src.source in seen:
                raise ValueError(f"source {src.source!r} is listed twice; list each source once")
            seen.add(src.source)
        return sources


def _describe(err: ValidationError) -> str:
    lines = []
    for item in err.errors():
        loc = ".".join(str(p) for p in item["loc"]) or "(top level)"
        msg = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            msg = "unknown key; remove it or check its spelling (keys: name, version, type, description, sources: source, version, start_time, end_time)"
        lines.append(f"  {loc}: {msg}")
    return "\n".join(lines)


def load_spec(path: Path) -> BundleSpec:
    """Read and validate a bundle spec; every problem is a :class:`DataIndexError` naming the file and field."""
    if not path.is_file():
        raise DataIndexError(f"bundle spec {path} not found; give the path of a bundles/<name>.yaml file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "syntax error"
        raise DataIndexError(f"bundle spec {path} is not valid YAML{where}: {problem}; fix the syntax there") from None
    except UnicodeDecodeError:
        raise DataIndexError(f"bundle spec {path} is not UTF-8 text; save it as UTF-8") from None
    if not isinstance(data, dict):
        raise DataIndexError(f"bundle spec {path} must be a mapping with name, version and sources (see docs/usage.md)")
    data.setdefault("name", path.stem)
    try:
        return BundleSpec.model_validate(data)
    except ValidationError as exc:
        raise DataIndexError(f"invalid bundle spec {path}:\n{_describe(exc)}") from None


def spec_source(path: Path) -> dict[str, Any]:
    """Where the spec came from: its file, and its git repository and commit when it is tracked in git."""
    out: dict[str, Any] = {"file": str(path), "repo": None, "commit": None, "dirty": None, "sha256": spec_sha256(path) if path.is_file() else None}
    folder = path.resolve().parent

    def git(*args: str, where: Path = folder) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(where), *args], capture_output=True, text=True, timeout=10, check=False)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    top = git("rev-parse", "--show-toplevel")
    if not top:
        return out
    root = Path(top).resolve()
    rel = path.resolve().relative_to(root).as_posix()
    commit = git("log", "-n", "1", "--format=%H", "--", rel, where=root)
    if not commit:  # not committed yet: the spec has no commit to name
        return out | {"file": rel, "repo": Path(top).name}
    status = git("status", "--porcelain", "--", rel, where=root)
    remote = git("config", "--get", "remote.origin.url", where=root)
    repo = remote.rstrip("/").removesuffix(".git").rsplit("/", 1)[-1].rsplit(":", 1)[-1] if remote else Path(top).name
    return out | {"file": rel, "repo": repo, "commit": commit, "dirty": bool(status)}


@dataclass(frozen=True)
class ResolvedBundle:
    """A bundle spec resolved into a data index folder."""

    bundle: Bundle
    folder: Path

    def asdict(self) -> dict[str, Any]:
        return {"folder": str(self.folder), **self.bundle.to_dict()}

    def __str__(self) -> str:
        meta = self.bundle.meta
        lines = [f"bundle {meta['bundle_name']} {meta.get('bundle_version', '')}: {meta['total_files']} files, {meta['data_volume']} → {self.folder}"]
        for s in self.bundle.data_manifest:
            rng = s.data_range
            lines.append(f"  {s.channel} {s.version or '-'}: {s.file_count} files, {rng.get('start_time') or '…'} → {rng.get('end_time') or '…'}")
        return "\n".join(lines)


def _filtered_table(parquet: Path, src: BundleSource) -> Any:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    dataset = ds.dataset(parquet, format="parquet")
    expr = None
    ts = pc.field("timestamp")
    if src.start_time is not None:
        expr = ts >= pa.scalar(src.start_time, pa.timestamp("us", tz="UTC"))
    if src.end_time is not None:
        upper = ts <= pa.scalar(src.end_time, pa.timestamp("us", tz="UTC"))
        expr = upper if expr is None else expr & upper
    return dataset.to_table(filter=expr).sort_by("relative_path")


def _summary(src: BundleSource, current: SourceIndex, table: Any) -> SourceIndex:
    import pyarrow.compute as pc

    n = table.num_rows
    lo, hi = (pc.min(table["timestamp"]).as_py(), pc.max(table["timestamp"]).as_py()) if n else (None, None)
    start = src.start_time or lo
    end = src.end_time or hi
    return SourceIndex(
        channel=current.channel,
        modality=current.modality,
        collection=current.collection,
        version=src.version or current.version,
        storage_path=current.storage_path,
        index_file=current.index_file,
        file_count=n,
        total_size=int(pc.sum(table["size_bytes"]).as_py() or 0) if n else 0,
        checksum=table_checksum(table),
        data_range={"start_time": start.isoformat() if start else None, "end_time": end.isoformat() if end else None},
    )


def check_spec(cfg: Config, spec: BundleSpec) -> None:
    """Every source of ``spec`` is configured, at the version the spec asks for."""
    configured = {s.name: s for s in cfg.sources}
    for item in spec.sources:
        if item.source not in configured:
            known = ", ".join(configured) or "none"
            raise DataIndexError(f"bundle {spec.name!r} names unknown source {item.source!r} (configured: {known}); fix the spec or add the source")
        want, have = item.version, configured[item.source].version
        if want and have and want != have:
            raise DataIndexError(
                f"bundle {spec.name!r} wants source {item.source!r} version {want!r}, but the source is configured as version {have!r}; "
                "change one of them so they agree"
            )


def resolve(cfg: Config, spec: BundleSpec, spec_path: Path | None = None) -> ResolvedBundle:
    """Resolve ``spec`` against the current data index into ``<workspace>/bundles/<name>/<version>/``.

    The folder is written beside its final place and renamed into it, so a
    reader never sees half a bundle; ``LATEST`` then names this version.
    """
    import pyarrow.parquet as pq

    ws = Workspace.of(cfg)
    check_spec(cfg, spec)
    from kbrelease.errors import CompatibilityError
    from kbrelease.index.compat import VersionCheck

    try:
        current = {s.channel: s for s in read_bundle(ws.index_dir, VersionCheck.of(cfg)).data_manifest}
    except CompatibilityError:
        raise
    except Exception as exc:
        raise DataIndexError(f"no data index in {ws.index_dir} to resolve bundle {spec.name!r} from; run `kbrelease sync` first") from exc
    missing = [i.source for i in spec.sources if i.source not in current]
    if missing:
        raise DataIndexError(f"source(s) {', '.join(missing)} have not been synced yet; run `kbrelease sync --source {' --source '.join(missing)}` first")

    root = ws.bundle_dir(spec.name)
    final = root / spec.version
    stage = root / f".{spec.version}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    stage.mkdir(parents=True)
    try:
        sources = []
        for item in spec.sources:
            entry = current[item.source]
            table = _filtered_table(ws.index_dir / entry.index_file, item)
            pq.write_table(table, stage / entry.index_file, compression="zstd", row_group_size=ROW_GROUP_ROWS)
            sources.append(_summary(item, entry, table))
        meta = {
            "bundle_version": spec.version,
            "bundle_type": spec.type,
            "description": spec.description,
            "spec_source": spec_source(spec_path) if spec_path else None,
        }
        access = access_config(spec.name, cfg.service.base_url, cfg.service.api_token is not None)
        bundle = write_bundle(stage, sources, name=spec.name, meta=meta, access=access)
        _swap_into_place(stage, final)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    atomic_write(root / LATEST, spec.version + "\n")
    if spec_path is not None:
        record_spec(ws, spec.name, spec.version, spec_path)
    return ResolvedBundle(bundle, final)


SPEC_STATE = "bundle-specs.json"


def spec_sha256(path: Path) -> str:
    import hashlib

    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def record_spec(ws: Workspace, name: str, version: str, spec_path: Path) -> None:
    """Remember which spec file (and content hash) bundle ``name`` was last resolved from: the monitor reports changes."""
    from kbrelease.atomic import atomic_write_json

    state = read_spec_state(ws)
    state[name] = {"file": str(spec_path.resolve()), "sha256": spec_sha256(spec_path), "version": version}
    with contextlib.suppress(OSError):  # a read-only workspace: the bundle is resolved; only the change report is lost
        atomic_write_json(ws.state_dir / SPEC_STATE, state, mkdir=True, sort_keys=True)


def read_spec_state(ws: Workspace) -> dict[str, dict[str, str]]:
    """Bundle name → ``{"file", "sha256", "version"}`` of the spec it was last resolved from."""
    import json

    try:
        data = json.loads((ws.state_dir / SPEC_STATE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {str(k): v for k, v in data.items() if isinstance(v, dict)} if isinstance(data, dict) else {}


def _swap_into_place(stage: Path, final: Path) -> None:
    old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
    if final.exists():
        os.replace(final, old)
    os.replace(stage, final)
    shutil.rmtree(old, ignore_errors=True)


# --- finding an index by name -------------------------------------------------


def bundle_versions(ws: Workspace, name: str) -> list[str]:
    root = ws.bundle_dir(name)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and (p / "bundle.yaml").is_file())


def list_bundles(ws: Workspace) -> list[dict[str, Any]]:
    """Every resolved bundle in the workspace: name, versions, latest."""
    root = ws.root / "bundles"
    out = []
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        versions = bundle_versions(ws, folder.name)
        if versions:
            out.append({"name": folder.name, "versions": versions, "latest": _latest(ws, folder.name, versions)})
    return out


def _latest(ws: Workspace, name: str, versions: list[str]) -> str:
    try:
        latest = (ws.bundle_dir(name) / LATEST).read_text(encoding="utf-8").strip()
    except OSError:
        latest = ""
    return latest if latest in versions else versions[-1]


def _check_name(kind: str, value: str) -> str:
    import re

    if not re.fullmatch(NAME_PATTERN, value):
        raise DataIndexError(f"invalid {kind} {value!r}: use letters, digits, '_', '.' and '-' (up to 128, not starting with '.')")
    return value


def locate_index(ws: Workspace, name: str, version: str | None = None, live: str | None = None) -> Path:
    """The folder of the data index served as ``name``.

    In order: a resolved bundle (``version`` or its latest), ``current`` (the
    last sync), ``live`` (the live release, named by ``live``), or a release
    name (its frozen index). Names are checked first, so no path can escape
    the workspace.
    """
    _check_name("bundle name", name)
    if version is not None:
        _check_name("version", version)
    versions = bundle_versions(ws, name)
    if versions:
        chosen = version or _latest(ws, name, versions)
        if chosen not in versions:
            raise NotInIndex(f"bundle {name!r} has no version {chosen!r} (versions: {', '.join(versions)}); resolve it with `kbrelease index --bundle`")
        return ws.bundle_dir(name) / chosen
    if version is not None:
        raise NotInIndex(f"there is no bundle {name!r}, so it has no version {version!r}; resolve it with `kbrelease index --bundle bundles/{name}.yaml`")
    if name == CURRENT and (ws.index_dir / "bundle.yaml").is_file():
        return ws.index_dir
    if name == LIVE:
        if not live:
            raise NotInIndex("no release is live in this environment; publish one with `kbrelease publish`")
        name = live
    frozen = ws.release_index(name)
    if (frozen / "bundle.yaml").is_file():
        return frozen
    known = ", ".join(b["name"] for b in list_bundles(ws)) or "none"
    raise NotInIndex(
        f"no bundle or release named {name!r} (bundles: {known}; also 'current', 'live' and release names); "
        f"resolve a spec with `kbrelease index --bundle bundles/{name}.yaml`"
    )
