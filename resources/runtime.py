"""Where the pipeline keeps its runtime state, passed explicitly to whatever needs it.

Everything a run creates (Dagster home, artifact store, ledger, keys, MLflow
store, DVC remote, landing zone) lives under one folder so that `make clean`
resets it. Code receives a `RuntimeHome`; only entry points (a code
location, a server factory, a command) build one from the environment, with
`RuntimeHome.from_environment()`: `$PIPELINE_HOME`, or `.runtime/` at the
repository root when that is unset.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class RuntimeHome:
    """One pipeline's runtime folder."""

    root: Path

    @classmethod
    def from_environment(cls) -> RuntimeHome:
        """The home an entry point runs over: `$PIPELINE_HOME`, else `.runtime/` in the repository."""
        return cls(Path(os.environ.get("PIPELINE_HOME") or REPO_ROOT / ".runtime"))

    def path(self, *parts: str) -> Path:
        """A folder under the home, created owner-only on first use."""
        path = self.root
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        for part in parts:
            path = path / part
            path.mkdir(mode=0o700, exist_ok=True)
        return path
