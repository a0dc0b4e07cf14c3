"""Python client of the data-index API (seed 003), over httpx.

>>> from kbrelease.index.client import DataIndexClient
>>> with DataIndexClient("http://127.0.0.1:8000", token="...") as client:
...     dataset = client.get_dataset("weekly_docs", "v1.0.0-2025.25")
...     files = client.list_files("weekly_docs", channel="docs", start_time="2025-06-01T00:00:00Z", end_time="2025-06-02T00:00:00Z")
...     for batch in client.stream_data("weekly_docs", batch_size=1000):   # lazy; resumes if the connection breaks
...         process(batch)
...     client.download("weekly_docs", [f.file_id for f in files[:10]], "downloads/")

The seed's keyword names work too (``bundle_name=``, ``bundle_version=``)::

    dataset = client.get_dataset(bundle_name="foundational_model", bundle_version="v1.0.0-2025.25")
    files = client.list_files(bundle_name=..., bundle_version=..., channel="image_original", start_time=..., end_time=..., where='camera_id == "front"')
    for batch in client.stream_data(bundle_name=..., bundle_version=..., batch_size=1000, contents=True):
        for item in batch:          # FileData: the record and the file's bytes, sha256-checked
            train(item.info.metadata, item.data)

Transient failures (connection errors, timeouts, 429, 502, 503, 504) are
retried with exponential backoff; a stream that breaks off resumes after its
last complete batch; a download that breaks off asks again for the files it
did not get. Errors are :mod:`kbrelease.errors` classes: ``NotInIndex`` (404),
``DataIndexError`` (400/422), ``AuthenticationError`` (401/403),
``ServiceUnavailable`` (after the retries), ``ServiceError`` (anything else).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tarfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import httpx

from kbrelease.errors import AuthenticationError, DataIndexError, KbReleaseError, NotInIndex, ServiceError, ServiceUnavailable
from kbrelease.retry import backoff, parse_retry_after
from kbrelease.trust.redact import redact_url

RETRY_STATUS = frozenset({429, 502, 503, 504})


@dataclass(slots=True)
class FileInfo:
    """One file of a data index. (Not frozen: a frozen dataclass took twice as long to make,
    which was most of a stream's time in the client.)"""

    file_id: str
    source: str
    relative_path: str
    timestamp: datetime
    size_bytes: int
    checksum: str
    """sha256 of the file's bytes, hex."""
    etag: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def channel(self) -> str:
        """The seed's name for the source."""
        return self.source

    @property
    def sha256(self) -> str:
        """The checksum in the seed's form, ``sha256:<hex>``."""
        return "sha256:" + self.checksum

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FileInfo:
        meta = data.get("metadata") or {}
        return cls(
            file_id=data["file_id"],
            source=data["source"],
            relative_path=data["relative_path"],
            timestamp=datetime.fromisoformat(data["timestamp"]),
            size_bytes=int(data["size_bytes"]),
            checksum=plain_checksum(data["checksum"]),
            etag=data.get("etag") or "",
            metadata=json.loads(meta) if isinstance(meta, str) else meta,
        )

    @classmethod
    def many(cls, records: list[dict[str, Any]]) -> list[FileInfo]:
        """:meth:`from_json` for a whole batch of the service's records, without the per-field checks."""
        iso = datetime.fromisoformat
        return [
            cls(r["file_id"], r["source"], r["relative_path"], iso(r["timestamp"]), r["size_bytes"], plain_checksum(r["checksum"]), r["etag"], r["metadata"])
            for r in records
        ]


def plain_checksum(value: str) -> str:
    """A sha256 checksum as bare hex, from either form (``<hex>`` or the seed's ``sha256:<hex>``)."""
    return value[7:] if value[:7].lower() == "sha256:" else value


@dataclass(slots=True)
class FileData:
    """A file's bytes with its record (``stream_data(..., contents=True)``); ``data`` matched the record's sha256.

    ``offset`` is where ``data`` starts in the file: 0, except for the file a stream was resumed in (``resume=``).
    """

    info: FileInfo
    data: bytes
    offset: int = 0

    @property
    def position(self) -> tuple[str, int]:
        """Where to resume after this file: pass as ``resume=`` to continue with the next one."""
        return (self.info.file_id, self.offset + len(self.data))


@dataclass(frozen=True)
class ChannelInfo:
    """One source of a dataset (an entry of the seed's ``data_manifest``)."""

    channel: str
    version: str
    file_count: int
    total_size: int
    checksum: str
    storage_path: str
    index_file: str
    data_range: dict[str, str | None]
    modality: str = ""
    collection: str = ""


@dataclass(frozen=True)
class Dataset:
    """A bundle (or release index) as the service describes it."""

    name: str
    version: str | None
    meta: dict[str, Any]
    channels: list[ChannelInfo]
    access_config: dict[str, Any] = field(default_factory=dict)
    """The seed's access_config: base_url, authentication, endpoints."""

    @property
    def data_manifest(self) -> list[ChannelInfo]:
        """The seed's name for :attr:`channels`."""
        return self.channels

    @property
    def total_files(self) -> int:
        return int(self.meta.get("total_files", sum(c.file_count for c in self.channels)))

    @property
    def checksum(self) -> str:
        return str(self.meta.get("checksum", ""))


@dataclass(frozen=True)
class FilePage:
    files: list[FileInfo]
    next_cursor: str | None


@dataclass(frozen=True)
class DownloadResult:
    """What :meth:`DataIndexClient.download` wrote (each file's sha256 checked)."""

    files: list[Path]
    bytes: int


class _Broken(Exception):
    """A stream ended without its end marker."""


class _IterReader(io.RawIOBase):
    """A read-only file over an iterator of byte chunks (for tarfile and Arrow)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buf = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not self._buf:
            try:
                self._buf = next(self._chunks)
            except StopIteration:
                return 0
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


def _lines(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Split a byte stream at newlines. (httpx's iter_lines re-joins its whole buffer on every
    chunk, which is quadratic in a line's length: a 3 MB batch line took seconds.)"""
    held: list[bytes] = []
    for chunk in chunks:
        start = 0
        while (end := chunk.find(b"\n", start)) >= 0:
            held.append(chunk[start:end])
            yield b"".join(held)
            held.clear()
            start = end + 1
        if start < len(chunk):
            held.append(chunk[start:])
    if held:
        yield b"".join(held)


def _iso(value: str | datetime | None) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else value


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500] or response.reason_phrase
    if isinstance(body, dict) and isinstance(body.get("error"), dict):  # the service's error shape
        return str(body["error"].get("message", body["error"]))
    detail = body.get("detail", body) if isinstance(body, dict) else body
    if isinstance(detail, list):  # FastAPI validation errors
        return "; ".join(f"{'.'.join(str(p) for p in d.get('loc', []))}: {d.get('msg')}" for d in detail if isinstance(d, dict))
    return str(detail)


class DataIndexClient:
    """Client of one kbrelease service's data-index API."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 0.5,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.base_url = base_url.rstrip("/")
        self.shown_url = redact_url(self.base_url)  # for messages: without userinfo or ?token=
        self.retries = retries
        self.backoff = backoff
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout, transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> DataIndexClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- plumbing -------------------------------------------------------------
    def _path(self, bundle: str, tail: str = "") -> str:
        return f"/api/v1/bundles/{quote(bundle, safe='')}{tail}"

    def _error(self, response: httpx.Response) -> KbReleaseError:
        status = response.status_code
        detail = _detail(response)
        if status == 404:
            return NotInIndex(detail)
        if status in (400, 422):
            return DataIndexError(detail)
        if status in (401, 403):
            return AuthenticationError(f"{detail} (HTTP {status}); pass token= to DataIndexClient", status)
        if status in RETRY_STATUS or status >= 500:
            return ServiceUnavailable(f"{self.shown_url} answered HTTP {status}: {detail}; retry later or check the service's logs", status)
        return ServiceError(f"{self.shown_url} answered HTTP {status}: {detail}", status)

    def _pause(self, attempt: int, response: httpx.Response | None = None) -> None:
        retry_after = parse_retry_after(response.headers.get("Retry-After")) if response is not None else None
        time.sleep(backoff(attempt, self.backoff, retry_after=retry_after))

    @contextlib.contextmanager
    def _open(self, method: str, url: str, **kwargs: Any) -> Iterator[httpx.Response]:
        """A streamed response with a 2xx status, after retrying transient failures."""
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            with contextlib.ExitStack() as stack:
                try:
                    response = stack.enter_context(self._http.stream(method, url, **kwargs))
                    if response.status_code >= 300:
                        response.read()
                except httpx.TransportError as exc:
                    if last:
                        raise ServiceUnavailable(f"cannot reach {self.shown_url} ({type(exc).__name__}: {exc}); check the URL and the service") from exc
                    self._pause(attempt)
                    continue
                # Outside the try: a failure while the caller reads the body is the caller's to handle.
                if response.status_code < 300:
                    yield response
                    return
                if response.status_code not in RETRY_STATUS or last:
                    raise self._error(response)
                self._pause(attempt, response)

    def _json(self, method: str, url: str, **kwargs: Any) -> Any:
        import orjson

        with self._open(method, url, **kwargs) as response:
            return orjson.loads(response.read())

    @staticmethod
    def _params(
        version: str | None,
        channel: str | Sequence[str] | None,
        start_time: str | datetime | None,
        end_time: str | datetime | None,
        prefix: str | None,
        where: str | None = None,
    ) -> dict[str, Any]:
        channels = [channel] if isinstance(channel, str) else list(channel or [])
        params: dict[str, Any] = {
            "version": version,
            "source": channels,
            "start_time": _iso(start_time),
            "end_time": _iso(end_time),
            "prefix": prefix,
            "where": where,
        }
        return {k: v for k, v in params.items() if v not in (None, "", [])}

    @staticmethod
    def _name(bundle: str | None, bundle_name: str | None, version: str | None = None, bundle_version: str | None = None) -> tuple[str, str | None]:
        """The bundle and version from either spelling: positional (``bundle``, ``version``) or the seed's keywords."""
        if bundle is not None and bundle_name is not None and bundle != bundle_name:
            raise TypeError(f"bundle {bundle!r} and bundle_name {bundle_name!r} disagree; give one of them")
        if version is not None and bundle_version is not None and version != bundle_version:
            raise TypeError(f"version {version!r} and bundle_version {bundle_version!r} disagree; give one of them")
        name = bundle if bundle is not None else bundle_name
        if not name:
            raise TypeError("name the bundle: client.get_dataset('weekly_docs') or bundle_name='weekly_docs'")
        return name, version if version is not None else bundle_version

    # --- API ------------------------------------------------------------------
    def list_bundles(self) -> list[dict[str, Any]]:
        """Resolved bundles: name, versions, latest."""
        return list(self._json("GET", "/api/v1/bundles")["bundles"])

    def get_dataset(
        self, bundle: str | None = None, version: str | None = None, *, bundle_name: str | None = None, bundle_version: str | None = None
    ) -> Dataset:
        """A bundle's manifest (``version`` default: its latest). ``bundle_name``/``bundle_version``: the seed's names."""
        bundle, version = self._name(bundle, bundle_name, version, bundle_version)
        data = self._json("GET", self._path(bundle), params={"version": version} if version else None)
        known = set(ChannelInfo.__dataclass_fields__)
        channels = [ChannelInfo(**{k: v for k, v in c.items() if k in known}) for c in data["data_manifest"]]
        return Dataset(bundle, data["meta"].get("bundle_version"), data["meta"], channels, data.get("access_config") or {})

    def list_page(
        self,
        bundle: str | None = None,
        version: str | None = None,
        channel: str | Sequence[str] | None = None,
        start_time: str | datetime | None = None,
        end_time: str | datetime | None = None,
        prefix: str | None = None,
        limit: int = 1000,
        cursor: str | None = None,
        *,
        bundle_name: str | None = None,
        bundle_version: str | None = None,
        where: str | None = None,
    ) -> FilePage:
        """One page of files (sorted by source, then path); pass ``next_cursor`` back for the next.

        ``where``: a metadata filter (``camera_id == "front"``; see :mod:`kbrelease.trust.where`), checked by the service.
        """
        bundle, version = self._name(bundle, bundle_name, version, bundle_version)
        params = self._params(version, channel, start_time, end_time, prefix, where) | {"limit": limit}
        if cursor:
            params["cursor"] = cursor
        data = self._json("GET", self._path(bundle, "/files"), params=params)
        return FilePage(FileInfo.many(data["files"]), data.get("next_cursor"))

    def iter_files(
        self,
        bundle: str | None = None,
        version: str | None = None,
        channel: str | Sequence[str] | None = None,
        start_time: str | datetime | None = None,
        end_time: str | datetime | None = None,
        prefix: str | None = None,
        page_size: int = 1000,
        *,
        bundle_name: str | None = None,
        bundle_version: str | None = None,
        where: str | None = None,
    ) -> Iterator[FileInfo]:
        """Every matching file, fetching pages as the iteration reaches them."""
        bundle, version = self._name(bundle, bundle_name, version, bundle_version)
        cursor = None
        while True:
            page = self.list_page(bundle, version, channel, start_time, end_time, prefix, page_size, cursor, where=where)
            yield from page.files
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    def list_files(
        self,
        bundle: str | None = None,
        version: str | None = None,
        channel: str | Sequence[str] | None = None,
        start_time: str | datetime | None = None,
        end_time: str | datetime | None = None,
        prefix: str | None = None,
        max_files: int | None = None,
        *,
        bundle_name: str | None = None,
        bundle_version: str | None = None,
        where: str | None = None,
    ) -> list[FileInfo]:
        """Matching files as a list (all pages, or the first ``max_files``). For very large
        results use :meth:`iter_files` or :meth:`stream_data`. ``where`` filters by metadata."""
        bundle, version = self._name(bundle, bundle_name, version, bundle_version)
        out: list[FileInfo] = []
        for info in self.iter_files(bundle, version, channel, start_time, end_time, prefix, where=where):
            if max_files is not None and len(out) >= max_files:
                break
            out.append(info)
        return out

    def stream_data(
        self,
        bundle: str | None = None,
        version: str | None = None,
        batch_size: int = 1000,
        channel: str | Sequence[str] | None = None,
        start_time: str | datetime | None = None,
        end_time: str | datetime | None = None,
        prefix: str | None = None,
        *,
        bundle_name: str | None = None,
        bundle_version: str | None = None,
        where: str | None = None,
        contents: bool = False,
        resume: tuple[str, int] | None = None,
    ) -> Iterator[list[Any]]:
        """Every matching file in batches of ``batch_size``, read from one NDJSON stream as
        the iteration goes (nothing is fetched before the first ``next``).

        ``contents=True`` yields batches of :class:`FileData` instead of :class:`FileInfo`:
        each file's bytes with its record, fetched one batch at a time as the iteration
        reaches it and checked against the record's sha256 while they arrive (a mismatch
        raises :class:`~kbrelease.errors.ServiceError`). ``resume=(file_id, offset)``
        (a :attr:`FileData.position`) starts at that file, its data from byte ``offset``
        (the whole file is still checked), skipping the files before it.
        """
        bundle, version = self._name(bundle, bundle_name, version, bundle_version)
        params = self._params(version, channel, start_time, end_time, prefix, where) | {"batch_size": batch_size}
        if resume is not None and not contents:
            raise TypeError("resume= is for contents=True; a record stream resumes by itself")
        if not contents:
            for batch in self._resumable(bundle, params, "ndjson"):
                yield FileInfo.many(batch)
            return
        yield from self._contents(bundle, version, params, resume)

    def _contents(self, bundle: str, version: str | None, params: dict[str, Any], resume: tuple[str, int] | None) -> Iterator[list[Any]]:
        waiting = resume is not None
        for raw in self._resumable(bundle, params, "ndjson"):
            infos = FileInfo.many(raw)
            offsets: dict[str, int] = {}
            if waiting and resume is not None:
                ids = [i.file_id for i in infos]
                if resume[0] not in ids:
                    continue
                infos = infos[ids.index(resume[0]) :]
                offsets[resume[0]] = max(0, int(resume[1]))
                waiting = False
            got = self._fetch_batch(bundle, version, infos)
            yield [FileData(info, got[info.file_id][offsets.get(info.file_id, 0) :], offsets.get(info.file_id, 0)) for info in infos]
        if waiting and resume is not None:
            raise NotInIndex(f"file {resume[0]!r} to resume at is not among the matching files; resume with the same filters, or start over")

    def _fetch_batch(self, bundle: str, version: str | None, infos: list[FileInfo]) -> dict[str, bytes]:
        """The bytes of ``infos``' files from one tar stream, each hashed while it is read and checked against its record."""
        want = {i.file_id: i for i in infos}
        got: dict[str, bytes] = {}
        failures = 0
        params = {"version": version} if version else None
        while len(got) < len(want):
            todo = [f for f in want if f not in got]
            try:
                with (
                    self._open("POST", self._path(bundle, "/download"), json={"file_ids": todo}, params=params) as response,
                    tarfile.open(fileobj=_IterReader(response.iter_bytes()), mode="r|") as tar,
                ):
                    for member in tar:
                        fid = member.pax_headers.get("KBRELEASE.file_id", "")
                        info = want.get(fid)
                        if info is None or not member.isfile():
                            raise ServiceError(f"the service sent an archive member {member.name[:120]!r} that was not asked for; refusing it")
                        src = tar.extractfile(member)
                        assert src is not None
                        digest = hashlib.sha256()
                        parts = []
                        while block := src.read(1 << 20):
                            digest.update(block)
                            parts.append(block)
                        if digest.hexdigest() != info.checksum:
                            raise ServiceError(
                                f"{info.source}:{info.relative_path}: sha256 {digest.hexdigest()[:12]}… does not match the index ({info.checksum[:12]}…); "
                                "the service's copy changed since the index was made: sync and resolve the bundle again"
                            )
                        got[fid] = b"".join(parts)
                if len(got) < len(want):
                    raise _Broken(f"the archive lacked {len(want) - len(got)} requested file(s)")
            except (httpx.TransportError, _Broken, tarfile.ReadError, EOFError) as exc:
                failures += 1
                if failures > self.retries:
                    raise ServiceUnavailable(
                        f"the file stream from {self.shown_url} kept breaking off ({len(want) - len(got)} file(s) left); retry later"
                    ) from exc
                self._pause(failures - 1)
        return got

    def stream_arrow(
        self,
        bundle: str | None = None,
        version: str | None = None,
        batch_size: int = 10_000,
        channel: str | Sequence[str] | None = None,
        start_time: str | datetime | None = None,
        end_time: str | datetime | None = None,
        prefix: str | None = None,
        *,
        bundle_name: str | None = None,
        bundle_version: str | None = None,
        where: str | None = None,
    ) -> Iterator[Any]:
        """Like :meth:`stream_data`, as ``pyarrow.RecordBatch`` es from an Arrow IPC stream
        (``metadata`` stays JSON text): the fastest way to load an index into Arrow or pandas."""
        bundle, version = self._name(bundle, bundle_name, version, bundle_version)
        params = self._params(version, channel, start_time, end_time, prefix, where) | {"batch_size": batch_size}
        yield from self._resumable(bundle, params, "arrow")

    def _resumable(self, bundle: str, params: dict[str, Any], kind: Literal["ndjson", "arrow"]) -> Iterator[Any]:
        cursor: str | None = None
        failures = 0
        headers = {"Accept": "application/vnd.apache.arrow.stream" if kind == "arrow" else "application/x-ndjson"}
        while True:
            try:
                with self._open("GET", self._path(bundle, "/stream"), params=params | ({"cursor": cursor} if cursor else {}), headers=headers) as response:
                    reader = self._arrow_batches(response) if kind == "arrow" else self._ndjson_batches(response)
                    for batch, batch_cursor in reader:
                        cursor, failures = batch_cursor, 0
                        yield batch
                return
            except (httpx.TransportError, _Broken, OSError) as exc:
                failures += 1
                if failures > self.retries:
                    raise ServiceUnavailable(f"the stream of {bundle!r} from {self.shown_url} kept breaking off ({type(exc).__name__}); retry later") from exc
                self._pause(failures - 1)

    @staticmethod
    def _ndjson_batches(response: httpx.Response) -> Iterator[tuple[list[dict[str, Any]], str]]:
        import orjson

        for line in _lines(response.iter_bytes()):
            if not line:
                continue
            obj = orjson.loads(line)
            if obj.get("done"):
                return
            yield obj["records"], obj["cursor"]
        raise _Broken("the stream ended without its end marker")

    @staticmethod
    def _arrow_batches(response: httpx.Response) -> Iterator[tuple[Any, str]]:
        import pyarrow as pa

        try:
            reader = pa.ipc.open_stream(_IterReader(response.iter_bytes()))
            while True:
                try:
                    batch, meta = reader.read_next_batch_with_custom_metadata()
                except StopIteration:
                    return
                yield batch, (meta or {}).get(b"cursor", b"").decode()
        except pa.ArrowInvalid as exc:
            raise _Broken(str(exc)) from exc

    def download(self, bundle: str, file_ids: Sequence[str], dest: str | Path, version: str | None = None) -> DownloadResult:
        """Download files into ``dest/<source>/<relative_path>``, each written via a temporary file
        and kept only when its sha256 matches the index. Unpacked from the stream as it arrives."""
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        todo = list(dict.fromkeys(file_ids))
        written: list[Path] = []
        total = 0
        failures = 0
        params = {"version": version} if version else None
        while todo:
            try:
                with (
                    self._open("POST", self._path(bundle, "/download"), json={"file_ids": todo}, params=params) as response,
                    tarfile.open(fileobj=_IterReader(response.iter_bytes()), mode="r|") as tar,
                ):
                    for member in tar:
                        path, size = self._unpack(tar, member, dest)
                        written.append(path)
                        total += size
                        done = member.pax_headers.get("KBRELEASE.file_id")
                        todo = [f for f in todo if f != done]
                if todo:
                    raise _Broken(f"the archive lacked {len(todo)} requested file(s)")
            except (httpx.TransportError, _Broken, tarfile.ReadError, EOFError) as exc:
                failures += 1
                if failures > self.retries:
                    raise ServiceUnavailable(f"the download from {self.shown_url} kept breaking off ({len(todo)} file(s) left); retry later") from exc
                self._pause(failures - 1)
        return DownloadResult(written, total)

    @staticmethod
    def _unpack(tar: tarfile.TarFile, member: tarfile.TarInfo, dest: Path) -> tuple[Path, int]:
        from kbrelease.errors import UnsafePath
        from kbrelease.trust.paths import contained

        if not member.isfile():
            raise ServiceError(f"the service sent an archive member {member.name!r} that is not a regular file (a link or device); refusing it")
        try:
            target = contained(dest, member.name, "archive member")
            target.parent.mkdir(parents=True, exist_ok=True)
            contained(dest, member.name, "archive member")  # a link planted in dest while the folders were made
        except UnsafePath as exc:
            raise ServiceError(f"the service sent an unsafe archive member: {exc}") from None
        expected = plain_checksum(member.pax_headers.get("KBRELEASE.sha256", ""))
        tmp = target.with_name(f".{target.name}.part-{os.getpid()}")
        digest = hashlib.sha256()
        src = tar.extractfile(member)
        assert src is not None
        try:
            with tmp.open("wb") as out:
                for block in iter(lambda: src.read(1 << 20), b""):
                    digest.update(block)
                    out.write(block)
            if expected and digest.hexdigest() != expected:
                raise ServiceError(f"{member.name}: sha256 {digest.hexdigest()[:12]}… does not match the index ({expected[:12]}…); download it again")
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        return target, member.size
