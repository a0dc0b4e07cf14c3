"""The release package format: one tar (optionally zstd), read and written as a stream.

Members, in this order (an importer reads them front to back)::

    RELEASE_INFO.txt                       for people: release, sources, counts, models
    manifest.json                          for machines: format and schema versions, the
                                           release record, collections, data index
    index/bundle.yaml                      the frozen data index of the release
    index/<source>.parquet
    collections/<source>/part-000000.parquet   rows (id, vector, text, metadata, ...),
    collections/<source>/part-000001.parquet   each part at most ``part_bytes`` big
    ...
    SHA256SUMS                             sha256 of every member above; written last,
                                           so a truncated archive never has one
    SIGNATURE                              optional, after SHA256SUMS: an Ed25519 signature
                                           of SHA256SUMS (:mod:`kbrelease.trust.signing`)

``manifest.json`` comes second, so an importer refuses a newer format or
another model before it reads the rows. Only regular files with names of this
layout are accepted: no links, devices, absolute paths or ``..``.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import IO, Any

from kbrelease.errors import CompatibilityError, PackageError
from kbrelease.store.schema import ROW_FIELDS as ROW_FIELDS  # the columns of a row part: the one row schema
from kbrelease.trust.signing import MAX_SIGNATURE_BYTES

PACKAGE_FORMAT = "kbrelease-release-package"
PACKAGE_VERSION = 1
"""Layout of the archive itself; the release record inside has its own manifest schema version."""
PACKAGE_READS = (1,)
METRIC = "COSINE"
MAX_MEMBER_BYTES = 1 << 30
"""No member is read into memory beyond this (parts are 64 MiB by default)."""
MAX_SMALL_MEMBER_BYTES = 64 << 20
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
INFO, MANIFEST, SUMS, SIGNATURE = "RELEASE_INFO.txt", "manifest.json", "SHA256SUMS", "SIGNATURE"
_NAMES = re.compile(
    r"^(RELEASE_INFO\.txt|manifest\.json|SHA256SUMS|SIGNATURE|index/bundle\.yaml|index/[A-Za-z0-9_][A-Za-z0-9_.-]*\.parquet"
    r"|collections/[A-Za-z_][A-Za-z0-9_]*/part-\d{6}\.parquet)$"
)


def part_name(source: str, n: int) -> str:
    return f"collections/{source}/part-{n:06d}.parquet"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_member(info: tarfile.TarInfo, seen: set[str], where: str) -> None:
    """Refuse anything but a regular file with a name of the package layout."""
    name = info.name
    path = PurePosixPath(name)
    if name.startswith("/") or path.is_absolute() or re.match(r"^[A-Za-z]:[\\/]", name):
        raise PackageError(f"{where}: member {name!r} has an absolute path; refusing the package (it could write outside its folder)")
    if ".." in path.parts or "\\" in name:
        raise PackageError(f"{where}: member {name!r} points outside the package ('..'); refusing the package")
    if info.issym() or info.islnk():
        kind = "symbolic" if info.issym() else "hard"
        raise PackageError(f"{where}: member {name!r} is a {kind} link to {info.linkname!r}; packages hold regular files only")
    if not info.isreg() or info.issparse():
        raise PackageError(f"{where}: member {name!r} is not a regular file (a device, fifo or folder); packages hold regular files only")
    if not _NAMES.match(name):
        raise PackageError(f"{where}: unexpected member {name!r}; this is not a kbrelease release package (or it was altered)")
    if name in seen:
        raise PackageError(f"{where}: member {name!r} appears twice; the package was altered")
    if info.size > MAX_MEMBER_BYTES:
        raise PackageError(f"{where}: member {name!r} is {info.size} bytes, over the {MAX_MEMBER_BYTES} byte limit; export it again with smaller parts")
    seen.add(name)


def parse_sums(data: bytes, where: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for n, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
        m = re.fullmatch(r"([0-9a-f]{64}) [ *](\S+)", line)
        if not m:
            raise PackageError(f"{where}: line {n} of SHA256SUMS is malformed; the package is damaged")
        out[m.group(2)] = m.group(1)
    return out


def format_sums(sums: list[tuple[str, str]]) -> bytes:
    """``sha256sum`` format: ``sha256sum -c SHA256SUMS`` checks an extracted package."""
    return "".join(f"{digest}  {name}\n" for name, digest in sums).encode()


def check_manifest(manifest: Any, where: str) -> dict[str, Any]:
    """Refuse a manifest of another format, a newer package version or a newer release schema."""
    from kbrelease import __version__
    from kbrelease.release.schema import check_readable, manifest_version

    if not isinstance(manifest, dict) or manifest.get("format") != PACKAGE_FORMAT:
        raise PackageError(f"{where}: manifest.json is not a kbrelease release package manifest; check the file")
    version = manifest.get("package_version")
    if not isinstance(version, int) or version < 1:
        raise PackageError(f"{where}: manifest.json has no valid package_version; the package is damaged")
    if version not in PACKAGE_READS:
        raise CompatibilityError(
            f"{where} is package format {version}, newer than kbrelease {__version__} reads (formats {', '.join(map(str, PACKAGE_READS))}); "
            "upgrade kbrelease (pip install -U kbrelease) to import it"
        )
    release = manifest.get("release")
    if not isinstance(release, dict):
        raise PackageError(f"{where}: manifest.json has no release record; the package is damaged")
    check_readable(manifest_version(release, f"{where} (release {release.get('name')!r})"), f"{where} (release {release.get('name')!r})")
    collections = manifest.get("collections")
    if not isinstance(collections, dict) or not collections:
        raise PackageError(f"{where}: manifest.json lists no collections; the package is damaged")
    for source, col in collections.items():
        fields = tuple(col.get("fields") or ())
        if fields != ROW_FIELDS:
            raise CompatibilityError(
                f"{where}: collection {source!r} has fields {list(fields)}, this kbrelease stores {list(ROW_FIELDS)}; "
                "import it with the kbrelease version that exported it, or export it again"
            )
        if col.get("metric") != METRIC:
            raise CompatibilityError(f"{where}: collection {source!r} uses metric {col.get('metric')!r}; this kbrelease searches with {METRIC}")
    return manifest


@dataclass
class Reading:
    """What a pass over a package has seen: digests of its members and its SHA256SUMS."""

    where: str
    digests: dict[str, str] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    sums: dict[str, str] | None = None
    sums_bytes: bytes = b""
    signature: bytes | None = None
    """The ``SIGNATURE`` member, if the package has one (checked by :func:`kbrelease.trust.signing.check_signature`)."""


class Member:
    """One member of a package being read; hashed as it is read."""

    def __init__(self, name: str, size: int, inner: IO[bytes], where: str) -> None:
        self.name = name
        self.size = size
        self._inner = inner
        self._where = where
        self._hash = hashlib.sha256()
        self._read = 0

    def read(self, size: int = -1) -> bytes:
        try:
            data = self._inner.read(size)
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise PackageError(f"{self._where}: member {self.name!r} is truncated or damaged ({_reason(exc)}); copy or export the package again") from exc
        self._hash.update(data)
        self._read += len(data)
        return data

    def read_all(self, limit: int = MAX_MEMBER_BYTES) -> bytes:
        """The whole member in memory (members are bounded: parts by the exporter's part size)."""
        if self.size > limit:
            raise PackageError(f"{self._where}: member {self.name!r} is {self.size} bytes, over the {limit} byte limit for it; the package is damaged")
        data = self.read()
        if self._read != self.size:
            raise self._short()
        return data

    def _short(self) -> PackageError:
        return PackageError(f"{self._where}: member {self.name!r} is cut short ({self._read} of {self.size} bytes); the package is truncated — copy it again")

    def digest(self) -> str:
        """sha256 of the whole member; reads what the caller left unread."""
        while self.read(1 << 20):
            pass
        if self._read != self.size:
            raise self._short()
        return self._hash.hexdigest()


def iter_members(stream: IO[bytes], reading: Reading) -> Iterator[Member]:
    """Each member of a package stream, after the safety checks, in archive order.

    Members are hashed as they are read; ``reading.digests`` holds each one's
    sha256 once the caller asks for the next. ``SHA256SUMS`` is consumed here
    (``reading.sums``); an archive without it, or with anything after it, is refused.
    """
    where = reading.where
    seen: set[str] = set()
    try:
        tar = tarfile.open(fileobj=_decompressed(stream), mode="r|")  # noqa: SIM115 - a generator; closed in its finally
    except (tarfile.TarError, OSError, EOFError) as exc:
        if str(exc) == "empty file":  # also what a zstd stream cut inside its first block gives
            raise PackageError(f"{where}: the archive is empty or truncated; copy or export it again") from exc
        raise PackageError(f"{where}: not a readable package ({_reason(exc)}); check the file, or export it again") from exc
    try:
        while True:
            try:
                info = tar.next()
            except (tarfile.TarError, OSError, EOFError) as exc:
                raise PackageError(f"{where}: the archive is truncated or damaged ({_reason(exc)}); copy or export it again") from exc
            if info is None:
                break
            if reading.signature is not None or (reading.sums is not None and info.name != SIGNATURE):
                raise PackageError(f"{where}: member {info.name!r} follows SHA256SUMS; the package was altered")
            check_member(info, seen, where)
            inner = tar.extractfile(info)
            assert inner is not None  # a regular file
            member = Member(info.name, info.size, inner, where)
            if info.name == SUMS:
                reading.sums_bytes = member.read_all(MAX_SMALL_MEMBER_BYTES)
                reading.sums = parse_sums(reading.sums_bytes, where)
            elif info.name == SIGNATURE:
                if reading.sums is None:
                    raise PackageError(f"{where}: SIGNATURE comes before SHA256SUMS; the package was altered")
                reading.signature = member.read_all(MAX_SIGNATURE_BYTES)
            else:
                yield member
                reading.digests[info.name] = member.digest()
            reading.order.append(info.name)
    finally:
        tar.close()
    if reading.sums is None:
        raise PackageError(f"{where}: no SHA256SUMS at the end: the archive is truncated (or not a package); copy or export it again")


def check_sums(reading: Reading) -> None:
    """Every member listed, every listed member present, every digest equal."""
    where, sums = reading.where, reading.sums or {}
    for name in reading.order:
        if name in (SUMS, SIGNATURE):
            continue
        if name not in sums:
            raise PackageError(f"{where}: member {name!r} is not listed in SHA256SUMS; the package was altered")
        if sums[name] != reading.digests.get(name):
            raise PackageError(
                f"{where}: checksum mismatch for {name!r} (SHA256SUMS says {sums[name][:12]}…, the member is "
                f"{reading.digests.get(name, '')[:12]}…); the package is damaged or was tampered with — export it again"
            )
    missing = sorted(set(sums) - set(reading.order))
    if missing:
        raise PackageError(f"{where}: SHA256SUMS lists {missing[0]!r} but the archive does not contain it; the package is incomplete")
    for name in (INFO, MANIFEST):
        if name not in sums:
            raise PackageError(f"{where}: the package has no {name}; it is not a complete kbrelease release package")


class _Prefixed(io.RawIOBase):
    """A read-only stream with some bytes put back in front (format sniffing on a pipe)."""

    def __init__(self, head: bytes, rest: IO[bytes]) -> None:
        self._head = head
        self._rest = rest

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self._head:
            if size < 0:
                out, self._head = self._head + self._rest.read(), b""
                return out
            out, self._head = self._head[:size], self._head[size:]
            return out
        return self._rest.read(size)

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)


def _decompressed(stream: IO[bytes]) -> IO[bytes]:
    """The tar stream: zstd is recognised by its magic number, not the file name."""
    head = b""
    while len(head) < 4:
        chunk = stream.read(4 - len(head))
        if not chunk:
            break
        head += chunk
    raw: IO[bytes] = _Prefixed(head, stream)  # type: ignore[assignment]
    if head != ZSTD_MAGIC:
        return raw
    return _Zstd(raw)  # type: ignore[return-value]


class _Zstd(io.RawIOBase):
    """zstd decompression whose errors are OSErrors, like every other damaged-stream error here."""

    def __init__(self, raw: IO[bytes]) -> None:
        import zstandard

        self._error = zstandard.ZstdError
        self._reader = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        try:
            return self._reader.read(size)
        except self._error as exc:
            raise OSError(f"zstd: {exc}") from exc

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text[:200]


def dumps(data: Any) -> bytes:
    return (json.dumps(data, indent=2, ensure_ascii=False, sort_keys=False) + "\n").encode()
