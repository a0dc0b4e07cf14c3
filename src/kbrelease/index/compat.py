"""The compatibility matrix: which data index versions this kbrelease reads, and what broke in between.

The matrix (``compatibility.yaml``, seed 003's
``compatibility/dataindex_compatibility.yaml``) is shipped in the package and
can be replaced by ``version_check.matrix`` in the config. Every data index
read goes through :meth:`VersionCheck.check`::

    versions = VersionCheck.of(cfg)          # the configured matrix and policy
    bundle = read_bundle(folder, versions)   # refused, or warned about, if incompatible

A data index records its version (``meta.schema_version``, shown as ``v1``)
and the kbrelease that wrote it (``meta.kbrelease_version``). It is compatible
when the matrix entry of the running kbrelease lists its version. Otherwise
the verdict names both versions, the breaking changes and the migration guide
of the newer side, and (``version_check.fail_on_incompatible``) refuses the
index with :class:`~kbrelease.errors.CompatibilityError`, or logs a warning
and reads it. Either way the alert channels of
``version_check.notification_channels`` are told once.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from kbrelease.errors import CompatibilityError, ConfigError

if TYPE_CHECKING:
    from kbrelease.config import Config

log = logging.getLogger("kbrelease.compat")
MATRIX_FILE = "compatibility.yaml"
SHIPPED = "shipped"
_VERSION = re.compile(r"^v?(\d+(?:\.\d+)*)([-+.][0-9A-Za-z.+-]*)?$")


def normalize(version: object) -> str:
    """A data index version as ``v<major>``-style text: ``1``, ``"1"``, ``"v1"`` and ``"v1.0.0"`` are all ``"v1"``."""
    text = str(version).strip()
    m = _VERSION.match(text)
    if not m:
        return text
    parts = m.group(1).split(".")
    while len(parts) > 1 and parts[-1] == "0":
        parts.pop()
    return "v" + ".".join(parts)


def _parts(version: str) -> tuple[int, ...]:
    m = _VERSION.match(version.strip())
    return tuple(int(p) for p in m.group(1).split(".")) if m else ()


@dataclass(frozen=True)
class MatrixEntry:
    """One kbrelease version (or release line) of the matrix."""

    version: str
    compatible_dataindex_versions: tuple[str, ...]
    breaking_changes: tuple[str, ...] = ()
    migration_guide: str | None = None


@dataclass(frozen=True)
class Matrix:
    """The whole compatibility matrix, and where it came from."""

    entries: tuple[MatrixEntry, ...]
    source: str
    version_check: Mapping[str, Any] = field(default_factory=dict)
    """The file's own ``version_check`` section (the seed keeps the policy there): defaults under kbrelease.yaml's."""

    def entry_for(self, version: str) -> MatrixEntry | None:
        """The entry of ``version``: an exact match, else the longest release line it belongs to ("0.1" for 0.1.3)."""
        want = _parts(version)
        best: MatrixEntry | None = None
        for entry in self.entries:
            have = _parts(entry.version)
            if have and want[: len(have)] == have and (best is None or len(have) > len(_parts(best.version))):
                best = entry
        return best


def _as_list(value: Any, where: str, key: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError(f"{where}: {key} must be a list")
    return value


def parse_matrix(data: Any, where: str) -> Matrix:
    """A matrix from its YAML document; every problem is a :class:`ConfigError` naming the file and key."""
    if not isinstance(data, dict) or not isinstance(data.get("compatibility_matrix"), dict):
        raise ConfigError(f"{where}: expected a mapping with 'compatibility_matrix:' (see docs/usage.md, Compatibility matrix)")
    body = data["compatibility_matrix"]
    versions = body.get("kbrelease_versions", body.get("spec_repo_versions"))
    if not isinstance(versions, dict) or not versions:
        raise ConfigError(f"{where}: compatibility_matrix.kbrelease_versions (or spec_repo_versions) must map versions to their entries")
    entries = []
    for version, item in versions.items():
        key = f"compatibility_matrix.kbrelease_versions.{version}"
        if not isinstance(item, dict) or "compatible_dataindex_versions" not in item:
            raise ConfigError(f"{where}: {key} needs compatible_dataindex_versions: [...]")
        if not _parts(str(version)):
            raise ConfigError(f"{where}: {key}: {str(version)[:40]!r} is not a version such as 0.1 or v1.0.0")
        guide = item.get("migration_guide")
        entries.append(
            MatrixEntry(
                str(version).lstrip("v"),
                tuple(normalize(v) for v in _as_list(item.get("compatible_dataindex_versions"), where, f"{key}.compatible_dataindex_versions")),
                tuple(str(c) for c in _as_list(item.get("breaking_changes"), where, f"{key}.breaking_changes")),
                str(guide) if guide else None,
            )
        )
    policy = data.get("version_check") or {}
    if not isinstance(policy, dict):
        raise ConfigError(f"{where}: version_check must be a mapping")
    return Matrix(tuple(entries), where, policy)


@functools.lru_cache(maxsize=16)
def _load(path: str, mtime_ns: int) -> Matrix:
    file = Path(path)
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"compatibility matrix {path} cannot be read ({str(exc)[:200]}); fix it or unset version_check.matrix") from None
    return parse_matrix(data, path)


@functools.cache
def shipped_matrix() -> Matrix:
    """The matrix shipped in the kbrelease package."""
    from importlib.resources import files

    text = (files("kbrelease") / MATRIX_FILE).read_text(encoding="utf-8")
    matrix = parse_matrix(yaml.safe_load(text), SHIPPED)
    return matrix


def load_matrix(path: Path | None = None) -> Matrix:
    """The matrix at ``path`` (re-read when the file changes), or the shipped one."""
    if path is None:
        return shipped_matrix()
    try:
        mtime = path.stat().st_mtime_ns
    except OSError:
        raise ConfigError(f"compatibility matrix {path} not found; fix version_check.matrix (or KBRELEASE_COMPATIBILITY_MATRIX)") from None
    return _load(str(path), mtime)


@dataclass
class Verdict:
    """The matrix's answer for one data index."""

    compatible: bool
    index_version: str
    written_by: str | None
    reader: str
    reads: list[str]
    breaking_changes: list[str] = field(default_factory=list)
    migration_guide: str | None = None
    matrix: str = SHIPPED

    def asdict(self) -> dict[str, Any]:
        return asdict(self)

    def message(self, where: str) -> str:
        if self.compatible:
            return f"{where}: data index {self.index_version} is compatible with kbrelease {self.reader}"
        writer = f" (written by kbrelease {self.written_by})" if self.written_by else ""
        text = (
            f"{where}: data index version {self.index_version}{writer} is not compatible with kbrelease {self.reader}, "
            f"which reads {', '.join(self.reads) or 'none'} (compatibility matrix: {self.matrix})"
        )
        if self.breaking_changes:
            text += "; breaking changes: " + "; ".join(self.breaking_changes)
        fix = (
            f"see the migration guide {self.migration_guide}"
            if self.migration_guide
            else "use a kbrelease that reads it, or rebuild the index (`kbrelease sync`)"
        )
        return f"{text}; {fix}"


def assess(meta: Mapping[str, Any], matrix: Matrix, reader: str | None = None) -> Verdict:
    """Is a data index with ``meta`` (bundle.yaml's) readable by kbrelease ``reader`` (default: this one)?"""
    from kbrelease import __version__
    from kbrelease.index.data_index import INDEX_SCHEMA_VERSION

    reader = reader or __version__
    version = normalize(meta.get("schema_version", 1))
    writer = meta.get("kbrelease_version")
    writer = str(writer) if writer else None
    mine = matrix.entry_for(reader)
    # A kbrelease the matrix does not describe reads what its own code knows.
    reads = list(mine.compatible_dataindex_versions) if mine else [f"v{v}" for v in range(1, INDEX_SCHEMA_VERSION + 1)]
    verdict = Verdict(version in reads, version, writer, reader, reads, matrix=matrix.source)
    if verdict.compatible:
        return verdict
    # The newer side's entry says what broke and how to migrate.
    theirs = matrix.entry_for(writer) if writer else next((e for e in matrix.entries if version in e.compatible_dataindex_versions), None)
    sides = [e for e in (mine, theirs) if e is not None]
    newest = max(sides, key=lambda e: _parts(e.version), default=None)
    if newest is not None:
        verdict.breaking_changes = list(newest.breaking_changes)
        verdict.migration_guide = newest.migration_guide
    return verdict


Notify = Callable[[str, str], object]


@dataclass
class VersionCheck:
    """A matrix and what to do with an incompatible index: refuse or warn, and whom to tell."""

    matrix: Matrix
    enabled: bool = True
    fail_on_incompatible: bool = True
    notify: Notify | None = None
    """``notify(key, message)``: tell the alert channels (once per key)."""

    @classmethod
    def default(cls) -> VersionCheck:
        """The shipped matrix, refusing incompatible indexes, telling no one (readers without a configuration)."""
        return cls(shipped_matrix())

    @classmethod
    def of(cls, cfg: Config) -> VersionCheck:
        """The configured matrix and policy (``version_check``); keys kbrelease.yaml leaves unset come from the matrix file's section."""
        conf = cfg.version_check
        matrix = load_matrix(conf.matrix)
        fileset = dict(matrix.version_check)
        chosen = conf.model_fields_set

        def pick(name: str, *file_keys: str) -> Any:
            if name not in chosen:
                for key in (name, *file_keys):
                    if key in fileset:
                        return fileset[key]
            return getattr(conf, name)

        channels = pick("notification_channels")
        if channels is not conf.notification_channels:
            from kbrelease.config import alert_channel

            channels = [alert_channel(c) for c in channels or []]

        def notify(key: str, message: str) -> object:
            from kbrelease.monitor.monitor import notify as send

            return send(cfg, key, message, list(channels))

        return cls(matrix, bool(pick("enabled", "enable_automatic_check")), bool(pick("fail_on_incompatible")), notify)

    def assess(self, meta: Mapping[str, Any]) -> Verdict | None:
        """The verdict, or None when the check is disabled."""
        return assess(meta, self.matrix) if self.enabled else None

    def check(self, meta: Mapping[str, Any], where: str) -> Verdict | None:
        """Refuse (or warn about) an incompatible index; tell the alert channels once. None when disabled."""
        verdict = self.assess(meta)
        if verdict is None or verdict.compatible:
            return verdict
        message = verdict.message(where)
        self.tell(f"compatibility:{where}:{verdict.index_version}", message)
        if self.fail_on_incompatible:
            raise CompatibilityError(message)
        log.warning("%s (version_check.fail_on_incompatible is false: reading it anyway)", message)
        return verdict

    def tell(self, key: str, message: str) -> None:
        if self.notify is None:
            return
        try:
            self.notify(key, message)
        except Exception:
            log.warning("could not send the compatibility notice %s", key, exc_info=True)
