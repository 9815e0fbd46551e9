"""Accounting for one collection run: received = accepted + quarantined, and why.

`IntakeResult` is filled while a window's batches are read; `IntakeReport`
is the evidence it leaves in the collected asset's metadata, written by the
collection asset and read back, with the same field names, by the checks.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd
import pyarrow as pa

from resources.sources import BatchVerdict

RAW_KEPT_CHARS = 1024
MAX_LISTED_BATCHES = 50
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

    def report(self, quarantine_path: str = "") -> IntakeReport:
        refused = [b for b in self.batches if not b["accepted"]]
        limited = [b for b in refused if b["reason"].startswith("rate limit")]
        return IntakeReport(
            received=self.received,
            accepted=self.accepted,
            quarantined=self.quarantined,
            quarantine_reasons=self.reasons(),
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
    quarantined: int
    quarantine_reasons: dict[str, int]
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
