"""What every collection asset does with its batches once their records are read.

`batch_recorder` writes each batch's verdict to the provenance ledger;
`finish_intake` keeps refused
records, with reasons, encrypted in the collecting stage's area
(`store_quarantine`), moves consumed batches out of the inbox
(`archive_batches`) and records the evidence the checks read.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from dagster import AssetExecutionContext, MetadataValue

from domain.accounting import IntakeResult, ReplayGuard
from resources.integrity import IntegrityLedger, LedgerEntry
from resources.sources import MANIFEST_SUFFIX, BatchVerdict, SourcePolicy, SourceRegistry
from resources.store import ArtifactStore
from resources.trust_store import TrustStore


def _signer(policy: SourcePolicy) -> str:
    raw = policy.public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return "ed25519:" + hashlib.sha256(raw).hexdigest()[:16]


def replay_guard(ledger: IntegrityLedger, trust_store: TrustStore) -> ReplayGuard:
    """What earlier runs accepted: batch ids on the ledger, sources' last sequences in the trust store."""
    accepted = {e.details["batch_id"] for e in ledger.entries(kind="batch") if e.details.get("accepted")}
    return ReplayGuard(accepted, trust_store.last_sequences())


def batch_recorder(
    context: AssetExecutionContext, ledger: IntegrityLedger, sources: SourceRegistry, subject: str
) -> Callable[[BatchVerdict, int], None]:
    """A callback that writes each batch's verdict, source and signer to the provenance ledger."""
    signers = {source: _signer(policy) for source, policy in sources.policies().items()}

    def record(verdict: BatchVerdict, records: int) -> None:
        ledger.append(
            LedgerEntry(
                subject=subject,
                kind="batch",
                digest=f"sha256:{verdict.sha256}" if verdict.sha256 else "",
                run_id=context.run_id,
                sources={"source": verdict.source, "signer": signers.get(verdict.source, "")},
                details={
                    "batch_id": verdict.batch.batch_id,
                    "accepted": verdict.accepted,
                    "reason": verdict.reason,
                    "records": records,
                    "schema_version": 1,
                },
            )
        )

    return record


def store_quarantine(
    context: AssetExecutionContext,
    result: IntakeResult,
    store: ArtifactStore,
    ledger: IntegrityLedger,
) -> str:
    """Keep refused records, with reasons, encrypted in the collecting stage's area for review.

    Feedback is collected by a monitoring asset, so its quarantine stays in
    the monitoring area with the rest of the untrusted tier.
    """
    frame = result.quarantine_frame()
    stage = context.assets_def.group_names_by_key[context.asset_key]
    relative = f"{stage}/{'/'.join(context.asset_key.path)}/quarantine/{context.run_id}.parquet"
    with store.stage(stage).open_write(relative) as handle:
        frame.to_parquet(handle, index=False)
    artifact = handle.artifact
    ledger.append(
        LedgerEntry(
            subject=f"{context.asset_key.to_user_string()}/quarantine",
            kind="quarantine",
            path=artifact.path,
            digest=artifact.digest,
            stored_digest=artifact.stored_digest,
            size=artifact.size,
            run_id=context.run_id,
            details={"rows": len(frame), "reasons": result.reasons()},
        )
    )
    return artifact.path


def archive_batches(inbox: Path, topic: str, result: IntakeResult, run_id: str) -> None:
    """Move consumed batches (data and manifest) out of the inbox, like committing Kafka offsets."""
    archive = inbox.parent / "archive" / run_id / inbox.name / topic
    archive.mkdir(parents=True, exist_ok=True)
    for batch in result.batches:
        batch_id = batch["batch_id"]
        for name in (batch_id, f"{batch_id}.jsonl", f"{batch_id}{MANIFEST_SUFFIX}"):
            path = inbox / topic / name
            if path.exists():
                shutil.move(path, archive / name)


def finish_intake(
    context: AssetExecutionContext,
    result: IntakeResult,
    inbox: Path,
    topic: str,
    store: ArtifactStore,
    ledger: IntegrityLedger,
    trust_store: TrustStore,
) -> None:
    """Store the quarantine, archive the consumed batches and record the run's intake report as metadata.

    Each source's highest accepted sequence number goes to the operator's
    witness, like a committed Kafka offset. The report (`intake_report`) is
    the evidence the collection checks read.
    """
    quarantine = store_quarantine(context, result, store, ledger)
    for source, batch in result.newest_accepted().items():
        trust_store.record_sequence(source, batch["sequence"], batch["batch_id"])
    archive_batches(inbox, topic, result, context.run_id)
    report = result.report(quarantine_path=quarantine)
    context.add_output_metadata(
        {
            "received": result.received,
            "accepted": result.accepted,
            "quarantined": result.quarantined,
            "batches_refused": report.batches_refused,
            "quarantine_path": quarantine,
            "quarantine_reasons": MetadataValue.json(result.reasons()),
            "intake_report": MetadataValue.json(report.to_json()),
        }
    )
