"""Where the pipeline keeps its runtime state.

Everything a run creates (Dagster home, artifact store, ledger, keys, MLflow
store, DVC remote, landing zone) lives under one folder so that `make clean`
resets it. The folder is `$PIPELINE_HOME`, or `.runtime/` at the repository
root when that is unset.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def runtime_home() -> Path:
    """The runtime folder, created owner-only on first use."""
    home = Path(os.environ.get("PIPELINE_HOME") or REPO_ROOT / ".runtime")
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    return home


def runtime_path(*parts: str) -> Path:
    """A folder under the runtime home, created owner-only on first use."""
    path = runtime_home()
    for part in parts:
        path = path / part
        path.mkdir(mode=0o700, exist_ok=True)
    return path
