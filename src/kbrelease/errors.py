"""The kbrelease error tree.

Every error a user can meet is a :class:`KbReleaseError`; its message says what
went wrong, with context (source, file, release, collection), and ends with the
fix. Foreign errors (boto, s3fs, pymilvus, httpx) are translated once, at the
adapter that calls them, with ``raise ... from exc``.

::

    KbReleaseError
    ├── ConfigError              bad or missing configuration (permanent)
    │   └── QueryError           a search that cannot be answered as asked (unknown source, modality)
    │       └── InvalidName      a release, source, bundle ... name that breaks its grammar
    ├── SourceError              a source cannot be listed or read
    │   ├── SourceUnreachable    network/endpoint down (transient)
    │   └── FileChanged          the workspace copy of a file no longer matches a release
    ├── InputFileError           one input file cannot be used (reported, not fatal)
    │   └── ImageTooLarge        over the size or pixel limit (a likely decompression bomb)
    ├── EmbeddingError           an embedder failed or returned bad vectors
    │   └── EmbeddingUnavailable endpoint down / rate limited after retries (transient)
    ├── StoreError               the vector store refused an operation
    │   └── StoreUnreachable     Milvus cannot be reached (transient)
    ├── ReleaseError             release lifecycle rule broken (wrong state)
    │   ├── UnknownRelease       no release of that name in the environment
    │   ├── UnknownFile          no file of that id in a release's data index
    │   ├── NoLiveRelease        nothing is live yet in the environment
    │   ├── VerificationError    a release that failed verification
    │   ├── ReadOnlyRelease      a write through a reader (LangChain, LlamaIndex): releases are built by publish
    │   └── LockBusy             the environment lock is held and --no-wait was given (transient)
    ├── DataIndexError           bad bundle spec or data-index query (HTTP 400)
    │   └── NotInIndex           unknown bundle, version, release index or file id (HTTP 404)
    ├── ServiceError             the kbrelease HTTP service answered with an error (client side)
    │   ├── AuthenticationError  missing or wrong API token (HTTP 401/403)
    │   └── ServiceUnavailable   unreachable, or 5xx/429 after retries (transient)
    ├── UnsafePath               a path from untrusted input that could leave its folder
    ├── PackageError             a release package is damaged or unsafe (checksum,
    │   │                        truncated, path outside the archive, link)
    │   └── SignatureError       unsigned where signatures are required, or a bad or untrusted signature
    └── CompatibilityError       a manifest, package or service of a newer version,
                                 or vectors of another embedding model (a release
                                 built with another model than the one configured)

The HTTP service maps these classes to statuses in one table
(``kbrelease.service.errors``).

``transient`` is True where retrying later may succeed.
"""

from __future__ import annotations


class KbReleaseError(Exception):
    """Root of every kbrelease error. ``exit_code`` is used by the CLI."""

    transient: bool = False
    exit_code: int = 1


class ConfigError(KbReleaseError):
    """The configuration is invalid or incomplete; the message names the key."""

    exit_code = 2


class QueryError(ConfigError):
    """A search cannot be answered as asked: unknown source, a modality the model cannot embed."""


class InvalidName(QueryError):
    """A name that does not follow its grammar (a ConfigError: exit code 2; over HTTP a 400, as a QueryError)."""


class SourceError(KbReleaseError):
    """A source cannot be listed or read."""


class SourceUnreachable(SourceError):
    """A source endpoint cannot be reached."""

    transient = True


class FileChanged(SourceError):
    """The workspace copy of a file no longer matches the checksum a release recorded."""


class InputFileError(KbReleaseError):
    """One input file cannot be used. Recorded in the build summary, not fatal."""

    def __init__(self, reason: str, path: str = "") -> None:
        super().__init__(f"{path}: {reason}" if path else reason)
        self.reason = reason
        self.path = path


class ImageTooLarge(InputFileError):
    """An image over the byte or pixel limit (a likely decompression bomb)."""


class EmbeddingError(KbReleaseError):
    """An embedder failed or returned vectors of the wrong shape."""


class EmbeddingUnavailable(EmbeddingError):
    """The embedding endpoint stayed unavailable after retries."""

    transient = True


class StoreError(KbReleaseError):
    """The vector store refused an operation."""


class StoreUnreachable(StoreError):
    """The vector store cannot be reached."""

    transient = True
    reconnected: bool = False
    """Set by the store when it dropped its connections after this error, so one more try may reach a restarted server."""


class ReleaseError(KbReleaseError):
    """A release lifecycle rule was broken (unknown release, wrong state)."""


class UnknownRelease(ReleaseError):
    """No release of that name exists in the environment."""


class UnknownFile(ReleaseError):
    """No file of that id in a release's data index."""


class ReadOnlyRelease(ReleaseError):
    """A write through a release reader (the LangChain / LlamaIndex integrations): releases are built by ``kbrelease publish``."""


class NoLiveRelease(ReleaseError):
    """Nothing is live yet in the environment."""


class VerificationError(ReleaseError):
    """A release failed verification and cannot go live."""

    exit_code = 3


class LockBusy(ReleaseError):
    """The environment lock is held by another command and ``--no-wait`` was given (retry later)."""

    transient = True


class UnsafePath(KbReleaseError):
    """A path from untrusted input that could name something outside its root."""

    exit_code = 4


class DataIndexError(KbReleaseError):
    """A bundle spec, a data index or a query over it is wrong; the message names the field."""

    exit_code = 2


class NotInIndex(DataIndexError):
    """A bundle, bundle version, release index or file id that does not exist."""

    exit_code = 1


class ServiceError(KbReleaseError):
    """The kbrelease service answered with an error. ``status`` is the HTTP status (0 if none)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class AuthenticationError(ServiceError):
    """The service refused the API token (or none was sent)."""


class ServiceUnavailable(ServiceError):
    """The service could not be reached, or kept answering 5xx/429, after retries."""

    transient = True


class PackageError(KbReleaseError):
    """A release package is damaged, truncated or unsafe; nothing was written."""

    exit_code = 4


class SignatureError(PackageError):
    """A package is unsigned where trusted keys are configured, or its signature is bad or by an untrusted key."""


class CompatibilityError(KbReleaseError):
    """A manifest, package or service this kbrelease cannot use as is (newer version, other model)."""

    exit_code = 5


__all__ = [
    "AuthenticationError",
    "CompatibilityError",
    "ConfigError",
    "DataIndexError",
    "EmbeddingError",
    "EmbeddingUnavailable",
    "FileChanged",
    "ImageTooLarge",
    "InputFileError",
    "InvalidName",
    "KbReleaseError",
    "LockBusy",
    "NoLiveRelease",
    "NotInIndex",
    "PackageError",
    "QueryError",
    "ReleaseError",
    "ServiceError",
    "ServiceUnavailable",
    "SignatureError",
    "SourceError",
    "SourceUnreachable",
    "StoreError",
    "StoreUnreachable",
    "UnknownFile",
    "UnknownRelease",
    "UnsafePath",
    "VerificationError",
]
