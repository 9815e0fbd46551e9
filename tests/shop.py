"""A small e-commerce world and helpers to run the real jobs against it.

Tests mount attacks by changing what lands in the inbox (or what sits in
the store) and then run the same Dagster jobs `make demo` runs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from dagster import AssetKey, DagsterInstance, Definitions, ExecuteInProcessResult

from assets.ecommerce.collection import BASELINE_KEY
from examples.ecommerce.generate import default_paths, generate, generate_feedback
from examples.ecommerce.sources import SOURCES, SourceKeys, kafka_message, write_batch
from pipelines import ecommerce
from pipelines.approve_code import approved_transforms
from pipelines.deployment import resources_for
from tests.runs import StoredArtifacts

EVENTS = 3_000  # enough for collection and processing controls
MODEL_EVENTS = 30_000  # enough users and items for a recommender to beat popularity
QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}


@dataclass
class Shop(StoredArtifacts):
    """One pipeline instance over its own runtime folder, with a generated world."""

    home: Path
    events: int = EVENTS
    instance: DagsterInstance = field(default_factory=DagsterInstance.ephemeral)
    defs: Definitions | None = None

    def __post_init__(self) -> None:
        self.paths = default_paths(self.home)
        self.summary = generate(seed=7, events=self.events, home=self.home)
        self.keys = SourceKeys.load_or_create(self.paths["keys"])
        self.defs = ecommerce.build_definitions()
        resources_for("ecommerce")["approvals"].approve(approved_transforms(), approver="tests")

    def run(self, job: str) -> ExecuteInProcessResult:
        return self.defs.resolve_job_def(job).execute_in_process(
            instance=self.instance, raise_on_error=False, run_config=QUIET
        )

    def baseline(self) -> None:
        """Materialise the trusted baseline from the reference window, once."""
        if self.instance.get_latest_materialization_event(BASELINE_KEY) is None:
            assert self.run("ecommerce_baseline").success

    def lifecycle(self) -> ExecuteInProcessResult:
        """The baseline (once) and then collection and processing, as `make demo` runs them."""
        self.baseline()
        return self.run("ecommerce_lifecycle")

    def run_selection(self, assets: list[str]) -> ExecuteInProcessResult:
        """Part of the lifecycle job (with the selected assets' checks), after the baseline."""
        self.baseline()
        return self.defs.resolve_job_def("ecommerce_lifecycle").execute_in_process(
            instance=self.instance,
            raise_on_error=False,
            run_config=QUIET,
            asset_selection=[AssetKey.from_user_string(a) for a in assets],
        )

    def inbox(self, topic: str) -> Path:
        return self.paths["inbox"] / topic

    def land(
        self,
        source: str,
        payloads: list[dict],
        *,
        batch_id: str,
        signer=True,
        raw_lines: list[bytes] | None = None,
        topic: str | None = None,
    ) -> Path:
        """Land one extra batch as `source` would (signed by its key unless told otherwise)."""
        topic = topic or SOURCES[source]
        offsets: dict = {}
        messages = [
            kafka_message(topic, offsets, p["user_id"], p, p.get("event_time") or p["review_time"])
            for p in payloads
        ]
        key = self.keys.signer(source) if signer is True else signer
        return write_batch(
            self.paths["inbox"],
            source,
            topic,
            messages,
            key,
            batch_id=batch_id,
            created_at=datetime.now(UTC),
            raw_lines=raw_lines,
        )

    def feedback(self, cycle: int, transform: Callable[[dict], dict] | None = None) -> None:
        """Land week `cycle` of feedback; `transform` rewrites each activity payload before signing."""
        generate_feedback(7, self.events, self.home, cycle=cycle)
        if transform is None:
            return
        folder = self.paths["feedback"] / "user-activity"
        for manifest in sorted(folder.glob("*.manifest.json")):
            meta = json.loads(manifest.read_text())
            data = folder / f"{meta['batch_id']}.jsonl"
            messages = [json.loads(line) for line in data.read_bytes().splitlines()]
            for message in messages:
                message["value"] = json.dumps(transform(json.loads(message["value"])))
            write_batch(
                self.paths["feedback"],
                meta["source"],
                meta["topic"],
                messages,
                self.keys.signer(meta["source"]),
                batch_id=meta["batch_id"],
                created_at=datetime.now(UTC),
            )

    def payloads(self, topic: str, limit: int | None = None, source: str = "") -> list[dict]:
        """Payloads already in the inbox for a topic (to copy realistic records from)."""
        found = []
        for path in sorted(self.inbox(topic).glob(f"{source}*.jsonl")):
            for line in path.read_bytes().splitlines():
                found.append(json.loads(json.loads(line)["value"]))
                if limit and len(found) >= limit:
                    return found
        return found
