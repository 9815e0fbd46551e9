"""A small e-commerce world and helpers to land batches in it as its sources would."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar

from dagster import AssetKey

from assets.ecommerce.collection import BASELINE_KEY
from examples.delivery import staged_delivery
from examples.ecommerce.generate import default_paths, generate, generate_feedback
from examples.ecommerce.sources import SOURCES, SourceKeys, kafka_message, write_batch
from examples.runs import PipelineInstance
from pipelines import ecommerce
from resources.runtime import RuntimeHome

EVENTS = 3_000  # enough for collection and processing controls
MODEL_EVENTS = 30_000  # enough users and items for a recommender to beat popularity


@dataclass
class Shop(PipelineInstance):
    """One e-commerce pipeline instance over its own runtime folder, with a generated world."""

    example: ClassVar[str] = "ecommerce"
    baseline_key: ClassVar[AssetKey] = BASELINE_KEY
    events: int = EVENTS
    generated: bool = False  # True: reopen a shop generated over `home` before, as it stands

    def __post_init__(self) -> None:
        self.paths = default_paths(self.home)
        if not self.generated:
            generate(seed=self.seed, events=self.events, home=self.home)
        self.keys = SourceKeys.load_or_create(self.paths["keys"])
        self.defs = ecommerce.build_definitions(RuntimeHome(self.home), self.trust)
        self.approve_code()
        self.trust_release_key()

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
        """Land week `cycle` of feedback; `transform` rewrites each activity payload before signing.

        The week is prepared in a staging folder and then moved into the landing zone whole, data
        before manifests, as a delivery agent would: a sensor watching the zone never sees a week
        half written, nor its clean batches before the rewrite.
        """
        with staged_delivery(self.home, self.paths["feedback"]) as staging:
            generate_feedback(self.seed, self.events, self.home, cycle=cycle, landing=staging)
            if transform is not None:
                self._rewrite(staging / "user-activity", transform)

    def rewrite(self, topic: str, transform: Callable[[dict], dict], *, window: str = "inbox") -> None:
        """Re-sign every landed batch of `topic` after `transform` rewrote each payload.

        This is what a compromised source (or a sub-processor upstream of it) can do: its
        signature is valid, only the content is the attacker's.
        """
        self._rewrite(self.paths[window] / topic, transform)

    def _rewrite(self, folder: Path, transform: Callable[[dict], dict]) -> None:
        for manifest in sorted(folder.glob("*.manifest.json")):
            meta = json.loads(manifest.read_text())
            data = folder / f"{meta['batch_id']}.jsonl"
            messages = [json.loads(line) for line in data.read_bytes().splitlines()]
            for message in messages:
                message["value"] = json.dumps(transform(json.loads(message["value"])))
            write_batch(
                folder.parent,
                meta["source"],
                meta["topic"],
                messages,
                self.keys.signer(meta["source"]),
                batch_id=meta["batch_id"],
                created_at=datetime.fromisoformat(meta["created_at"]),
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
