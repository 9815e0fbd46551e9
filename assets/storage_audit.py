"""The integrity audit: re-hash every stored artifact and walk the ledger chain.

Loads already verify digests, but only for what gets loaded. The audit,
run on a schedule, covers everything at rest, including quarantines and
artifacts nobody has read since, and detects a rewritten or truncated
ledger history. It needs no data key: it hashes ciphertext.
"""

from dataclasses import asdict, dataclass

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    MetadataValue,
    ResourceParam,
    asset,
    asset_check,
)

from assets.checks.evidence import materialization_metadata
from resources.integrity import IntegrityLedger
from resources.store import ArtifactStore
from resources.trust_store import TrustStore

OWNER = "team:security"


@dataclass(frozen=True)
class AuditFindings:
    """What the audit found (metadata `findings`), read back by its two checks."""

    artifacts_checked: int
    mismatched: list[str]
    missing: list[str]
    chain_ok: bool
    chain_entries: int
    chain_problems: list[str]  # open ledger alarms: raised by this audit or an earlier one, not acknowledged
    store_alarms: list[str]

    @classmethod
    def recorded(cls, context: AssetCheckExecutionContext, key: AssetKey) -> "AuditFindings":
        findings = materialization_metadata(context, key).get("findings")
        if findings is None:
            raise LookupError(f"{key.to_user_string()} recorded no findings: run the audit first")
        return cls(**findings)


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
    def audit(
        context: AssetExecutionContext,
        ledger: IntegrityLedger,
        store: ArtifactStore,
        trust_store: ResourceParam[TrustStore],
    ) -> dict:
        """Re-hashes every stored artifact against the ledger and verifies the ledger chain.

        Protects against unauthorised changes at rest (edited tables, swapped
        models) and against rewriting provenance history to hide them: the
        chain is held against every head the operator's witness saw, never
        against anything kept in the Dagster home. Whatever it finds raises an
        alarm in the trust store that stays raised, failing every later audit,
        until an operator acknowledges it with a signature.
        """
        chain = ledger.verify_chain()
        mismatched, missing, checked = [], [], 0
        for entry in ledger.latest_per_path():
            if not entry.subject.startswith(f"{example}/"):
                continue
            checked += 1
            if not store.exists(entry.path):
                missing.append(entry.path)
            elif store.stored_digest(entry.path, entry.stored_digest.split(":", 1)[0]) != entry.stored_digest:
                mismatched.append(entry.path)
        raised = {alarm.reason for alarm in trust_store.open_alarms()}
        for subject, problems in (
            (f"{example}/ledger", chain.problems),
            (f"{example}/store", mismatched + missing),
        ):
            for problem in problems:
                if f"{subject}: {problem}" not in raised:
                    trust_store.raise_alarm(subject, f"{subject}: {problem}")
        alarms = {
            subject: [a.reason for a in trust_store.open_alarms(subject)]
            for subject in (f"{example}/ledger", f"{example}/store")
        }
        findings = AuditFindings(
            checked,
            mismatched,
            missing,
            chain.ok and not alarms[f"{example}/ledger"],
            chain.entries,
            alarms[f"{example}/ledger"],
            alarms[f"{example}/store"],
        )
        context.add_output_metadata(
            {
                "artifacts_checked": checked,
                "mismatched": len(mismatched),
                "missing": len(missing),
                "chain_ok": chain.ok,
                "head_seq": chain.head_seq,
                "findings": MetadataValue.json(asdict(findings)),
            }
        )
        return asdict(findings)

    @asset_check(asset=key, name="store_matches_ledger", blocking=True)
    def store_matches_ledger(context: AssetCheckExecutionContext) -> AssetCheckResult:
        """Every stored artifact's bytes still hash to what the ledger recorded."""
        findings = AuditFindings.recorded(context, key)
        bad = findings.mismatched + findings.missing
        return AssetCheckResult(
            passed=not bad and not findings.store_alarms,
            severity=AssetCheckSeverity.ERROR,
            metadata={
                "checked": findings.artifacts_checked,
                "changed_or_missing": MetadataValue.json(bad),
                "open_alarms": MetadataValue.json(findings.store_alarms),
            },
        )

    @asset_check(asset=key, name="ledger_chain_intact", blocking=True)
    def ledger_chain_intact(context: AssetCheckExecutionContext) -> AssetCheckResult:
        """No ledger entry was edited, reordered or deleted since the witness saw it.

        Fails while any ledger alarm is open: truncating the ledger again, or
        restoring it, cannot make a later audit pass; only an operator's signed
        acknowledgement (`make acknowledge-alarm`) clears it.
        """
        findings = AuditFindings.recorded(context, key)
        return AssetCheckResult(
            passed=findings.chain_ok,
            severity=AssetCheckSeverity.ERROR,
            metadata={
                "entries": findings.chain_entries,
                "problems": MetadataValue.json(findings.chain_problems),
            },
        )

    return audit, [store_matches_ledger, ledger_chain_intact]
