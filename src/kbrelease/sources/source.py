"""One interface over local folders and S3: list files, fetch one.

Both are fsspec filesystems; this module hides their differences (the shape
of ``info`` dicts, credential and network errors) behind :class:`Source`.

Keys and file names are untrusted: :meth:`Source.scan` turns each into a
relative path once, through :func:`~kbrelease.trust.paths.safe_relpath`, and
skips (with the reason, by name) keys that are not plain relative paths, keys
that would land on the same file as another one on a case-insensitive or
Unicode-normalizing disk, a file that is also the folder of another file,
links that lead out of a local source folder, and FIFOs, devices and sockets.
"""

from __future__ import annotations

import fnmatch
import os
import stat as stat_mod
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from kbrelease.config import S3Config, SourceConfig
from kbrelease.errors import ConfigError, SourceError, SourceUnreachable, UnsafePath
from kbrelease.sources.metadata import is_sidecar, sidecar_target
from kbrelease.trust.paths import contained, path_problem, safe_relpath

FSSPEC_PACKAGES: dict[str, str] = {"gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs", "abfss": "adlfs", "sftp": "sshfs", "ftp": "fsspec"}
"""Protocols besides s3:// and local folders, each through its fsspec package."""


@dataclass(frozen=True)
class RemoteFile:
    """A file as the source lists it, before it is mirrored."""

    relative_path: str
    size_bytes: int
    timestamp: datetime
    etag: str


@dataclass
class Listing:
    """What a source holds: the files to mirror, and the entries skipped with their reason."""

    files: list[RemoteFile] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    """``{"file": key as shown, "reason": why}`` per skipped key, sorted by key."""
    sidecars: dict[str, str] = field(default_factory=dict)
    """Relative path of a file → its metadata sidecar (``<file>.meta.json`` / ``.meta.yaml``); sidecars are not files of the source."""


def shown(key: str, limit: int = 200) -> str:
    """A key as it can be printed: control characters escaped, clipped."""
    printable = key if key.isprintable() else ascii(key)[1:-1]
    return printable if len(printable) <= limit else printable[: limit - 1] + "…"


def _key_problem(rel: str) -> str | None:
    """Why a listed key cannot become a file of the mirror, or None."""
    problem = path_problem(rel)
    if problem == "is not valid UTF-8":  # only a local file name can be (an S3 key always is UTF-8)
        return "name is not valid UTF-8; rename the file"
    if problem is not None:
        return f"key {problem}; only plain relative paths are mirrored, rename the object"
    return None


def _fold(rel: str) -> str:
    """The name a case-insensitive, Unicode-normalizing disk (macOS, Windows) sees."""
    return unicodedata.normalize("NFC", rel).casefold()


def _without_collisions(files: list[RemoteFile], skipped: list[dict[str, str]]) -> list[RemoteFile]:
    """Keep the first of files that would share one path on some disk, and files whose folder is not also a file."""
    kept: list[RemoteFile] = []
    names: dict[str, str] = {}  # folded path -> kept path
    folders: set[str] = set()  # folded folders of kept files
    for rf in sorted(files, key=lambda f: f.relative_path):
        folded = _fold(rf.relative_path)
        parts = folded.split("/")
        ancestors = ["/".join(parts[:i]) for i in range(1, len(parts))]
        if folded in names:
            reason = f"same file name as {shown(names[folded])!r} on a case-insensitive or Unicode-normalizing disk; rename one of them"
        elif folded in folders:
            reason = "is a file and also the folder of other files; rename it"
        elif clash := next((a for a in ancestors if a in names), None):
            reason = f"its folder {shown(names[clash])!r} is also a file; rename one of them"
        else:
            names[folded] = rf.relative_path
            folders.update(ancestors)
            kept.append(rf)
            continue
        skipped.append({"file": shown(rf.relative_path), "reason": reason})
    return kept


def _matches(rel: str, patterns: list[str]) -> bool:
    for pat in patterns:
        if fnmatch.fnmatchcase(rel, pat):
            return True
        # "**/*.md" should also match "a.md" at the top level.
        if pat.startswith("**/") and fnmatch.fnmatchcase(rel, pat[3:]):
            return True
    return False


def _as_datetime(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, int | float):
        return datetime.fromtimestamp(float(value), tz=UTC)
    if isinstance(value, str) and len(value) >= 14 and value[:14].isdigit():  # FTP MLSD "modify": YYYYMMDDHHMMSS[.sss], UTC
        try:
            return datetime.strptime(value[:14], "%Y%m%d%H%M%S").replace(tzinfo=UTC)
        except ValueError:
            pass
    return datetime.fromtimestamp(0, tz=UTC)


class Source:
    """A configured source: ``s3://bucket/prefix``, ``file://`` URL or folder."""

    def __init__(self, cfg: SourceConfig, s3: S3Config) -> None:
        self.cfg = cfg
        self.uri = cfg.path
        if cfg.path.startswith("s3://"):
            self.protocol = "s3"
            self.root = cfg.path[len("s3://") :].rstrip("/")
            if not self.root:
                raise ConfigError(f"source {cfg.name!r}: path {cfg.path!r} names no bucket; use s3://bucket/prefix")
            self.fs = self._s3_filesystem(s3)
        elif "://" in cfg.path and cfg.path.split("://", 1)[0] in FSSPEC_PACKAGES:
            self.protocol = cfg.path.split("://", 1)[0]
            self.fs, self.root = self._fsspec_filesystem(cfg)
        elif "://" in cfg.path and not cfg.path.startswith("file://"):
            scheme = cfg.path.split("://", 1)[0]
            raise ConfigError(
                f"source {cfg.name!r}: unsupported scheme {scheme!r} in {cfg.path!r}; use s3://, file://, a local folder, "
                f"or {', '.join(f'{k}://' for k in FSSPEC_PACKAGES)}"
            )
        else:
            import fsspec

            self.protocol = "file"
            local = cfg.path[len("file://") :] if cfg.path.startswith("file://") else cfg.path
            self.root = str(Path(local).expanduser().resolve())
            self.fs = fsspec.filesystem("file")

    @staticmethod
    def _fsspec_filesystem(cfg: SourceConfig) -> tuple[Any, str]:
        """An fsspec filesystem of another protocol (GCS, Azure, SFTP, FTP); credentials never in the URL."""
        from urllib.parse import urlsplit

        import fsspec.core

        scheme = cfg.path.split("://", 1)[0]
        if urlsplit(cfg.path).password is not None:
            raise ConfigError(
                f"source {cfg.name!r}: a password in the path; put it in FSSPEC_{scheme.upper()}_PASSWORD (or the protocol's own variables) instead"
            )
        try:
            fs, root = fsspec.core.url_to_fs(cfg.path, skip_instance_cache=True)
        except ImportError as exc:
            raise ConfigError(f"source {cfg.name!r}: {scheme}:// sources need {FSSPEC_PACKAGES[scheme]}: pip install {FSSPEC_PACKAGES[scheme]}") from exc
        root = str(root).rstrip("/")
        if not root:
            raise ConfigError(f"source {cfg.name!r}: path {cfg.path!r} names no folder; use {scheme}://host/folder")
        return fs, root

    @staticmethod
    def _s3_filesystem(s3: S3Config) -> Any:
        try:
            import s3fs
        except ImportError as exc:  # pragma: no cover - s3fs is a dependency
            raise ConfigError("S3 sources need s3fs: pip install 's3fs[boto3]'") from exc
        kwargs: dict[str, Any] = {"skip_instance_cache": True, "anon": s3.anonymous}
        if s3.endpoint_url:
            kwargs["endpoint_url"] = s3.endpoint_url
        if s3.profile:
            kwargs["profile"] = s3.profile
        if s3.region:
            kwargs["client_kwargs"] = {"region_name": s3.region}
        kwargs["config_kwargs"] = {"retries": {"max_attempts": 3, "mode": "standard"}, "connect_timeout": 5, "read_timeout": 60}
        return s3fs.S3FileSystem(**kwargs)

    def _translate(self, exc: Exception, what: str) -> Exception:
        """Map boto/aiohttp/OS errors to kbrelease errors with a fix."""
        name = type(exc).__name__
        text = str(exc)
        where = f"source {self.cfg.name!r} ({self.uri})"
        if name in {"NoCredentialsError", "PartialCredentialsError"} or "Unable to locate credentials" in text:
            return ConfigError(
                f"{where}: no S3 credentials found; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, set s3.profile, or s3.anonymous: true for a public bucket"
            )
        if name in {"EndpointConnectionError", "ConnectTimeoutError", "ClientConnectorError", "ServerTimeoutError"} or (
            "Could not connect" in text or "Cannot connect" in text or "Connect timeout" in text
        ):
            return SourceUnreachable(f"{where}: cannot reach the S3 endpoint while {what}; check s3.endpoint_url / S3_ENDPOINT_URL and the network")
        if isinstance(exc, PermissionError) or "AccessDenied" in text or "InvalidAccessKeyId" in text or "SignatureDoesNotMatch" in text:
            return ConfigError(f"{where}: access denied while {what}; check the S3 keys or profile and the bucket policy")
        if isinstance(exc, FileNotFoundError) or "NoSuchBucket" in text:
            return SourceError(f"{where}: not found while {what}; check the bucket and prefix")
        return SourceError(f"{where}: {what} failed: {name}: {text}")

    def _wanted(self, rel: str) -> bool:
        """Whether a (not yet checked) relative path is content of this source by name."""
        if any(part.startswith(".") and part not in (".", "..") for part in rel.split("/")):
            return False  # hidden files and folders (.git, .DS_Store) are never content
        if is_sidecar(rel):
            return False  # metadata of another file, never a document
        if PurePosixPath(rel).suffix.lower() not in self.cfg.suffixes:
            return False
        if self.cfg.include and not _matches(rel, self.cfg.include):
            return False
        return not (self.cfg.exclude and _matches(rel, self.cfg.exclude))

    def scan(self) -> Listing:
        """Every file of the source's modality, filtered by include/exclude, sorted by path; unsafe entries skipped by name."""
        listing = Listing()
        entries = self._walk_local(listing) if self.protocol == "file" else self._walk_s3()
        files: list[RemoteFile] = []
        sidecars: dict[str, str] = {}
        for rel, size, ts, etag in entries:
            if not rel or (rel.endswith("/") and not size):
                continue  # the prefix itself, or an empty "folder marker" object
            if is_sidecar(rel):
                target = sidecar_target(rel)
                if self._wanted(target) and _key_problem(rel) is None and (target not in sidecars or rel < sidecars[target]):
                    sidecars[target] = rel  # one per file: .meta.json before .meta.yaml
                continue
            if not self._wanted(rel):
                continue
            problem = _key_problem(rel)
            if problem is not None:
                listing.skipped.append({"file": shown(rel), "reason": problem})
                continue
            files.append(RemoteFile(rel, size, _as_datetime(ts), etag))
        listing.files = _without_collisions(files, listing.skipped)
        kept = {f.relative_path for f in listing.files}
        listing.sidecars = {t: rel for t, rel in sidecars.items() if t in kept}
        listing.skipped.sort(key=lambda s: s["file"])
        return listing

    def list_files(self) -> Iterator[RemoteFile]:
        """The files of :meth:`scan` (the skipped entries left out)."""
        return iter(self.scan().files)

    def _walk_s3(self) -> list[tuple[str, int, Any, str]]:
        try:
            found = self.fs.find(self.root, detail=True, withdirs=False)
        except Exception as exc:
            raise self._translate(exc, "listing files") from exc
        prefix = self.root.rstrip("/") + "/"
        out = []
        for full, info in found.items():
            full_s = str(full)
            if not full_s.startswith(prefix):
                continue
            etag = str(info.get("ETag") or info.get("etag") or "").strip('"')
            ts = info.get("LastModified") or info.get("mtime") or info.get("created") or info.get("modify")
            out.append((full_s[len(prefix) :], int(info.get("size") or 0), ts, etag))
        return out

    def _walk_local(self, listing: Listing) -> list[tuple[str, int, Any, str]]:
        """Regular files under the folder; links are followed only to regular files inside it."""
        root = Path(self.root)
        if not root.is_dir():
            raise SourceError(f"source {self.cfg.name!r}: folder {self.root} does not exist; fix 'path' or create it")
        out: list[tuple[str, int, Any, str]] = []

        def failed(exc: OSError) -> None:
            raise self._translate(exc, "listing files") from exc

        for folder, dirs, names in os.walk(root, onerror=failed, followlinks=False):
            base = Path(folder).relative_to(root).as_posix()
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in dirs:
                rel = name if base == "." else f"{base}/{name}"
                if (Path(folder) / name).is_symlink():
                    listing.skipped.append({"file": shown(rel), "reason": self._link_problem(rel) or "is a link to a folder; not followed"})
            for name in names:
                rel = name if base == "." else f"{base}/{name}"
                if not self._wanted(rel) and not (is_sidecar(rel) and self._wanted(sidecar_target(rel))):
                    continue
                path = Path(folder) / name
                try:
                    st = path.lstat()
                    if stat_mod.S_ISLNK(st.st_mode):
                        reason = self._link_problem(rel)
                        if reason is not None:
                            listing.skipped.append({"file": shown(rel), "reason": reason})
                            continue
                        st = path.stat()
                except OSError:
                    continue  # gone since it was listed
                if not stat_mod.S_ISREG(st.st_mode):
                    listing.skipped.append({"file": shown(rel), "reason": "is not a regular file (a FIFO, device or socket); remove it from the source"})
                    continue
                out.append((rel, st.st_size, st.st_mtime, ""))
        return out

    def _link_problem(self, rel: str) -> str | None:
        """Why a link inside the source folder is not followed, or None for a link to a regular file inside it."""
        target = os.path.realpath(Path(self.root) / rel)
        real_root = os.path.realpath(self.root)
        if os.path.commonpath([real_root, target]) != real_root:
            return "is a link that leads outside the source folder; links are not followed out of it, copy the file in instead"
        if os.path.isdir(target):
            return "is a link to a folder; folder links are not followed, copy or move the folder in instead"
        if not os.path.isfile(target):
            return "is a link to something that is not a regular file; remove it"
        return None

    def _open_local(self, relative_path: str) -> Any:
        """The file opened for reading, after containment checks: never a link out of the folder, never a FIFO or device."""
        path = contained(self.root, relative_path, f"file of source {self.cfg.name!r}")
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        try:
            if not stat_mod.S_ISREG(os.fstat(fd).st_mode):
                raise UnsafePath(f"file of source {self.cfg.name!r} {relative_path!r} is not a regular file (a FIFO, device or socket); remove it")
            os.set_blocking(fd, True)
            return os.fdopen(fd, "rb")
        except BaseException:
            os.close(fd)
            raise

    def fetch(self, relative_path: str, dest: Path) -> None:
        """Copy one file to ``dest`` (the caller renames it into place)."""
        safe_relpath(relative_path, f"file of source {self.cfg.name!r}")
        try:
            if self.protocol == "file":
                import shutil

                with self._open_local(relative_path) as src, dest.open("wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
            else:
                self.fs.get_file(f"{self.root}/{relative_path}", str(dest))
        except UnsafePath:
            raise
        except Exception as exc:
            raise self._translate(exc, f"downloading {relative_path}") from exc

    def sha256(self, relative_path: str) -> tuple[str, int]:
        """sha256 hex and size of one file, streamed: nothing is written locally."""
        import hashlib

        safe_relpath(relative_path, f"file of source {self.cfg.name!r}")
        h = hashlib.sha256()
        size = 0
        try:
            opened = self._open_local(relative_path) if self.protocol == "file" else self.fs.open(f"{self.root}/{relative_path}", "rb", block_size=1 << 22)
            with opened as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
                    size += len(block)
        except UnsafePath:
            raise
        except Exception as exc:
            raise self._translate(exc, f"reading {relative_path}") from exc
        return h.hexdigest(), size

    def read_head(self, relative_path: str, limit: int) -> bytes:
        """Up to ``limit`` bytes from the start of one file (a sidecar, a front matter), after the same checks as :meth:`fetch`."""
        safe_relpath(relative_path, f"file of source {self.cfg.name!r}")
        try:
            opened = self._open_local(relative_path) if self.protocol == "file" else self.fs.open(f"{self.root}/{relative_path}", "rb", block_size=limit)
            with opened as fh:
                data: bytes = fh.read(limit)
                return data
        except UnsafePath:
            raise
        except Exception as exc:
            raise self._translate(exc, f"reading {relative_path}") from exc

    def user_metadata(self, relative_path: str) -> dict[str, Any]:
        """The S3 object metadata and tags of one object, checked (``{}`` for a folder source)."""
        from kbrelease.sources.metadata import s3_metadata

        if self.protocol != "s3":
            return {}
        return s3_metadata(self.fs, f"{self.root}/{relative_path}", f"file {relative_path!r} of source {self.cfg.name!r}")

    def stat(self, relative_path: str) -> RemoteFile | None:
        """The file as the source has it now, or None when it is gone (or no longer a regular file inside the folder)."""
        safe_relpath(relative_path, f"file of source {self.cfg.name!r}")
        full = f"{self.root}/{relative_path}"
        try:
            if self.protocol == "file":
                st = contained(self.root, relative_path, f"file of source {self.cfg.name!r}").stat()
                if not stat_mod.S_ISREG(st.st_mode):
                    return None
                return RemoteFile(relative_path, st.st_size, _as_datetime(st.st_mtime), "")
            info = self.fs.info(full)
        except FileNotFoundError:
            return None
        except UnsafePath:
            raise
        except Exception as exc:
            raise self._translate(exc, f"reading {relative_path}") from exc
        if info.get("type") == "directory":
            return None
        etag = str(info.get("ETag") or info.get("etag") or "").strip('"')
        ts = info.get("LastModified") or info.get("mtime") or info.get("created") or info.get("modify")
        return RemoteFile(relative_path, int(info.get("size") or 0), _as_datetime(ts), etag)

    def reachable(self) -> bool:
        """True when the source's root can be read; raises the translated error when the storage cannot be reached."""
        try:
            return bool(self.fs.exists(self.root)) if self.protocol != "file" else Path(self.root).is_dir()
        except Exception as exc:
            raise self._translate(exc, "checking the storage") from exc
