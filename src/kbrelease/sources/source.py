"""One interface over local folders and S3: list files, fetch one.

Both are fsspec filesystems; this module hides their differences (the shape
of ``info`` dicts, credential and network errors) behind :class:`Source`.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from kbrelease.config import S3Config, SourceConfig
from kbrelease.errors import ConfigError, SourceError, SourceUnreachable


@dataclass(frozen=True)
class RemoteFile:
    """A file as the source lists it, before it is mirrored."""

    relative_path: str
    size_bytes: int
    timestamp: datetime
    etag: str


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
        elif "://" in cfg.path and not cfg.path.startswith("file://"):
            scheme = cfg.path.split("://", 1)[0]
            raise ConfigError(f"source {cfg.name!r}: unsupported scheme {scheme!r} in {cfg.path!r}; use s3://, file:// or a local folder")
        else:
            import fsspec

            self.protocol = "file"
            local = cfg.path[len("file://") :] if cfg.path.startswith("file://") else cfg.path
            self.root = str(Path(local).expanduser().resolve())
            self.fs = fsspec.filesystem("file")

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

    def list_files(self) -> Iterator[RemoteFile]:
        """Every file of the source's modality, filtered by include/exclude, sorted by path."""
        try:
            if self.protocol == "file" and not Path(self.root).is_dir():
                raise SourceError(f"source {self.cfg.name!r}: folder {self.root} does not exist; fix 'path' or create it")
            found = self.fs.find(self.root, detail=True, withdirs=False)
        except SourceError:
            raise
        except Exception as exc:
            raise self._translate(exc, "listing files") from exc
        prefix = self.root.rstrip("/") + "/"
        out: list[RemoteFile] = []
        for full, info in found.items():
            full_s = str(full)
            if not full_s.startswith(prefix):
                continue
            rel = full_s[len(prefix) :]
            if not rel or any(part.startswith(".") for part in PurePosixPath(rel).parts):
                continue  # hidden files and folders (.git, .DS_Store) are never content
            if PurePosixPath(rel).suffix.lower() not in self.cfg.suffixes:
                continue
            if self.cfg.include and not _matches(rel, self.cfg.include):
                continue
            if self.cfg.exclude and _matches(rel, self.cfg.exclude):
                continue
            etag = str(info.get("ETag") or info.get("etag") or "").strip('"')
            ts = info.get("LastModified") or info.get("mtime") or info.get("created")
            out.append(RemoteFile(rel, int(info.get("size") or 0), _as_datetime(ts), etag))
        out.sort(key=lambda f: f.relative_path)
        return iter(out)

    def fetch(self, relative_path: str, dest: Path) -> None:
        """Copy one file to ``dest`` (the caller renames it into place)."""
        try:
            self.fs.get_file(f"{self.root}/{relative_path}", str(dest))
        except Exception as exc:
            raise self._translate(exc, f"downloading {relative_path}") from exc

    def sha256(self, relative_path: str) -> tuple[str, int]:
        """sha256 hex and size of one file, streamed: nothing is written locally."""
        import hashlib

        h = hashlib.sha256()
        size = 0
        try:
            with self.fs.open(f"{self.root}/{relative_path}", "rb", block_size=1 << 22) as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
                    size += len(block)
        except Exception as exc:
            raise self._translate(exc, f"reading {relative_path}") from exc
        return h.hexdigest(), size

    def stat(self, relative_path: str) -> RemoteFile | None:
        """The file as the source has it now, or None when it is gone."""
        full = f"{self.root}/{relative_path}"
        try:
            info = self.fs.info(full)
        except FileNotFoundError:
            return None
        except Exception as exc:
            raise self._translate(exc, f"reading {relative_path}") from exc
        if info.get("type") == "directory":
            return None
        etag = str(info.get("ETag") or info.get("etag") or "").strip('"')
        ts = info.get("LastModified") or info.get("mtime") or info.get("created")
        return RemoteFile(relative_path, int(info.get("size") or 0), _as_datetime(ts), etag)

    def reachable(self) -> bool:
        """True when the source's root can be read; raises the translated error when the storage cannot be reached."""
        try:
            return bool(self.fs.exists(self.root)) if self.protocol == "s3" else Path(self.root).is_dir()
        except Exception as exc:
            raise self._translate(exc, "checking the storage") from exc
