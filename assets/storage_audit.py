"""The integrity audit: re-hash every stored artifact and walk the ledger chain.

Loads already verify digests, but only for what gets loaded. The audit,
run on a schedule, covers everything at rest, including quarantines and
artifacts nobody has read since, and detects a rewritten or truncated
ledger history. It needs no data key: it hashes ciphertext.
"""

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    MetadataValue,
    asset,
    asset_check,
)

from assets.checks.evidence import materialization_metadata
from resources.integrity import IntegrityLedger
from resources.store import ArtifactStore

OWNER = "team:security"


def integrity_audit(example: str) -> tuple[AssetsDefinition, list[AssetChecksDefinition]]:
    """The audit asset for one example's artifacts, and its blocking checks."""
    key = AssetKey([example, "integrity_audit"])

    @asset(
        key=key,
        group_name="storage",
        io_manager_key="json_io_manager",
        kinds={"python", "json"},
        owners=[OWNER],
    )
    def audit(context: AssetExecutionContext, ledger: IntegrityLedger, store: ArtifactStore) -> dict:
        """Re-hashes every stored artifact against the ledger and verifies the ledger chain.

        Protects against unauthorised changes at rest (edited tables, swapped
        models) and against rewriting provenance history to hide them.
        """
        previous = materialization_metadata(context, key)
        anchor = (previous["head_seq"], previous["head_mac"]) if "head_seq" in previous else None
        chain = ledger.verify_chain(anchor)
        mismatched, missing, checked = [], [], 0
        for entry in ledger.latest_per_path():
            if not entry.subject.startswith(f"{example}/"):
                continue
            checked += 1
            if not store.exists(entry.path):
                missing.append(entry.path)
            elif store.stored_digest(entry.path, entry.stored_digest.split(":", 1)[0]) != entry.stored_digest:
                mismatched.append(entry.path)
        report = {
            "artifacts_checked": checked,
            "mismatched": mismatched,
            "missing": missing,
            "chain_ok": chain.ok,
            "chain_entries": chain.entries,
            "chain_problems": chain.problems,
        }
        context.add_output_metadata(
            {
                "artifacts_checked": checked,
                "mismatched": len(mismatched),
                "missing": len(missing),
                "chain_ok": chain.ok,
                "head_seq": chain.head_seq,
                "head_mac": chain.head_mac,
                "findings": MetadataValue.json(report),
            }
        )
        return report

    @asset_check(asset=key, name="store_matches_ledger", blocking=True)
    def store_matches_ledger(context: AssetCheckExecutionContext) -> AssetCheckResult:
        """Every stored artifact's bytes still hash to what the ledger recorded."""
        findings = materialization_metadata(context, key).get("findings", {})
        bad = findings.get("mismatched", []) + findings.get("missing", [])
        return AssetCheckResult(
            passed=bool(findings) and not bad,
            severity=AssetCheckSeverity.ERROR,
            metadata={
                "checked": findings.get("artifacts_checked", 0),
                "changed_or_missing": MetadataValue.json(bad),
            },
        )

    @asset_check(asset=key, name="ledger_chain_intact", blocking=True)
    def ledger_chain_intact(context: AssetCheckExecutionContext) -> AssetCheckResult:
        """No ledger entry was edited, reordered or deleted since it was written."""
        findings = materialization_metadata(context, key).get("findings", {})
        return AssetCheckResult(
            passed=bool(findings.get("chain_ok")),
            severity=AssetCheckSeverity.ERROR,
            metadata={
                "entries": findings.get("chain_entries", 0),
                "problems": MetadataValue.json(findings.get("chain_problems", [])),
            },
        )

    return audit, [store_matches_ledger, ledger_chain_intact]
