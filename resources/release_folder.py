"""Published model releases: signed, versioned, read-only.

Promotion publishes a signed model directory as `<root>/<model>/v<version>/`
(files 0444, folder 0555) and moves `<root>/<model>/current.json` to it with
an atomic rename. Nothing here decides trust: whoever can write this folder
can delete, rename or re-point releases, so the keys servers trust and the
newest release on record come from the operator's trust store
(`resources.trust_store`), and a release that disagrees with it is refused.
No Dagster here: the model servers read releases with this class.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from resources.atomic import atomic_write_bytes


@dataclass(frozen=True)
class ReleaseFolder:
    """The releases published under `root`."""

    root: Path

    def versions(self, model: str) -> list[int]:
        folder = self.root / model
        return sorted(int(p.name[1:]) for p in folder.glob("v*") if p.name[1:].isdigit())

    def next_version(self, model: str) -> int:
        return (self.versions(model) or [0])[-1] + 1

    def current(self, model: str) -> Path | None:
        pointer = self.root / model / "current.json"
        if not pointer.exists():
            return None
        return self.root / model / f"v{json.loads(pointer.read_text())['version']}"

    def publish(self, model: str, signed_dir: Path, version: int) -> Path:
        """Copy a signed directory to `v<version>` read-only, then point `current` at it."""
        target = self.root / model / f"v{version}"
        if target.exists():
            raise FileExistsError(f"Release {model} v{version} exists already; versions are never reused.")
        staging = target.with_name(f".{target.name}.staging")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(signed_dir, staging)
        for file in staging.iterdir():
            file.chmod(0o444)
        staging.chmod(0o555)
        os.replace(staging, target)
        atomic_write_bytes(self.root / model / "current.json", json.dumps({"version": version}).encode())
        return target
