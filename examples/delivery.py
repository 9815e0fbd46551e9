"""Deliver a window into a landing zone whole, as a source's delivery agent would."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from resources.sources import MANIFEST_SUFFIX


@contextmanager
def staged_delivery(home: Path, landing: Path) -> Iterator[Path]:
    """A staging folder to prepare batches in; on a clean exit they are moved into `landing` whole.

    Data moves before manifests, so a sensor watching the landing zone never sees a window half
    written (nor, for an attack, its clean batches before the rewrite). The staging folder is on
    the same disk as the landing zone, so every move is a rename.
    """
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=home))
    try:
        yield staging
        files = sorted(
            (path for path in staging.rglob("*") if path.is_file()),
            key=lambda path: path.name.endswith(MANIFEST_SUFFIX),
        )
        for file in files:
            target = landing / file.relative_to(staging)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(file, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
