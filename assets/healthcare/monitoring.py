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
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    Definitions,
    MetadataValue,
    ResourceParam,
    asset,
    asset_check,
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
from assets.promotion import load_champion
from domain.healthcare import lesion_cnn, ood, transforms
from domain.healthcare.release import ARCHITECTURES, MODEL_NAME
from resources.code_approval import CodeApprovals, code_digest
from resources.loader import LoadedModel
from resources.release_folder import ReleaseFolder
from resources.tables import TableFile
from resources.trust_store import TrustStore

FEEDBACK_STUDIES_KEY = AssetKey(["healthcare", "feedback_studies"])
FEEDBACK_NOTES_KEY = AssetKey(["healthcare", "feedback_notes"])
FEEDBACK_DRIFT_KEY = AssetKey(["healthcare", "metadata_drift"])
FEEDBACK_IMAGES_KEY = AssetKey(["healthcare", "feedback_images"])
OWNER = "team:ml-engineering"
NUMERIC_FEATURES = ["rows", "pixel_spacing", "window_center", "window_width"]
CATEGORICAL_FEATURES = ["modality", "source"]
# In-distribution studies are refused at most ~1% (the guard is calibrated at 0.5%): a larger share
# of new studies outside the champion's training distribution is a fleet change or a flood.
MAX_OUT_OF_DISTRIBUTION_SHARE = 0.05
NO_CHAMPION = "no released model: nothing to compare the study with"


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


def screen_feedback(frame: pd.DataFrame, champion: LoadedModel | None) -> pd.DataFrame:
    """`frame` with `ood_reason` ("" inside the champion's training distribution) and `ood_distance`.

    The serving model's own guard (signed in its release) judges each study, as the server
    would. Without a champion nothing can vouch for new studies, so all are out (fail closed).
    """
    if champion is None:
        return frame.assign(ood_reason=NO_CHAMPION, ood_distance=float("nan"))
    guard = ood.OODGuard.from_dict(champion.config.get(ood.CONFIG_KEY), champion.module.embedding_dim)
    embeddings = lesion_cnn.embed_images(champion.module, transforms.image_array(frame))
    verdicts = guard.assess(ood.acquisition_records(frame), embeddings)
    return frame.assign(
        ood_reason=[v.reason or "" for v in verdicts],
        ood_distance=[float("nan") if v.distance is None else v.distance for v in verdicts],
    )


@asset(
    key=FEEDBACK_IMAGES_KEY,
    ins={"studies": AssetIn(key=FEEDBACK_STUDIES_KEY), "notes": AssetIn(key=FEEDBACK_NOTES_KEY)},
    deps=[FEEDBACK_DRIFT_KEY],
    group_name="monitoring",
    code_version=code_digest(transforms.prepare_images) + code_digest(screen_feedback)[-8:],
    kinds={"pandas", "pillow", "parquet", "dvc"},
    owners=[OWNER],
)
def feedback_images(
    context: AssetExecutionContext,
    approvals: CodeApprovals,
    releases: ResourceParam[ReleaseFolder],
    trust_store: ResourceParam[TrustStore],
    studies: TableFile,
    notes: TableFile,
) -> pd.DataFrame:
    """The new studies as labelled, normalised images, each judged by the champion's OOD guard.

    Protects retraining from studies the model was never trained for (another scanner
    geometry, body part or modality; a slow walk of the acquisition away from what the
    model was validated on): they stay in this table, quarantined with their reason in
    `ood_reason`, counted here, and the training set leaves them out.
    """
    frame = labelled_images(context, approvals, studies, notes)
    frame = screen_feedback(frame, load_champion(releases, trust_store, MODEL_NAME, ARCHITECTURES))
    outside = frame[frame["ood_reason"] != ""]
    context.add_output_metadata(
        {
            "out_of_distribution": len(outside),
            "out_of_distribution_share": len(outside) / len(frame) if len(frame) else 0.0,
            "out_of_distribution_tests": MetadataValue.json(
                outside["ood_reason"].str.split(":").str[0].value_counts().to_dict()
            ),
            "quarantined": MetadataValue.json(
                outside[["study_uid", "ood_reason"]].head(20).to_dict("records")
            ),
        }
    )
    return frame


@asset_check(asset=FEEDBACK_IMAGES_KEY, name="feedback_within_training_distribution", blocking=True)
def feedback_within_training_distribution(
    context: AssetCheckExecutionContext, table: TableFile
) -> AssetCheckResult:
    """At most a small share of new studies lies outside the champion's training distribution.

    Out-of-distribution studies never reach a training set either way; this check makes a
    flood of them (an attacker steering retraining, a reconfigured scanner fleet) stop the
    run and show, instead of passing quietly as a smaller training set. Blocking: above
    `MAX_OUT_OF_DISTRIBUTION_SHARE`, several times the guard's false-refusal rate.
    """
    reasons = pd.read_parquet(table.path, columns=["ood_reason"])["ood_reason"]
    outside = reasons[reasons != ""]
    share = len(outside) / len(reasons) if len(reasons) else 0.0
    return AssetCheckResult(
        passed=share <= MAX_OUT_OF_DISTRIBUTION_SHARE,
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "studies": len(reasons),
            "out_of_distribution": len(outside),
            "share": share,
            "max_share": MAX_OUT_OF_DISTRIBUTION_SHARE,
            "reasons": MetadataValue.json(outside.value_counts().head(10).to_dict()),
        },
    )


defs = Definitions(
    assets=[feedback_studies, feedback_notes, metadata_drift, feedback_images],
    asset_checks=[
        *source_checks(FEEDBACK_STUDIES_KEY, allow_empty=True),
        volume_check(FEEDBACK_STUDIES_KEY, BASELINE_KEY, "studies"),
        deidentified_check(FEEDBACK_STUDIES_KEY),
        *source_checks(FEEDBACK_NOTES_KEY, allow_empty=True),
        *label_checks(FEEDBACK_NOTES_KEY),
        drift_error_check(FEEDBACK_DRIFT_KEY),
        feedback_within_training_distribution,
    ],
)
