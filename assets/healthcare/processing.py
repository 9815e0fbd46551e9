"""Processing: normalised, labelled images split by patient, and findings extracted from reports.

Every asset reads its inputs through the IO manager (digests verified
against the ledger), runs approved transformation code only (the signed
code manifest) and publishes a table that is GX-checked, ledgered and
DVC-versioned. Each asset's `code_version` is the digest of the
transformation it runs.
"""

import pandas as pd
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    Config,
    Definitions,
    MetadataValue,
    asset,
    asset_check,
)

from assets.checks.integrity import provenance_check, stored_digest_check
from assets.checks.schema import expectation_check
from assets.healthcare.collection import NOTES_KEY, STUDIES_KEY
from domain.healthcare import ood, transforms
from domain.healthcare.expectations import NOTE_FINDINGS_SUITE, STUDY_IMAGES_SUITE
from resources.code_approval import CodeApprovals, code_digest
from resources.tables import TableFile

STUDY_IMAGES_KEY = AssetKey(["healthcare", "study_images"])
NOTE_FINDINGS_KEY = AssetKey(["healthcare", "note_findings"])
OWNER = "team:clinical-data"
KINDS = {"pandas", "pillow", "parquet", "dvc"}


class SplitConfig(Config):
    """The seed of the patient-level train/validation/test split."""

    seed: int = 7


def labelled_images(
    context: AssetExecutionContext, approvals: CodeApprovals, studies: TableFile, notes: TableFile
) -> pd.DataFrame:
    """Studies joined to their reports and normalised by the approved `prepare_images`.

    Each image also carries its study's acquisition metadata (`domain.healthcare.ood.acquisition`):
    the envelope a model is trained within, and what its out-of-distribution guard compares new
    studies with.
    """
    approvals.require("prepare_images", transforms.prepare_images)
    study_frame = pd.read_parquet(studies.path)
    frame, counts = transforms.prepare_images(study_frame, pd.read_parquet(notes.path))
    acquired = pd.DataFrame(
        [{"study_uid": uid, **ood.acquisition_from_bytes(blob)} for uid, blob in zip(
            study_frame["study_uid"], study_frame["dicom"], strict=True
        )],
        columns=["study_uid", *ood.ACQUISITION_COLUMNS],
    )  # fmt: skip
    added = [c for c in ood.ACQUISITION_COLUMNS if c not in frame.columns]
    frame = frame.merge(acquired[["study_uid", *added]], on="study_uid", how="left")
    context.add_output_metadata(
        {
            **counts,
            "positive_share": float(frame["label"].mean()) if len(frame) else 0.0,
            "modalities": MetadataValue.json(frame["modality"].value_counts().to_dict()),
        }
    )
    return frame


@asset(
    key=STUDY_IMAGES_KEY,
    ins={"studies": AssetIn(key=STUDIES_KEY), "notes": AssetIn(key=NOTES_KEY)},
    group_name="processing",
    code_version=code_digest(transforms.prepare_images) + code_digest(transforms.assign_splits)[-8:],
    kinds=KINDS,
    owners=[OWNER],
)
def study_images(
    context: AssetExecutionContext,
    config: SplitConfig,
    approvals: CodeApprovals,
    studies: TableFile,
    notes: TableFile,
) -> pd.DataFrame:
    """Each study's image windowed, scaled to [0, 1] and resized to 64 px, with its label and split.

    The split is by patient (no patient in two splits), so a held-out metric
    never scores a patient the model has seen. Images are float32 blobs
    (`domain.healthcare.images`), never pickled arrays.
    """
    frame = labelled_images(context, approvals, studies, notes)
    approvals.require("assign_splits", transforms.assign_splits)
    frame = transforms.assign_splits(frame, config.seed)
    context.add_output_metadata({"splits": MetadataValue.json(frame["split"].value_counts().to_dict())})
    return frame


@asset(
    key=NOTE_FINDINGS_KEY,
    ins={"notes": AssetIn(key=NOTES_KEY)},
    group_name="processing",
    code_version=code_digest(transforms.note_findings),
    kinds={"pandas", "parquet", "dvc"},
    owners=[OWNER],
)
def note_findings(context: AssetExecutionContext, approvals: CodeApprovals, notes: TableFile) -> pd.DataFrame:
    """Lesion findings per report, asserted, negated ("no nodule") or uncertain ("cannot exclude").

    Rule-based (NegEx-style), no downloaded model. The findings explain each
    report's label, so a reviewer can see why a study counts as a lesion.
    """
    approvals.require("note_findings", transforms.note_findings)
    frame = transforms.note_findings(pd.read_parquet(notes.path))
    context.add_output_metadata(
        {
            "reports": len(frame),
            "with_asserted_lesion": int((frame["asserted"] > 0).sum()),
            "with_negated_finding": int((frame["negated"] > 0).sum()),
        }
    )
    return frame


@asset_check(asset=STUDY_IMAGES_KEY, name="patients_in_one_split", blocking=True)
def patients_in_one_split(context: AssetCheckExecutionContext, table: TableFile) -> AssetCheckResult:
    """No patient has studies in two splits (leakage would inflate every held-out metric)."""
    frame = pd.read_parquet(table.path, columns=["patient_pseudonym", "split"])
    spread = frame.groupby("patient_pseudonym")["split"].nunique()
    leaked = spread[spread > 1]
    return AssetCheckResult(
        passed=leaked.empty,
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "patients": len(spread),
            "in_several_splits": MetadataValue.json(leaked.index[:20].tolist()),
        },
    )


defs = Definitions(
    assets=[study_images, note_findings],
    asset_checks=[
        patients_in_one_split,
        *[
            check
            for key, suite, inputs in (
                (STUDY_IMAGES_KEY, STUDY_IMAGES_SUITE, [STUDIES_KEY, NOTES_KEY]),
                (NOTE_FINDINGS_KEY, NOTE_FINDINGS_SUITE, [NOTES_KEY]),
            )
            for check in (
                expectation_check(key, suite, engine="pandas"),
                stored_digest_check(key),
                provenance_check(key, inputs),
            )
        ],
    ],
)
