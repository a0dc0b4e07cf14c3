"""Release packages: export a release to one checksummed archive, import it elsewhere, promote.

See :mod:`kbrelease.package.format` for the layout.
"""

from __future__ import annotations

from kbrelease.package.export import ExportInfo
from kbrelease.package.importer import ImportInfo

__all__ = ["ExportInfo", "ImportInfo"]
