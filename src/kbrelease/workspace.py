"""Fixed folder names inside the workspace (one place, so no stage guesses)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kbrelease.config import Config


@dataclass(frozen=True)
class Workspace:
    root: Path
    environment: str = "default"
    """Release folders are per environment: ``v3`` of dev and ``v3`` of prod are different releases."""

    @classmethod
    def of(cls, cfg: Config) -> Workspace:
        """The workspace of a configuration, with its selected environment."""
        return cls(cfg.workspace, cfg.environment)

    def mirror(self, source: str) -> Path:
        """Local copy of a source's files, as of the last sync."""
        return self.root / "mirror" / source

    @property
    def index_dir(self) -> Path:
        """The current data index (``bundle.yaml`` + one Parquet per source)."""
        return self.root / "index"

    @property
    def releases_dir(self) -> Path:
        """The folder of this environment's release folders."""
        if self.environment == "default":
            return self.root / "releases"
        return self.root / "envs" / self.environment / "releases"

    def release_dir(self, release: str) -> Path:
        """Build journal, frozen data index and full manifest of one release of this environment."""
        return self.releases_dir / release

    def release_index(self, release: str) -> Path:
        """The data index frozen into a release when its build began (``bundle.yaml`` + one Parquet per source)."""
        return self.release_dir(release) / "index"

    def bundle_dir(self, name: str) -> Path:
        """Resolved data indexes of one bundle spec, one folder per bundle version."""
        return self.root / "bundles" / name

    @property
    def state_dir(self) -> Path:
        """Small state files: last successful sync per source, open monitor incidents."""
        return self.root / "state"

    @property
    def tmp_dir(self) -> Path:
        """Scratch space (a package read from a pipe is spooled here)."""
        return self.root / "tmp"
