"""Intake of signed Kafka batches: authenticate, rate-limit, validate, quarantine.

`collect_topic` reads one topic's batches from the landing zone one batch at
a time (memory stays bounded by the batch size), streams accepted rows into a
Parquet file and keeps every refused record with its reason, so that for
every run received = accepted + quarantined.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from domain.accounting import IntakeResult, ReplayGuard, refused
from domain.ecommerce.records import KAFKA_FIELDS, RecordSchema
from resources.sources import (
    RateLimiter,
    SourcePolicy,
    SourceRegistry,
    landed_batches,
)

MAX_RECORD_BYTES = 16 * 1024


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
    replays: ReplayGuard | None = None,
    on_batch=None,
) -> IntakeResult:
    """Collect every landed batch of `schema.topic` into the Parquet file `dest`.

    `replays` knows what earlier runs accepted (a resend is refused as a
    replay); `on_batch(verdict)` is called for each batch, e.g. to record it
    in the provenance ledger.
    """
    replays = replays or ReplayGuard()
    policies: dict[str, SourcePolicy] = registry.policies()
    limiter, result = RateLimiter(), IntakeResult()
    payload_fields = [n for n in schema.arrow_schema.names if n not in KAFKA_FIELDS]
    with pq.ParquetWriter(dest, schema.arrow_schema) as writer:
        for batch in landed_batches(landing, schema.topic):
            verdict = registry.verify(batch, schema.topic, policies)
            lines = _read_lines(batch.data_path)
            result.received += len(lines)
            decoded = [_decode(line) for line in lines] if verdict.accepted else []
            if verdict.accepted and (why := replays.reason(verdict)):
                verdict = refused(verdict, why)
            if verdict.accepted:
                times = [m["kafka_timestamp"] for m, _ in decoded if m]
                why = limiter.admit(policies[verdict.source], times)
                if why:
                    verdict = refused(verdict, why)
            if verdict.accepted:
                replays.accepted(verdict)
            if on_batch:
                on_batch(verdict, len(lines))
            result.add_batch(verdict, len(lines))
            if not verdict.accepted:
                for i, line in enumerate(lines):
                    raw = line.decode("utf-8", "replace")
                    result.refuse(verdict, i, f"batch refused: {verdict.reason}", raw)
                continue
            good = [(i, m) for i, (m, _) in enumerate(decoded) if m]
            for i, (m, why) in enumerate(decoded):
                if not m:
                    result.refuse(verdict, i, why, lines[i].decode("utf-8", "replace"))
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
        result.refuse(verdict, int(line_no), reasons[line_no], lines[line_no].decode("utf-8", "replace"))
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
