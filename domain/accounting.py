"""Accounting for one collection run: received = accepted + quarantined, and why.

`IntakeResult` is filled while a window's batches are read; `IntakeReport`
is the evidence it leaves in the collected asset's metadata, written by the
collection asset and read back, with the same field names, by the checks.

What untrusted input may cost is bounded before trust is decided:

- A refused batch (unsigned, forged, tampered, oversized, replayed, over its
  rate limit) is quarantined whole, as one row that names the batch, its size
  and SHA-256 and the reason. It is never parsed: `summarise_lines` and
  `summarise_files` stream it in fixed-size chunks, so memory stays constant
  whatever its size.
- Records refused inside an accepted batch are all counted, but at most
  `MAX_SAMPLED_PER_BATCH` of them per batch (and `MAX_QUARANTINE_ROWS` rows
  per run in all) keep a row with their (truncated) text; the rest are
  counted only, in `quarantine_unstored`.

The counts stay exact: `received`, `accepted`, `quarantined` and `reasons()`
count records. A refused record batch's records are its lines (the number of
b"\n"-separated lines, a last line without a newline included, counted as
the file streams past); a refused file batch's records are its record files
(the entries whose names the topic reads). So, per run,
received = accepted + quarantined, and
quarantined = sum(row["records"] for row in quarantine) + quarantine_unstored.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from resources.sources import BatchVerdict

RAW_KEPT_CHARS = 1024
MAX_LISTED_BATCHES = 50
MAX_SAMPLED_PER_BATCH = 1_000  # stored rows of records refused inside one accepted batch
MAX_QUARANTINE_ROWS = 50_000  # stored rows per run, whole refused batches included
MAX_HASHED_FILES = 100_000  # files of one refused file batch whose digests are combined
CHUNK_BYTES = 1 << 20  # what a refused batch is read in: memory per batch, whatever its size
BATCH_REFUSED = "batch refused"
QUARANTINE_SCHEMA = pa.schema(
    {
        "source": pa.string(),
        "batch_id": pa.string(),
        "line": pa.int64(),  # the record's position in its batch; null for a whole refused batch
        "records": pa.int64(),  # the records the row stands for: 1, or a refused batch's count
        "reason": pa.string(),
        "raw": pa.string(),  # the record (truncated), or what the refused batch is (size, digest)
        "bytes": pa.int64(),  # a refused batch's size; null for a record
        "sha256": pa.string(),  # a refused batch's digest; null for a record
    }
)


@dataclass(frozen=True)
class BatchSummary:
    """What a refused batch is, learnt without parsing it: its records, size and digest."""

    records: int
    bytes: int
    sha256: str
    description: str


def _open_regular(path: Path) -> tuple[int, int] | None:
    """A read-only descriptor on `path` and its size, if it is a regular file (no link followed).

    O_NONBLOCK keeps a FIFO dropped in the landing zone from blocking the
    open; the type is checked on the opened descriptor, so it cannot change
    between the check and the read.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        return None
    return fd, info.st_size


def _stream(fd: int, size: int, on_chunk: Callable[[bytes], None]) -> int:
    """Feed the first `size` bytes of `fd` (its size when opened; a file that grows is not followed)."""
    read = 0
    with os.fdopen(fd, "rb", buffering=0) as handle:
        while read < size:
            chunk = handle.read(min(CHUNK_BYTES, size - read))
            if not chunk:
                break
            on_chunk(chunk)
            read += len(chunk)
    return read


def summarise_lines(path: Path) -> BatchSummary:
    """A record batch (one JSON-lines file), streamed: its lines, size and SHA-256; never held."""
    opened = _open_regular(path)
    if opened is None:
        what = "a folder" if path.is_dir() else "missing" if not path.exists() else "not a regular file"
        return BatchSummary(0, 0, "", f"record batch {what}: nothing read")
    digest, newlines, last = hashlib.sha256(), 0, b"\n"

    def take(chunk: bytes) -> None:
        nonlocal newlines, last
        digest.update(chunk)
        newlines += chunk.count(b"\n")
        last = chunk[-1:]

    size = _stream(*opened, take)
    lines = newlines + (last != b"\n")
    sha256 = digest.hexdigest()
    return BatchSummary(lines, size, sha256, f"jsonl batch of {size} bytes, {lines} lines, sha256 {sha256}")


def summarise_files(folder: Path, is_record: Callable[[str], bool]) -> BatchSummary:
    """A file batch (a folder), streamed: its record files, size and a digest, never names or content.

    Records are the entries whose names `is_record` accepts (the files the
    topic reads). Size and digest cover every regular file of the folder
    (links are not followed, sub-folders not entered): the digest is the
    SHA-256 of the files' SHA-256 digests (raw, sorted), so it identifies
    the batch's content in the landing archive without naming a file (file
    names are study and instance UIDs). Past `MAX_HASHED_FILES` files the
    digest is left out (size and counts stay exact).
    """
    try:
        is_folder = stat.S_ISDIR(os.lstat(folder).st_mode)
    except OSError:
        return BatchSummary(0, 0, "", "file batch missing: nothing read")
    if not is_folder:
        lines = summarise_lines(folder)  # records are files: a lone file holds none
        what = f"{lines.bytes} bytes, sha256 {lines.sha256}" if lines.sha256 else "nothing read"
        return BatchSummary(0, lines.bytes, lines.sha256, f"file batch that is not a folder: {what}")
    records = files = others = size = 0
    digests: list[bytes] = []
    with os.scandir(folder) as entries:
        for entry in entries:
            records += bool(is_record(entry.name))
            opened = _open_regular(Path(entry.path)) if entry.is_file(follow_symlinks=False) else None
            if opened is None:
                others += 1
                continue
            files += 1
            if files > MAX_HASHED_FILES:  # counted and sized, not read
                size += opened[1]
                os.close(opened[0])
                continue
            digest = hashlib.sha256()
            size += _stream(*opened, digest.update)
            digests.append(digest.digest())
    hashed = files <= MAX_HASHED_FILES
    sha256 = hashlib.sha256(b"".join(sorted(digests))).hexdigest() if hashed else ""
    what = f"sha256 {sha256}" if hashed else f"no digest: over {MAX_HASHED_FILES} files"
    extra = f", {others} other entries not read" if others else ""
    description = f"file batch: {records} record files, {files} files of {size} bytes{extra}, {what}"
    return BatchSummary(records, size, sha256, description)


@dataclass
class IntakeResult:
    """What one collection run saw, kept, refused and why.

    `quarantined` and `reasons()` count records, exactly; `quarantine` holds
    the rows stored for review, bounded (see the module docstring), and
    `quarantine_unstored` the refused records that have no row of their own.
    """

    received: int = 0
    accepted: int = 0
    quarantined: int = 0
    quarantine: list[dict] = field(default_factory=list)
    quarantine_unstored: int = 0
    batches: list[dict] = field(default_factory=list)
    source_hours: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    profile: dict = field(default_factory=dict)  # what the window looked like, for baseline checks
    _reasons: Counter = field(default_factory=Counter, init=False, repr=False)
    _rows_per_batch: Counter = field(default_factory=Counter, init=False, repr=False)

    def _count(self, reason: str, records: int) -> None:
        self.quarantined += records
        if records:
            self._reasons[reason.split(":", 1)[0]] += records

    def refuse(self, verdict: BatchVerdict, line: int, reason: str, raw: str) -> None:
        """Quarantine record `line` of an accepted batch (a line, or a file's position) with its reason.

        It is always counted; it keeps a row, with `raw` truncated to
        RAW_KEPT_CHARS, only while its batch has fewer than MAX_SAMPLED_PER_BATCH rows.
        """
        self._count(reason, 1)
        batch = (verdict.source, verdict.batch.batch_id)
        if (
            self._rows_per_batch[batch] >= MAX_SAMPLED_PER_BATCH
            or len(self.quarantine) >= MAX_QUARANTINE_ROWS
        ):
            self.quarantine_unstored += 1
            return
        self._rows_per_batch[batch] += 1
        self.quarantine.append(
            {
                "source": verdict.source,
                "batch_id": verdict.batch.batch_id,
                "line": line,
                "records": 1,
                "reason": reason,
                "raw": raw[:RAW_KEPT_CHARS],
                "bytes": None,
                "sha256": None,
            }
        )

    def refuse_batch(self, verdict: BatchVerdict, summary: BatchSummary) -> None:
        """Quarantine a refused batch whole: one row standing for all its records."""
        reason = f"{BATCH_REFUSED}: {verdict.reason}"
        self._count(reason, summary.records)
        if len(self.quarantine) >= MAX_QUARANTINE_ROWS:
            self.quarantine_unstored += summary.records
            return
        self.quarantine.append(
            {
                "source": verdict.source,
                "batch_id": verdict.batch.batch_id,
                "line": None,
                "records": summary.records,
                "reason": reason[:RAW_KEPT_CHARS],
                "raw": summary.description[:RAW_KEPT_CHARS],
                "bytes": summary.bytes,
                "sha256": summary.sha256 or None,
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
                "sequence": verdict.sequence,
            }
        )

    def newest_accepted(self) -> dict[str, dict]:
        """Each source's accepted batch with the highest sequence number."""
        newest: dict[str, dict] = {}
        for batch in self.batches:
            if batch["accepted"] and batch["sequence"] > newest.get(batch["source"], {}).get("sequence", 0):
                newest[batch["source"]] = batch
        return newest

    def reasons(self) -> dict[str, int]:
        """Quarantined records by reason category (the text before the first colon), stored or not."""
        return dict(self._reasons)

    def quarantine_frame(self) -> pd.DataFrame:
        """The stored quarantine rows (integer columns nullable: a batch row has no line)."""
        table = pa.Table.from_pylist(self.quarantine, schema=QUARANTINE_SCHEMA)
        return table.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)

    def per_source(self) -> dict[str, dict[str, float]]:
        """Accepted records per source and per hour of source time they span."""
        report = {}
        for source, hours in self.source_hours.items():
            records = sum(hours.values())
            span = max(hours) - min(hours) + 1 if hours else 1
            report[source] = {"records": records, "hours": span, "records_per_hour": records / span}
        return report

    def report(self, quarantine_path: str = "") -> IntakeReport:
        refused = [b for b in self.batches if not b["accepted"]]
        limited = [b for b in refused if b["reason"].startswith("rate limit")]
        return IntakeReport(
            received=self.received,
            accepted=self.accepted,
            quarantined=self.quarantined,
            quarantine_reasons=self.reasons(),
            quarantine_rows=len(self.quarantine),
            quarantine_unstored=self.quarantine_unstored,
            batches_accepted=len(self.batches) - len(refused),
            batches_refused=len(refused),
            refused_batches=refused[:MAX_LISTED_BATCHES],
            rate_limited_batches=len(limited),
            unauthenticated_batches=len(refused) - len(limited),
            per_source=self.per_source(),
            profile=self.profile,
            quarantine_path=quarantine_path,
        )


@dataclass(frozen=True)
class IntakeReport:
    """What a collection asset records (metadata `intake_report`) and its checks read back."""

    received: int
    accepted: int
    quarantined: int  # records, those of whole refused batches included
    quarantine_reasons: dict[str, int]  # records by reason category
    quarantine_rows: int  # rows stored: one per refused batch, a bounded sample of refused records
    quarantine_unstored: int  # quarantined records counted but without a stored row
    batches_accepted: int
    batches_refused: int
    refused_batches: list[dict]  # the first MAX_LISTED_BATCHES refused: batch_id, source, reason, records
    rate_limited_batches: int
    unauthenticated_batches: int
    per_source: dict[str, dict[str, float]]
    profile: dict[str, Any] = field(default_factory=dict)  # what the window looked like, for baseline checks
    quarantine_path: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> IntakeReport:
        """The report as recorded; a report with a field missing is refused, not defaulted to a pass."""
        return cls(**data)


@dataclass
class ReplayGuard:
    """What earlier runs accepted, to refuse a batch sent again (a replay).

    `batch_ids` are the ids the ledger holds as accepted; `last_sequences`
    each source's highest accepted sequence number as the operator's trust
    store witnessed it, which still holds when the ledger lost its tail.
    """

    batch_ids: Collection[str] = frozenset()
    last_sequences: Mapping[str, int] = field(default_factory=dict)
    _this_run: set[tuple[str, int]] = field(default_factory=set)

    def reason(self, verdict: BatchVerdict) -> str:
        """Why an authenticated batch is a replay ('' if it is not)."""
        if verdict.batch.batch_id in self.batch_ids or (verdict.source, verdict.sequence) in self._this_run:
            return "replay: batch was already collected"
        last = self.last_sequences.get(verdict.source, 0)
        if verdict.sequence <= last:
            return f"replay: sequence {verdict.sequence} is not above {verdict.source}'s last accepted {last}"
        return ""

    def accepted(self, verdict: BatchVerdict) -> None:
        self._this_run.add((verdict.source, verdict.sequence))


def refused(verdict: BatchVerdict, reason: str) -> BatchVerdict:
    """`verdict`, turned into a refusal for `reason` (replay, rate limit)."""
    return BatchVerdict(
        verdict.batch,
        verdict.source,
        accepted=False,
        reason=reason,
        records=verdict.records,
        sha256=verdict.sha256,
        sequence=verdict.sequence,
    )
