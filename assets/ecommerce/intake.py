"""Intake of signed Kafka batches: authenticate, rate-limit, validate, quarantine.

`collect_topic` reads one topic's batches from the landing zone one batch at
a time (memory stays bounded by the batch size), streams accepted rows into a
Parquet file and keeps every refused record with its reason, so that for
every run received = accepted + quarantined.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from assets.ecommerce.records import KAFKA_FIELDS, RecordSchema
from resources.sources import (
    BatchVerdict,
    RateLimiter,
    SourcePolicy,
    SourceRegistry,
    landed_batches,
)

MAX_RECORD_BYTES = 16 * 1024
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

    @property
    def quarantined(self) -> int:
        return len(self.quarantine)

    def reasons(self) -> dict[str, int]:
        """Quarantine counts by reason category (the text before the first colon)."""
        return dict(Counter(q["reason"].split(":", 1)[0] for q in self.quarantine))

    def quarantine_frame(self) -> pd.DataFrame:
        return pa.Table.from_pylist(self.quarantine, schema=QUARANTINE_SCHEMA).to_pandas()

    def per_source(self) -> dict[str, dict[str, float]]:
        """Accepted records per source and per hour of Kafka time they span."""
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


def _quarantine(result: IntakeResult, verdict: BatchVerdict, line_no: int, reason: str, raw: str):
    result.quarantine.append(
        {
            "source": verdict.source,
            "batch_id": verdict.batch.batch_id,
            "line": line_no,
            "reason": reason,
            "raw": raw[:RAW_KEPT_CHARS],
        }
    )


def _read_lines(path: Path) -> list[bytes]:
    if not path.exists():
        return []
    with open(path, "rb") as handle:
        return handle.read().splitlines()


def _decode(line: bytes) -> tuple[dict | None, str]:
    """A Kafka message and its payload, or None and why it cannot be used."""
    if len(line) > MAX_RECORD_BYTES:
        return None, f"oversized: record of {len(line)} bytes > {MAX_RECORD_BYTES}"
    try:
        message = json.loads(line)
        value = json.loads(message["value"])
        if not isinstance(value, dict):
            raise TypeError("payload is not an object")
        if not isinstance(message["timestamp"], int) or not isinstance(message["offset"], int):
            raise TypeError("timestamp and offset must be integers")
    except (ValueError, KeyError, TypeError) as error:
        return None, f"malformed: {type(error).__name__}: {error}"[:200]
    return {
        "payload": value,
        "kafka_partition": int(message.get("partition", 0)),
        "kafka_offset": message["offset"],
        "kafka_timestamp": message["timestamp"],
    }, ""


def collect_topic(
    registry: SourceRegistry,
    landing: Path,
    schema: RecordSchema,
    dest: Path,
    *,
    seen_batches: set[str] = frozenset(),
    on_batch=None,
) -> IntakeResult:
    """Collect every landed batch of `schema.topic` into the Parquet file `dest`.

    `seen_batches` are batch ids accepted by earlier runs (a resend is a
    replay); `on_batch(verdict)` is called for each batch, e.g. to record it
    in the provenance ledger.
    """
    policies: dict[str, SourcePolicy] = registry.policies()
    limiter, result = RateLimiter(), IntakeResult()
    payload_fields = [n for n in schema.arrow_schema.names if n not in KAFKA_FIELDS]
    with pq.ParquetWriter(dest, schema.arrow_schema) as writer:
        for batch in landed_batches(landing, schema.topic):
            verdict = registry.verify(batch, schema.topic, policies)
            lines = _read_lines(batch.data_path)
            result.received += len(lines)
            decoded = [_decode(line) for line in lines] if verdict.accepted else []
            if verdict.accepted and batch.batch_id in seen_batches:
                verdict = _refused(verdict, "replay: batch was already collected")
            if verdict.accepted:
                times = [m["kafka_timestamp"] for m, _ in decoded if m]
                why = limiter.admit(policies[verdict.source], times)
                if why:
                    verdict = _refused(verdict, why)
            if on_batch:
                on_batch(verdict, len(lines))
            result.batches.append(
                {
                    "batch_id": batch.batch_id,
                    "source": verdict.source,
                    "accepted": verdict.accepted,
                    "reason": verdict.reason,
                    "records": len(lines),
                }
            )
            if not verdict.accepted:
                for i, line in enumerate(lines):
                    _quarantine(
                        result,
                        verdict,
                        i,
                        f"batch refused: {verdict.reason}",
                        line.decode("utf-8", "replace"),
                    )
                continue
            good = [(i, m) for i, (m, _) in enumerate(decoded) if m]
            for i, (m, why) in enumerate(decoded):
                if not m:
                    _quarantine(result, verdict, i, why, lines[i].decode("utf-8", "replace"))
            if good:
                table = _validate(schema, payload_fields, good, verdict, lines, result)
                writer.write_table(table)
    return result


def _validate(schema, payload_fields, good, verdict, lines, result) -> pa.Table:
    line_numbers = [i for i, _ in good]
    values = pd.DataFrame.from_records(
        [m["payload"] for _, m in good], columns=payload_fields, index=line_numbers
    )
    kafka_time = pd.to_datetime([m["kafka_timestamp"] for _, m in good], unit="ms", utc=True)
    clean, reasons = schema.check(values, pd.Series(kafka_time, index=line_numbers))
    for line_no in reasons.index[reasons != ""]:
        _quarantine(
            result,
            verdict,
            int(line_no),
            reasons[line_no],
            lines[line_no].decode("utf-8", "replace"),
        )
    keep = reasons == ""
    clean = clean[keep].assign(
        source=verdict.source,
        batch_id=verdict.batch.batch_id,
        kafka_partition=[m["kafka_partition"] for (_, m), k in zip(good, keep, strict=True) if k],
        kafka_offset=[m["kafka_offset"] for (_, m), k in zip(good, keep, strict=True) if k],
    )
    result.accepted += len(clean)
    hours = pd.Series([m["kafka_timestamp"] for (_, m), k in zip(good, keep, strict=True) if k]) // 3_600_000
    result.source_hours[verdict.source].update(hours.tolist())
    return pa.Table.from_pandas(clean, schema=schema.arrow_schema, preserve_index=False)


def _refused(verdict: BatchVerdict, reason: str) -> BatchVerdict:
    return BatchVerdict(
        verdict.batch,
        verdict.source,
        accepted=False,
        reason=reason,
        records=verdict.records,
        sha256=verdict.sha256,
    )
