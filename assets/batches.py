"""What every collection asset does with its batches once their records are read.

`batch_recorder` writes each batch's verdict to the provenance ledger;
`finish_intake` keeps refused
records, with reasons, encrypted in the collecting stage's area
(`store_quarantine`), takes consumed batches out of the landing zone
(`retire_batches`: encrypted into the store, or deleted) and records the
evidence the checks read. `collect_kafka_window` does all of that for a
window consumed from Kafka, and commits its offsets last.
"""

from __future__ import annotations

import hashlib
import shutil
import tarfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from dagster import AssetExecutionContext, MetadataValue

from domain.accounting import MAX_LISTED_BATCHES, IntakeResult, ReplayGuard
from resources.integrity import IntegrityLedger, LedgerEntry
from resources.kafka_intake import WINDOW_KIND, KafkaIntake, KafkaWindow
from resources.scratch import ScratchSpace
from resources.sources import MANIFEST_SUFFIX, BatchVerdict, LandedBatch, SourcePolicy, SourceRegistry
from resources.store import ArtifactStore, StoredArtifact
from resources.trust_store import TrustStore

BatchCallback = Callable[[BatchVerdict, int], None]


def _signer(policy: SourcePolicy) -> str:
    raw = policy.public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return "ed25519:" + hashlib.sha256(raw).hexdigest()[:16]


def replay_guard(
    ledger: IntegrityLedger,
    trust_store: TrustStore,
    provisional: Callable[[LedgerEntry], bool] | None = None,
) -> ReplayGuard:
    """What earlier runs accepted: batch ids on the ledger, sources' last sequences in the trust store.

    Verdicts that `provisional` picks out (those of a Kafka window that was
    never committed) do not count: their batches were never collected.
    """
    accepted = {
        e.details["batch_id"]
        for e in ledger.entries(kind="batch")
        if e.details.get("accepted") and not (provisional and provisional(e))
    }
    return ReplayGuard(accepted, trust_store.last_sequences())


def batch_recorder(
    context: AssetExecutionContext, ledger: IntegrityLedger, sources: SourceRegistry, subject: str
) -> BatchCallback:
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
    _witness_sequences(result, trust_store)
    retired = retire_batches(context, result, inbox, topic, retention, store, ledger)
    _report(context, result, quarantine, {"batches_retired": retired, "landing_retention": retention})


def _witness_sequences(result: IntakeResult, trust_store: TrustStore) -> None:
    for source, batch in result.newest_accepted().items():
        trust_store.record_sequence(source, batch["sequence"], batch["batch_id"])


def _report(context: AssetExecutionContext, result: IntakeResult, quarantine: str, extra: dict) -> None:
    """The run's counts and intake report (`intake_report`, what the checks read) as output metadata."""
    report = result.report(quarantine_path=quarantine)
    context.add_output_metadata(
        {
            "received": result.received,
            "accepted": result.accepted,
            "quarantined": result.quarantined,
            "batches_refused": report.batches_refused,
            **extra,
            "quarantine_path": quarantine,
            "quarantine_reasons": MetadataValue.json(result.reasons()),
            "intake_report": MetadataValue.json(report.to_json()),
        }
    )


def collect_kafka_window(
    context: AssetExecutionContext,
    kafka: KafkaIntake,
    topic: str,
    collect: Callable[[Iterable[LandedBatch], ReplayGuard, BatchCallback], IntakeResult],
    dest: Path,
    sources: SourceRegistry,
    ledger: IntegrityLedger,
    trust_store: TrustStore,
    store: ArtifactStore,
    scratch: ScratchSpace,
) -> IntakeResult:
    """Collect `topic`'s next Kafka window into `dest`, each message counted once across crashes.

    `collect(batches, replays, on_batch)` runs the landing zone's controls
    over the window's messages (spooled as landed batches) and writes the
    accepted records to `dest`. Then, in this order: the quarantine and the
    accepted records are stored (encrypted), the window's ``kafka-window``
    ledger entry records its offset ranges and counts (the commit record),
    the trust store witnesses each source's newest accepted sequence, and
    only then are the offsets committed to Kafka.

    A run killed before the window entry leaves its batch verdicts on the
    ledger, but provisional: they are not taken as earlier acceptances, so
    the next run, which reads the same messages again, does not refuse them
    as replays of themselves. A run killed after it starts past the window
    (`KafkaIntake.open_window` reads where windows ended from the ledger).
    Protects against lost and double-counted messages (received = accepted
    + quarantined over every message, once).
    """
    asset = context.asset_key.to_user_string()
    verdicts, windows = f"{asset}/kafka-batch", f"{asset}/{WINDOW_KIND}"
    committed = {e.run_id for e in ledger.entries(kind=WINDOW_KIND) if e.subject == windows}
    replays = replay_guard(ledger, trust_store, lambda e: e.subject == verdicts and e.run_id not in committed)
    window = kafka.open_window(topic, scratch.path(f"{context.asset_key.path[-1]}.kafka"), ledger)
    try:
        result = collect(window.batches(), replays, batch_recorder(context, ledger, sources, verdicts))
        quarantine = store_quarantine(context, result, store, ledger)
        stage, area = _area(context)
        stored = store.stage(stage).write_file(f"{area}/kafka/{context.run_id}/{window.topic}.parquet", dest)
        _record(context, ledger, WINDOW_KIND, stored, _window_details(window, result, quarantine))
        _witness_sequences(result, trust_store)
        window.commit()
    finally:
        window.close()
    extra = {"kafka_window": MetadataValue.json(window.details()), "kafka_window_path": stored.path}
    _report(context, result, quarantine, extra)
    return result


def _window_details(window: KafkaWindow, result: IntakeResult, quarantine: str) -> dict[str, Any]:
    """The window's ledger entry: its offsets, its counts, and where its refused messages sit."""
    # `collect_batches` reports one batch per message, in order.
    refused = [
        {"partition": m.partition, "offset": m.offset, "batch_id": b["batch_id"], "reason": b["reason"]}
        for m, b in zip(window.messages, result.batches, strict=True)
        if not b["accepted"]
    ]
    return {
        **window.details(),
        "received": result.received,
        "accepted": result.accepted,
        "quarantined": result.quarantined,
        "quarantine_path": quarantine,
        "refused_messages": refused[:MAX_LISTED_BATCHES],
    }
