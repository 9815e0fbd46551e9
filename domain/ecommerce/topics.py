"""Intake of signed Kafka batches: authenticate, rate-limit, validate, quarantine.

`collect_topic` reads one topic's batches from the landing zone one batch at
a time and streams accepted rows into a Parquet file, so that for every run
received = accepted + quarantined (see `domain.accounting` for what counts).
`collect_batches` does the same for batches from elsewhere (a Kafka window
spooled to scratch files), through the same controls.

What a batch may cost is bounded before trust is decided: a refused batch
(unsigned, forged, tampered, oversized, replayed, over its rate limit) is
never parsed, only streamed once in fixed-size chunks to count its lines and
digest it, and quarantined whole as one row. Only a batch that the source
registry accepted is read into memory and parsed; it is at most its source's
`max_batch_bytes`, and its digest is checked again on the bytes parsed.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from array import array
from collections.abc import Iterable
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from domain.accounting import RAW_KEPT_CHARS, IntakeResult, ReplayGuard, refused, summarise_lines
from domain.ecommerce.records import KAFKA_FIELDS, RecordSchema
from resources.sources import (
    BatchVerdict,
    LandedBatch,
    RateLimiter,
    SourcePolicy,
    SourceRegistry,
    landed_batches,
)

MAX_RECORD_BYTES = 16 * 1024


def _read_verified(path: Path, verdict: BatchVerdict, max_bytes: int) -> bytes | str:
    """The accepted batch's bytes, or why they are not the ones the registry verified.

    Reading it whole is bounded: the registry accepted it at no more than the
    source's `max_batch_bytes`, and at most one byte more is read. Checking
    the digest again on the bytes read closes the window between the
    registry's check and this read (a file swapped in between is refused).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as error:
        return f"unreadable: {type(error).__name__}"
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return "not a record batch: not a regular file"
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes or hashlib.sha256(data).hexdigest() != verdict.sha256:
        return "digest mismatch: data changed after verification"
    return data


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
    except (ValueError, KeyError, TypeError, RecursionError) as error:  # RecursionError: nested too deep
        return None, f"malformed: {type(error).__name__}: {error}"[:200]
    return {
        "payload": value,
        "kafka_partition": int(message.get("partition", 0)),
        "kafka_offset": message["offset"],
        "kafka_timestamp": message["timestamp"],
    }, ""


def _lines(data: bytes) -> tuple[array, list[tuple[dict | None, str]]]:
    """Each line's start offset and its decoded message (or why it cannot be used).

    Lines are split on b"\\n" only (a last line without one counts too), the
    same lines `summarise_lines` counts for a refused batch. One line is
    copied at a time; the offsets find a refused record's text again.
    """
    starts, decoded = array("q"), []
    start = 0
    while start < len(data):
        end = data.find(b"\n", start)
        end = len(data) if end < 0 else end
        starts.append(start)
        decoded.append(_decode(data[start:end]))
        start = end + 1
    return starts, decoded


def _raw(data: bytes, starts: array, i: int) -> str:
    """The text of line `i`, as much of it as a quarantine row keeps."""
    start = starts[i]
    end = data.find(b"\n", start)
    end = len(data) if end < 0 else end
    return data[start : min(end, start + 4 * RAW_KEPT_CHARS)].decode("utf-8", "replace")


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
    replay); `on_batch(verdict, records)` is called for each batch, e.g. to
    record it in the provenance ledger.
    """
    batches = landed_batches(landing, schema.topic)
    return collect_batches(registry, batches, schema, dest, replays=replays, on_batch=on_batch)


def collect_batches(
    registry: SourceRegistry,
    batches: Iterable[LandedBatch],
    schema: RecordSchema,
    dest: Path,
    *,
    replays: ReplayGuard | None = None,
    on_batch=None,
) -> IntakeResult:
    """Collect `batches` of `schema.topic`, in order, into `dest`, as `collect_topic` does.

    `on_batch` is called exactly once per batch, in order, accepted or not.
    """
    replays = replays or ReplayGuard()
    policies: dict[str, SourcePolicy] = registry.policies()
    limiter, result = RateLimiter(), IntakeResult()
    payload_fields = [n for n in schema.arrow_schema.names if n not in KAFKA_FIELDS]
    with pq.ParquetWriter(dest, schema.arrow_schema) as writer:
        for batch in batches:
            verdict = registry.verify(batch, schema.topic, policies)
            if verdict.accepted and (why := replays.reason(verdict)):
                verdict = refused(verdict, why)
            if verdict.accepted:
                data = _read_verified(batch.data_path, verdict, policies[verdict.source].max_batch_bytes)
                if isinstance(data, str):
                    verdict = refused(verdict, data)
            if verdict.accepted:
                starts, decoded = _lines(data)
                times = [m["kafka_timestamp"] for m, _ in decoded if m]
                if why := limiter.admit(policies[verdict.source], times):
                    verdict = refused(verdict, why)
            if not verdict.accepted:
                # Never parsed: streamed once for its line count, size and digest, then quarantined whole.
                summary = summarise_lines(batch.data_path)
                result.received += summary.records
                if on_batch:
                    on_batch(verdict, summary.records)
                result.add_batch(verdict, summary.records)
                result.refuse_batch(verdict, summary)
                continue
            replays.accepted(verdict)
            result.received += len(decoded)
            if on_batch:
                on_batch(verdict, len(decoded))
            result.add_batch(verdict, len(decoded))
            good = []
            for i, (m, why) in enumerate(decoded):
                if m:
                    good.append((i, m))
                else:
                    result.refuse(verdict, i, why, _raw(data, starts, i))
            del decoded
            if good:
                table = _validate(schema, payload_fields, good, verdict, data, starts, result)
                writer.write_table(table)
    return result


def _validate(schema, payload_fields, good, verdict, data, starts, result) -> pa.Table:
    line_numbers = [i for i, _ in good]
    values = pd.DataFrame.from_records(
        [m["payload"] for _, m in good], columns=payload_fields, index=line_numbers
    )
    kafka_time = pd.to_datetime([m["kafka_timestamp"] for _, m in good], unit="ms", utc=True)
    clean, reasons = schema.check(values, pd.Series(kafka_time, index=line_numbers))
    for line_no in reasons.index[reasons != ""]:
        result.refuse(verdict, int(line_no), reasons[line_no], _raw(data, starts, int(line_no)))
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
