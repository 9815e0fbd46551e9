"""What every collection asset does with its batches once their records are read.

`batch_recorder` writes each batch's verdict to the provenance ledger;
`finish_intake` keeps refused
records, with reasons, encrypted in the collecting stage's area
(`store_quarantine`), takes consumed batches out of the landing zone
(`retire_batches`: encrypted into the store, or deleted) and records the
evidence the checks read.
"""

from __future__ import annotations

import hashlib
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from dagster import AssetExecutionContext, MetadataValue

from domain.accounting import IntakeResult, ReplayGuard
from resources.integrity import IntegrityLedger, LedgerEntry
from resources.sources import MANIFEST_SUFFIX, BatchVerdict, SourcePolicy, SourceRegistry
from resources.store import ArtifactStore, StoredArtifact
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
    stage, area = _area(context)
    relative = f"{area}/quarantine/{context.run_id}.parquet"
    with store.stage(stage).open_write(relative) as handle:
        frame.to_parquet(handle, index=False)
    _record(context, ledger, "quarantine", handle.artifact, {"rows": len(frame), "reasons": result.reasons()})
    return handle.artifact.path


def _record(
    context: AssetExecutionContext,
    ledger: IntegrityLedger,
    kind: str,
    artifact: StoredArtifact,
    details: dict,
) -> None:
    """Put a stored intake artifact (`quarantine`, `landed-batch`) on the ledger, under its asset."""
    ledger.append(
        LedgerEntry(
            subject=f"{context.asset_key.to_user_string()}/{kind}",
            kind=kind,
            path=artifact.path,
            digest=artifact.digest,
            stored_digest=artifact.stored_digest,
            size=artifact.size,
            run_id=context.run_id,
            details=details,
        )
    )


def _area(context: AssetExecutionContext) -> tuple[str, str]:
    """The collecting asset's stage and its folder in that stage's area of the store."""
    stage = context.assets_def.group_names_by_key[context.asset_key]
    return stage, f"{stage}/{'/'.join(context.asset_key.path)}"


def _landed_paths(inbox: Path, topic: str, batch_id: str) -> list[Path]:
    names = (batch_id, f"{batch_id}.jsonl", f"{batch_id}{MANIFEST_SUFFIX}")
    return [path for path in (inbox / topic / name for name in names) if path.exists()]


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink()


def retire_batches(
    context: AssetExecutionContext,
    result: IntakeResult,
    inbox: Path,
    topic: str,
    retention: str,
    store: ArtifactStore,
    ledger: IntegrityLedger,
) -> int:
    """Take every consumed batch out of the landing zone, like committing Kafka offsets.

    Landed originals carry what the sender sent: full PHI, and in DICOM
    whatever a preamble or private element hid. With ``archive`` retention
    each batch (data, records, manifest) is written as one tar stream into the
    collecting stage's encrypted area, its digests on the ledger (kind
    ``landed-batch``), for audits and forensics; with ``delete`` it is only
    removed (the ledger already holds its digest and verdict). Returns the
    number of batches retired.
    """
    stage, area = _area(context)
    retired = 0
    for batch in result.batches:
        batch_id = batch["batch_id"]
        paths = _landed_paths(inbox, topic, batch_id)
        if not paths:
            continue
        if retention == "archive":
            relative = f"{area}/landed/{context.run_id}/{topic}/{batch_id}.tar"
            with store.stage(stage).open_write(relative) as handle:
                with tarfile.open(fileobj=handle, mode="w|") as archive:
                    for path in paths:
                        archive.add(path, arcname=path.name)
            details = {"batch_id": batch_id, "accepted": batch["accepted"], "topic": topic}
            _record(context, ledger, "landed-batch", handle.artifact, details)
        for path in paths:
            _remove(path)
        retired += 1
    return retired


def finish_intake(
    context: AssetExecutionContext,
    result: IntakeResult,
    inbox: Path,
    topic: str,
    retention: str,
    store: ArtifactStore,
    ledger: IntegrityLedger,
    trust_store: TrustStore,
) -> None:
    """Store the quarantine, retire the consumed batches and record the run's intake report as metadata.

    Each source's highest accepted sequence number goes to the operator's
    witness, like a committed Kafka offset. The report (`intake_report`) is
    the evidence the collection checks read.
    """
    quarantine = store_quarantine(context, result, store, ledger)
    for source, batch in result.newest_accepted().items():
        trust_store.record_sequence(source, batch["sequence"], batch["batch_id"])
    retired = retire_batches(context, result, inbox, topic, retention, store, ledger)
    report = result.report(quarantine_path=quarantine)
    context.add_output_metadata(
        {
            "received": result.received,
            "accepted": result.accepted,
            "quarantined": result.quarantined,
            "batches_refused": report.batches_refused,
            "batches_retired": retired,
            "landing_retention": retention,
            "quarantine_path": quarantine,
            "quarantine_reasons": MetadataValue.json(result.reasons()),
            "intake_report": MetadataValue.json(report.to_json()),
        }
    )
