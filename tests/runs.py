"""Reading what a Dagster run did: which checks passed, what materialised, with what metadata."""

from __future__ import annotations

import io

import pandas as pd
import pyarrow.parquet as pq
from dagster import Definitions, ExecuteInProcessResult

from resources.integrity import IntegrityLedger
from resources.store import ArtifactStore


class StoredArtifacts:
    """What a test pipeline instance (with `defs`) wrote: its ledger, its store, its tables."""

    defs: Definitions

    @property
    def ledger(self) -> IntegrityLedger:
        return self.defs.resources["ledger"]

    @property
    def store(self) -> ArtifactStore:
        return self.defs.resources["store"]

    def stored_table(self, subject: str, kind: str = "artifact") -> pd.DataFrame:
        """The newest stored version of a table, verified and decrypted."""
        entry = self.ledger.latest(subject, kind=kind)
        data = self.store.read_verified(entry.path, digest=entry.digest, stored_digest=entry.stored_digest)
        return pq.read_table(io.BytesIO(data)).to_pandas()


def checks(result: ExecuteInProcessResult) -> dict[str, bool]:
    """Check name (asset/check) → passed, for every check evaluated in the run."""
    return {f"{e.asset_key.path[-1]}:{e.check_name}": e.passed for e in result.get_asset_check_evaluations()}


def materialized(result: ExecuteInProcessResult) -> set[str]:
    return {e.asset_key.path[-1] for e in result.get_asset_materialization_events()}


def metadata(result: ExecuteInProcessResult, asset: str) -> dict:
    for event in result.get_asset_materialization_events():
        if event.asset_key.path[-1] == asset:
            return {k: v.value for k, v in event.materialization.metadata.items()}
    raise KeyError(asset)
