"""Check factories for stored-artifact integrity and provenance."""

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetKey,
    asset_check,
)

from resources.integrity import IntegrityLedger
from resources.store import ArtifactStore


def stored_digest_check(key: AssetKey) -> AssetChecksDefinition:
    """Blocking check that the bytes at rest still match the ledger after the write."""

    @asset_check(asset=key, name="stored_digest_matches_ledger", blocking=True)
    def stored_digest_matches_ledger(
        context: AssetCheckExecutionContext, ledger: IntegrityLedger, store: ArtifactStore
    ) -> AssetCheckResult:
        """Re-hashes the stored artifact: catches tampering between write and use."""
        entry = ledger.latest(key.to_user_string())
        if entry is None:
            return AssetCheckResult(passed=False, description="no ledger entry for this asset")
        found = store.stored_digest(entry.path, entry.stored_digest.split(":", 1)[0])
        return AssetCheckResult(
            passed=found == entry.stored_digest,
            severity=AssetCheckSeverity.ERROR,
            metadata={
                "path": entry.path,
                "expected": entry.stored_digest,
                "found": found,
                "ledger_seq": entry.seq,
            },
        )

    return stored_digest_matches_ledger


def provenance_check(key: AssetKey, inputs: list[AssetKey]) -> AssetChecksDefinition:
    """Blocking check that the ledger names the exact inputs, code and revision behind the asset."""

    @asset_check(asset=key, name="provenance_recorded", blocking=True)
    def provenance_recorded(context: AssetCheckExecutionContext, ledger: IntegrityLedger) -> AssetCheckResult:
        """Every artifact must be traceable to its inputs' digests and its code version."""
        entry = ledger.latest(key.to_user_string())
        missing = [
            k.to_user_string() for k in inputs if k.to_user_string() not in (entry.inputs if entry else {})
        ]
        ok = entry is not None and not missing and bool(entry.code_version) and bool(entry.git_revision)
        return AssetCheckResult(
            passed=ok,
            severity=AssetCheckSeverity.ERROR,
            metadata={
                "ledger_seq": entry.seq if entry else 0,
                "code_version": entry.code_version if entry else "",
                "git_revision": entry.git_revision if entry else "",
                "missing_inputs": ", ".join(missing),
            },
        )

    return provenance_recorded
