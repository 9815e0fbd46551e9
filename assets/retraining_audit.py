"""The retraining audit, shared by every example: which data and code made each release, who signed it.

`retraining_audit(example, champion, model, training_set)` builds the audit
asset and its blocking check for one example's asset keys.
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
    ResourceParam,
    asset,
    asset_check,
)

from resources.integrity import IntegrityLedger, LedgerEntry
from resources.signing import key_fingerprint
from resources.trust_store import TrustStore


def _producer(ledger: IntegrityLedger, subject: str, digest: str) -> LedgerEntry | None:
    """The ledger entry that wrote `subject` with this digest."""
    return next(
        (e for e in ledger.entries(kind="artifact") if e.subject == subject and e.digest == digest), None
    )


def lineage(
    ledger: IntegrityLedger, release: LedgerEntry, model_key: AssetKey, training_key: AssetKey
) -> dict:
    """Release → model → training set → its inputs, each by digest, with code and signer."""
    model_name, training_name = model_key.to_user_string(), training_key.to_user_string()
    model = _producer(ledger, model_name, release.inputs.get(model_name, ""))
    training = _producer(ledger, training_name, model.inputs.get(training_name, "")) if model else None
    return {
        "release_version": release.details.get("version"),
        "signer": release.details.get("signer", ""),
        "mlflow_run_id": release.details.get("mlflow_run_id", ""),
        "model_digest": model.digest if model else "",
        "model_code_version": model.code_version if model else "",
        "git_revision": model.git_revision if model else "",
        "training_set_digest": training.digest if training else "",
        "training_inputs": training.inputs if training else {},
    }


def retraining_audit(
    example: str, champion: AssetKey, model: AssetKey, training_set: AssetKey
) -> tuple[AssetsDefinition, AssetChecksDefinition]:
    """The audit asset for one example's release line, and its blocking check."""
    key = AssetKey([example, "retraining_audit"])

    @asset(
        key=key,
        deps=[champion],
        group_name="monitoring",
        io_manager_key="json_io_manager",
        kinds={"python", "json"},
        owners=["team:security"],
    )
    def retraining_audit(
        context: AssetExecutionContext, ledger: IntegrityLedger, trust_store: ResourceParam[TrustStore]
    ) -> dict:
        """For every released model version: the data digests and code that made it and who signed it.

        Audits retraining: the ledger chain must be intact, every release must
        trace back to a training set and its inputs, and every signer must be a
        trusted release key.
        """
        chain = ledger.verify_chain()
        trusted = {key_fingerprint(pem) for pem in trust_store.trusted_release_keys()}
        versions = [
            lineage(ledger, e, model, training_set)
            for e in ledger.entries(kind="artifact")
            if e.subject == champion.to_user_string()
        ]
        problems = list(chain.problems)
        for version in versions:
            if not version["training_set_digest"] or not version["training_inputs"]:
                problems.append(f"release v{version['release_version']} has no complete data lineage")
            if version["signer"] not in trusted:
                problems.append(f"release v{version['release_version']} was signed by an untrusted key")
        report = {"chain_ok": chain.ok, "versions": versions, "problems": problems}
        context.add_output_metadata(
            {
                "releases": len(versions),
                "chain_ok": chain.ok,
                "problems": MetadataValue.json(problems),
                "lineage": MetadataValue.json(versions),
            }
        )
        return report

    @asset_check(asset=key, name="retraining_audit_clean", blocking=True)
    def retraining_audit_clean(
        context: AssetCheckExecutionContext, retraining_audit: dict
    ) -> AssetCheckResult:
        """Intact ledger, full lineage and a trusted signer for every released model."""
        return AssetCheckResult(
            passed=retraining_audit["chain_ok"] and not retraining_audit["problems"],
            severity=AssetCheckSeverity.ERROR,
            metadata={"problems": MetadataValue.json(retraining_audit["problems"])},
        )

    return retraining_audit, retraining_audit_clean
