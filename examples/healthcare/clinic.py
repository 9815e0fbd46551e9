"""A small health system and helpers to land file batches in it as its sources would."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar

from dagster import AssetKey

from assets.healthcare.collection import BASELINE_KEY, PSEUDONYM_KEY_NAME
from assets.healthcare.modeling import DiagnosticSettings
from examples.delivery import staged_delivery
from examples.healthcare.batches import SOURCES, load_or_create_keys, write_file_batch
from examples.healthcare.generate import default_paths, generate, generate_feedback
from examples.runs import PipelineInstance
from pipelines import healthcare
from pipelines.approve_retraining import approve
from resources.kms_keys import key_provider_from_environment
from resources.runtime import RuntimeHome

STUDIES = 400  # per window: enough for every collection control
MODEL_STUDIES = 900  # enough lesions for a CNN to learn in a few epochs
# The demo's CNN learns from ~2,100 images and is held to AUC 0.85, sensitivity and specificity 0.75;
# a small clinic's learns from ~630 (13 s) and reaches AUC 0.82-0.85, so its minimums sit lower.
# A 900-study world's model is held to these (a code server reads the same file through
# PIPELINE_HEALTHCARE_SETTINGS: `make demo-stack`, the stack tests).
SMALL_WORLD_SETTINGS = Path(__file__).with_name("small-world.json")
SMALL_THRESHOLDS = json.loads(SMALL_WORLD_SETTINGS.read_text())
SMALL_SETTINGS = DiagnosticSettings(**SMALL_THRESHOLDS)


@dataclass
class Clinic(PipelineInstance):
    """One healthcare pipeline instance over its own runtime folder, with generated sources."""

    example: ClassVar[str] = "healthcare"
    baseline_key: ClassVar[AssetKey] = BASELINE_KEY
    studies: int = STUDIES
    settings: DiagnosticSettings = field(default_factory=lambda: SMALL_SETTINGS)

    def __post_init__(self) -> None:
        # A fixed pseudonym key makes the patient split, and so the trained model, the same on
        # every run (with a fresh random key each run, a 600-image model's AUC varies by +-0.1).
        key_provider_from_environment(str(self.home / "keys")).import_secret(
            PSEUDONYM_KEY_NAME, bytes(range(32))
        )
        self.paths = default_paths(self.home)
        self.summary = generate(seed=self.seed, studies=self.studies, home=self.home, workers=1)
        self.keys = load_or_create_keys(self.paths["keys"])
        self.defs = healthcare.build_definitions(
            RuntimeHome(self.home), self.trust, diagnostic_settings=self.settings
        )
        self.approve_code()
        self.trust_release_key()

    def approve_retraining(self, reviewer: str) -> dict:
        """A reviewer's approval of the newest training set (what `make approve-retraining` signs)."""
        return approve(
            self.ledger,
            self.defs.resources["retraining_approvals"],
            reviewer,
            self.reviewer_key("retraining"),
        )

    def feedback(self, cycle: int = 1, studies: int | None = None) -> None:
        """Land window `cycle` of new studies, delivered whole (see `staged_delivery`)."""
        with staged_delivery(self.home, self.paths["feedback"]) as staging:
            generate_feedback(
                self.seed, studies or self.studies, self.home, cycle=cycle, workers=1, landing=staging
            )

    def batch_files(self, topic: str, window: str = "inbox") -> list[Path]:
        """The landed batch folders of a topic, in order."""
        folder = self.paths[window] / topic
        return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))

    def land(
        self,
        source: str,
        files: dict[str, bytes],
        *,
        batch_id: str,
        window: str = "inbox",
        signer=True,
        created_at: datetime | None = None,
    ) -> Path:
        """Land one extra batch as `source` would (signed by its key unless told otherwise)."""
        return write_file_batch(
            self.paths[window],
            source,
            SOURCES[source],
            files,
            self.keys.signer(source) if signer is True else signer,
            batch_id=batch_id,
            created_at=created_at or datetime.now(UTC),
        )

    def reland(self, folder: Path, change, *, window: str = "inbox") -> None:
        """Rewrite a landed batch through `change(files) -> files`, re-signed by its source, same time."""
        manifest = json.loads((folder.parent / f"{folder.name}.manifest.json").read_text())
        files = {p.name: p.read_bytes() for p in sorted(folder.iterdir())}
        self.land(
            manifest["source"],
            change(files),
            batch_id=manifest["batch_id"],
            window=window,
            created_at=datetime.fromisoformat(manifest["created_at"]),
        )
