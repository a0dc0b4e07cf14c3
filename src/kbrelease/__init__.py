"""kbrelease: publish knowledge bases into Milvus like software releases.

The public API is this short list; everything else is internal.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

from kbrelease.errors import (
    CompatibilityError,
    ConfigError,
    EmbeddingError,
    KbReleaseError,
    PackageError,
    ReleaseError,
    SourceError,
    StoreError,
    VerificationError,
)

if TYPE_CHECKING:
    from kbrelease.api import KbRelease, PublishInfo
    from kbrelease.config import Config, load_config

__all__ = [
    "CompatibilityError",
    "Config",
    "ConfigError",
    "EmbeddingError",
    "KbRelease",
    "KbReleaseError",
    "PackageError",
    "PublishInfo",
    "ReleaseError",
    "SourceError",
    "StoreError",
    "VerificationError",
    "__version__",
    "load_config",
]

_LAZY = {
    "KbRelease": "kbrelease.api",
    "PublishInfo": "kbrelease.api",
    "Config": "kbrelease.config",
    "load_config": "kbrelease.config",
}


def __getattr__(name: str) -> Any:
    # Keep `import kbrelease` (and so `kbrelease --help`) light: pydantic,
    # pymilvus and torch load only when the facade is used.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'kbrelease' has no attribute {name!r}")
