"""Fixed folder names inside the workspace (one place, so no stage guesses)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Workspace:
    root: Path

    def mirror(self, source: str) -> Path:
        """Local copy of a source's files, as of the last sync."""
        return self.root / "mirror" / source

    @property
    def index_dir(self) -> Path:
        """The current data index (``bundle.yaml`` + one Parquet per source)."""
        return self.root / "index"

    def release_dir(self, release: str) -> Path:
        """Build journal, frozen data index and full manifest of one release."""
        return self.root / "releases" / release

    def bundle_dir(self, name: str) -> Path:
        """Resolved data indexes of one bundle spec, one folder per bundle version."""
        return self.root / "bundles" / name

    @property
    def state_dir(self) -> Path:
        """Small state files: last successful sync per source, open monitor incidents."""
        return self.root / "state"

    @property
    def milvus_dir(self) -> Path:
        """Data folder of the embedded Milvus Lite store."""
        return self.root / "milvus"
