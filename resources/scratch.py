"""A private, per-run scratch folder for plaintext that must touch local disk.

Spark cannot read the store's encrypted files, so a Spark stage works on
verified plaintext copies here. The folder is owner-only and removed when the
run's resources are torn down, so plaintext never outlives the run that
needed it.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from dagster import ConfigurableResource, InitResourceContext
from pydantic import PrivateAttr


class ScratchSpace(ConfigurableResource):
    """Owner-only temporary folder for one run (or one step, under multiprocess)."""

    root: str

    _folder: Path | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: InitResourceContext) -> None:
        self._folder = self._make(prefix=f"{context.run_id or 'adhoc'}-")

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None

    def _make(self, prefix: str) -> Path:
        root = Path(self.root)
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=prefix, dir=root))  # mkdtemp makes it 0700

    def path(self, name: str) -> Path:
        """A path for `name` inside this run's folder (the folder is made on first use)."""
        if self._folder is None:
            self._folder = self._make(prefix="adhoc-")
        return self._folder / name
