"""What every collection asset shares, whatever its records look like.

`IntakeResult` accounts for one collection run (received = accepted +
quarantined, per batch and per source); `batch_recorder` writes each
batch's verdict to the provenance ledger; `finish_intake` keeps refused
records, with reasons, encrypted in the collecting stage's area
(`store_quarantine`), moves consumed batches out of the inbox
(`archive_batches`) and records the evidence the checks read.
"""

from __future__ import annotations

import hashlib
import shutil
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from dagster import AssetExecutionContext, MetadataValue

from resources.integrity import IntegrityLedger, LedgerEntry
from resources.sources import MANIFEST_SUFFIX, BatchVerdict, SourcePolicy, SourceRegistry
from resources.store import ArtifactStore

RAW_KEPT_CHARS = 1024
QUARANTINE_SCHEMA = pa.schema(
    {
        "source": pa.string(),
        "batch_id": pa.string(),
        "line": pa.int64(),
        "reason": pa.string(),
        "raw": pa.string(),
    }
)


@dataclass
class IntakeResult:
    """What one collection run saw, kept, refused and why."""

    received: int = 0
    accepted: int = 0
    quarantine: list[dict] = field(default_factory=list)
    batches: list[dict] = field(default_factory=list)
    source_hours: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    profile: dict = field(default_factory=dict)  # what the window looked like, for baseline checks

    @property
    def quarantined(self) -> int:
        return len(self.quarantine)

    def refuse(self, verdict: BatchVerdict, line: int, reason: str, raw: str) -> None:
        """Quarantine record `line` of a batch (a line, or a file's position) with its reason."""
        self.quarantine.append(
            {
                "source": verdict.source,
                "batch_id": verdict.batch.batch_id,
                "line": line,
                "reason": reason,
                "raw": raw[:RAW_KEPT_CHARS],
            }
        )

    def add_batch(self, verdict: BatchVerdict, records: int) -> None:
        self.batches.append(
            {
                "batch_id": verdict.batch.batch_id,
                "source": verdict.source,
                "accepted": verdict.accepted,
                "reason": verdict.reason,
                "records": records,
            }
        )

    def reasons(self) -> dict[str, int]:
        """Quarantine counts by reason category (the text before the first colon)."""
        return dict(Counter(q["reason"].split(":", 1)[0] for q in self.quarantine))

    def quarantine_frame(self) -> pd.DataFrame:
        return pa.Table.from_pylist(self.quarantine, schema=QUARANTINE_SCHEMA).to_pandas()

    def per_source(self) -> dict[str, dict[str, float]]:
        """Accepted records per source and per hour of source time they span."""
        report = {}
        for source, hours in self.source_hours.items():
            records = sum(hours.values())
            span = max(hours) - min(hours) + 1 if hours else 1
            report[source] = {"records": records, "hours": span, "records_per_hour": records / span}
        return report

    def report(self) -> dict:
        refused = [b for b in self.batches if not b["accepted"]]
        return {
            "received": self.received,
            "accepted": self.accepted,
            "quarantined": self.quarantined,
            "quarantine_reasons": self.reasons(),
            "batches_accepted": len(self.batches) - len(refused),
            "batches_refused": len(refused),
            "refused_batches": refused[:50],
            "rate_limited_batches": sum(b["reason"].startswith("rate limit") for b in refused),
            "unauthenticated_batches": sum(not b["reason"].startswith("rate limit") for b in refused),
            "per_source": self.per_source(),
        }


def refused(verdict: BatchVerdict, reason: str) -> BatchVerdict:
    """`verdict`, turned into a refusal for `reason` (replay, rate limit)."""
    return BatchVerdict(
        verdict.batch,
        verdict.source,
        accepted=False,
        reason=reason,
        records=verdict.records,
        sha256=verdict.sha256,
    )


def _signer(policy: SourcePolicy) -> str:
    raw = policy.public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return "ed25519:" + hashlib.sha256(raw).hexdigest()[:16]


def accepted_batch_ids(ledger: IntegrityLedger) -> set[str]:
    """Batches some earlier run accepted: a batch landing again is a replay."""
    return {e.details["batch_id"] for e in ledger.entries(kind="batch") if e.details.get("accepted")}


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
) -> None:
    """Store the quarantine, archive the consumed batches and record the run's intake report as metadata.

    The report (`intake_report`) is the evidence the collection checks read.
    """
    quarantine = store_quarantine(context, result, store, ledger)
    archive_batches(inbox, topic, result, context.run_id)
    report = {**result.report(), "profile": result.profile, "quarantine_path": quarantine}
    context.add_output_metadata(
        {
            "received": result.received,
            "accepted": result.accepted,
            "quarantined": result.quarantined,
            "batches_refused": report["batches_refused"],
            "quarantine_path": quarantine,
            "quarantine_reasons": MetadataValue.json(result.reasons()),
            "intake_report": MetadataValue.json(report),
        }
    )
