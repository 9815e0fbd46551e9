"""Monitoring: new studies after deployment, validated before they may feed retraining.

New studies and reports arrive through the same intake controls as the
inbox and are kept in the monitoring area (untrusted tier). Their metadata
is compared with the trusted reference window, never with the previous
cycle, so a slow drift spread over many retraining cycles still crosses a
threshold. Retraining itself needs a reviewer's signed approval
(`assets.healthcare.modeling`).
"""

import pandas as pd
from dagster import (
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    Definitions,
    asset,
)

from assets.checks.sources import source_checks, volume_check
from assets.checks.window_drift import drift_error_check, window_drift
from assets.healthcare.collection import (
    BASELINE_KEY,
    REFERENCE_STUDIES_KEY,
    deidentified_check,
    label_checks,
    window_asset,
)
from assets.healthcare.processing import labelled_images
from domain.healthcare import transforms
from resources.code_approval import CodeApprovals, code_digest
from resources.tables import TableFile

FEEDBACK_STUDIES_KEY = AssetKey(["healthcare", "feedback_studies"])
FEEDBACK_NOTES_KEY = AssetKey(["healthcare", "feedback_notes"])
FEEDBACK_DRIFT_KEY = AssetKey(["healthcare", "metadata_drift"])
FEEDBACK_IMAGES_KEY = AssetKey(["healthcare", "feedback_images"])
OWNER = "team:ml-engineering"
NUMERIC_FEATURES = ["rows", "pixel_spacing", "window_center", "window_width"]
CATEGORICAL_FEATURES = ["modality", "source"]


feedback_studies = window_asset(
    FEEDBACK_STUDIES_KEY,
    group="monitoring",
    window="feedback",
    kind="studies",
    description="Studies acquired after deployment (untrusted tier), through every intake control: "
    "authenticated, validated, preamble neutralised, de-identified.",
)
feedback_notes = window_asset(
    FEEDBACK_NOTES_KEY,
    group="monitoring",
    window="feedback",
    kind="notes",
    description="Reports and coded labels of the new studies (untrusted tier), checked against their labels.",
)


@asset(
    key=FEEDBACK_DRIFT_KEY,
    ins={"feedback": AssetIn(key=FEEDBACK_STUDIES_KEY), "reference": AssetIn(key=REFERENCE_STUDIES_KEY)},
    group_name="monitoring",
    io_manager_key="json_io_manager",
    kinds={"scipy", "json"},
    owners=[OWNER],
)
def metadata_drift(context: AssetExecutionContext, feedback: TableFile, reference: TableFile) -> dict:
    """PSI and KS of the new studies' acquisition metadata against the trusted reference, with a plot.

    Image size, pixel spacing, display window, modality and source: a
    scanner or protocol change (or a slow manipulation of these across
    retraining cycles) shows here before it shows in the model.
    """
    columns = NUMERIC_FEATURES + CATEGORICAL_FEATURES
    baseline = pd.read_parquet(reference.path, columns=columns)
    current = pd.read_parquet(feedback.path, columns=columns)
    return window_drift(context, baseline, current, NUMERIC_FEATURES, CATEGORICAL_FEATURES)


@asset(
    key=FEEDBACK_IMAGES_KEY,
    ins={"studies": AssetIn(key=FEEDBACK_STUDIES_KEY), "notes": AssetIn(key=FEEDBACK_NOTES_KEY)},
    deps=[FEEDBACK_DRIFT_KEY],
    group_name="monitoring",
    code_version=code_digest(transforms.prepare_images),
    kinds={"pandas", "pillow", "parquet", "dvc"},
    owners=[OWNER],
)
def feedback_images(
    context: AssetExecutionContext, approvals: CodeApprovals, studies: TableFile, notes: TableFile
) -> pd.DataFrame:
    """The new studies as labelled, normalised images, by the same approved code as the trusted ones."""
    return labelled_images(context, approvals, studies, notes)


defs = Definitions(
    assets=[feedback_studies, feedback_notes, metadata_drift, feedback_images],
    asset_checks=[
        *source_checks(FEEDBACK_STUDIES_KEY, allow_empty=True),
        volume_check(FEEDBACK_STUDIES_KEY, BASELINE_KEY, "studies"),
        deidentified_check(FEEDBACK_STUDIES_KEY),
        *source_checks(FEEDBACK_NOTES_KEY, allow_empty=True),
        *label_checks(FEEDBACK_NOTES_KEY),
        drift_error_check(FEEDBACK_DRIFT_KEY),
    ],
)
