"""A pipeline instance of one example over its own runtime folder, and reading what its runs did.

Tests and the attack lab mount attacks by changing what the sources land
(or what sits in the store) and then run the same Dagster jobs `make demo`
runs, on an instance of their own.
"""

from __future__ import annotations

import io
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import pandas as pd
import pyarrow.parquet as pq
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from dagster import AssetKey, DagsterInstance, Definitions, ExecuteInProcessResult, JobDefinition

from pipelines.approve_code import approved_transforms
from pipelines.operator import operator_key
from resources.code_approval import sign_code_manifest
from resources.integrity import IntegrityLedger
from resources.keys import held_signing_key
from resources.store import ArtifactStore
from resources.trust_store import TrustStore


def trust_folder(home: Path) -> Path:
    """Where the instance over `home` keeps its operator trust store."""
    return home.with_name(f"{home.name}-trust")


def operator_key_file(home: Path) -> Path:
    """Where the instance over `home` keeps its operator's signing key."""
    return home.with_name(f"{home.name}-operator.key")


def reviewers_folder(home: Path) -> Path:
    """Where the instance over `home` keeps its reviewers' keys, one per approval power."""
    return home.with_name(f"{home.name}-reviewers")


@dataclass
class PipelineInstance:
    """One example's definitions, resolved over `home`, with an ephemeral Dagster instance.

    Every run is kept in `runs`. Checks named in `switched_off` ("asset:check")
    are left out of every run: the attack lab uses it to show what an attack
    does when a control is missing. Runs log at `log_level` and above (the lab
    expects failures and keeps them out of the console).
    """

    example: ClassVar[str]
    baseline_key: ClassVar[AssetKey]

    home: Path
    seed: int = 7
    switched_off: Collection[str] = ()
    log_level: str = "ERROR"
    instance: DagsterInstance = field(default_factory=DagsterInstance.ephemeral)
    defs: Definitions | None = None
    runs: list[ExecuteInProcessResult] = field(default_factory=list)

    @property
    def trust(self) -> TrustStore:
        """This instance's operator trust store: beside its runtime home, never inside it."""
        return TrustStore(trust_folder(self.home))

    def trust_release_key(self) -> None:
        """The operator's act: list this instance's release public key in its trust store."""
        self._operator_key()
        self.trust.trust_release_key(self.defs.resources["signer"].public_key_pem(), operator="examples")

    def _operator_key(self) -> Ed25519PrivateKey:
        return operator_key(operator_key_file(self.home), self.trust)

    def reviewer_key(self, power: str) -> Ed25519PrivateKey:
        """The reviewer's own key for `power` (beside the home, never in the pipeline's keyset), which
        the operator lists as an approver of that power: the demo's one person in every role."""
        key = held_signing_key(reviewers_folder(self.home) / f"{power}-approval.key")
        self.trust.trust_approver_key(power, key.public_key(), "examples", self._operator_key())
        return key

    def approve_code(self) -> None:
        """The reviewer's act: sign the current transformation code (what `make approve-code` does)."""
        manifest = sign_code_manifest(approved_transforms(), "examples", self.reviewer_key("code"))
        self.defs.resources["approvals"].record(manifest)

    def acknowledge_alarms(self, note: str) -> int:
        """The operator's act: clear every open alarm with a signed acknowledgement; returns how many."""
        alarms = self.trust.open_alarms()
        for alarm in alarms:
            self.trust.acknowledge(alarm.alarm_id, "examples", self._operator_key(), note)
        return len(alarms)

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

    def run(
        self, job: str, *, defs: Definitions | None = None, assets: list[str] | None = None
    ) -> ExecuteInProcessResult:
        """Run a job of `defs` (default: this instance's), or only `assets` of it with their checks."""
        job_def = (defs or self.defs).resolve_job_def(job)
        selected = {AssetKey.from_user_string(a) for a in assets} if assets else None
        if selected or self.switched_off:
            job_def = self._subset(job_def, selected)
        logging = {"loggers": {"console": {"config": {"log_level": self.log_level}}}}
        result = job_def.execute_in_process(instance=self.instance, raise_on_error=False, run_config=logging)
        self.runs.append(result)
        return result

    def _subset(self, job: JobDefinition, assets: set[AssetKey] | None) -> JobDefinition:
        job_assets = set(job.asset_layer.selected_asset_keys)
        job_checks = job.asset_check_selection
        if job_checks is None:
            job_checks = set(job.asset_layer.asset_graph.asset_check_keys)
        if assets:
            job_assets, job_checks = assets, {k for k in job_checks if k.asset_key in assets}
        kept = {k for k in job_checks if f"{k.asset_key.path[-1]}:{k.name}" not in self.switched_off}
        return job.get_subset(asset_selection=job_assets, asset_check_selection=kept)

    def baseline(self) -> None:
        """Materialise the trusted baseline from the reference window, once."""
        if self.instance.get_latest_materialization_event(self.baseline_key) is None:
            assert self.run(f"{self.example}_baseline").success, "the clean baseline failed"

    def lifecycle(self) -> ExecuteInProcessResult:
        """The baseline (once) and then the lifecycle job, as `make demo` runs them."""
        self.baseline()
        return self.run(f"{self.example}_lifecycle")

    def run_selection(self, assets: list[str]) -> ExecuteInProcessResult:
        """Part of the lifecycle job (with the selected assets' checks), after the baseline."""
        self.baseline()
        return self.run(f"{self.example}_lifecycle", assets=assets)


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
