"""The healthcare diagnostic's code location: DICOM and reports to a signed, served CNN.

Retraining is controlled and infrequent: new studies landing start
`healthcare_feedback`, which validates them and builds the next training set;
a reviewer looks at it and signs an approval for its exact digest (`make
approve-retraining`); only then does the daemon start `healthcare_retraining`
to train, check and promote.
"""

import json
import os
from pathlib import Path
from typing import Any

from dagster import AssetSelection, Definitions, define_asset_job, definitions

from assets.healthcare import collection, deployment, grading, modeling, monitoring, processing
from domain.healthcare.release import MODEL_NAME
from pipelines.approved_retraining import approved_retraining_sensor
from pipelines.intake import landing_sensor
from pipelines.location import build_location
from pipelines.oversight import oversight
from resources.runtime import RuntimeHome
from resources.trust_store import TrustStore

OVERSIGHT = oversight(
    "healthcare", deployment.CHAMPION_KEY, modeling.MODEL_KEY, modeling.TRAINING_SET_KEY, "30 3 * * *"
)

REFERENCE = AssetSelection.assets(
    collection.reference_studies,
    collection.reference_notes,
    collection.trusted_baseline,
    grading.reference_grader,
)
TRAINING = AssetSelection.assets(modeling.diagnostic_model, deployment.champion_model)
FEEDBACK = (AssetSelection.groups("monitoring") - OVERSIGHT.selection) | AssetSelection.assets(
    modeling.training_set
)

baseline_job = define_asset_job(
    "healthcare_baseline",
    selection=REFERENCE,
    description="Collect the reviewed reference window and compute the trusted baselines from it "
    "(profiles, label shares and a grader trained on its images).",
)
lifecycle_job = define_asset_job(
    "healthcare_lifecycle",
    selection=AssetSelection.all() - REFERENCE - OVERSIGHT.selection,
    description="Collect, de-identify, process, train, check and promote, stopping at any failed control.",
)
feedback_job = define_asset_job(
    "healthcare_feedback",
    selection=FEEDBACK,
    description="Validate new studies and build the next training set, for a reviewer to approve.",
)
retraining_job = define_asset_job(
    "healthcare_retraining",
    selection=TRAINING,
    description="Retrain on the approved training set (refused without a matching signed approval), "
    "check and promote.",
)


STAGES = (collection, processing, modeling, grading, monitoring, deployment)


def build_definitions(home: RuntimeHome, trust: TrustStore, **overrides: Any) -> Definitions:
    """The location over `home` and the operator's `trust` store; `overrides` replaces resources by key."""
    return build_location(
        "healthcare",
        stages=STAGES,
        oversight=OVERSIGHT,
        jobs=[baseline_job, lifecycle_job, feedback_job, retraining_job],
        sensors=[
            landing_sensor("healthcare", "feedback", feedback_job),
            approved_retraining_sensor("healthcare", retraining_job, MODEL_NAME, modeling.TRAINING_SET_KEY),
        ],
        home=home,
        trust=trust,
        resources={"diagnostic_settings": modeling.DiagnosticSettings(), **overrides},
    )


def settings_from_environment() -> modeling.DiagnosticSettings:
    """The model's training settings and clinical thresholds: the JSON file named by
    `$PIPELINE_HEALTHCARE_SETTINGS` (a deployment's clinical policy is configuration), else the defaults."""
    path = os.environ.get("PIPELINE_HEALTHCARE_SETTINGS")
    if not path:
        return modeling.DiagnosticSettings()
    try:
        return modeling.DiagnosticSettings(**json.loads(Path(path).read_text()))
    except (OSError, ValueError) as error:
        raise ValueError(
            f"PIPELINE_HEALTHCARE_SETTINGS={path} is not a readable JSON object of DiagnosticSettings "
            f"fields: {error}"
        ) from error


@definitions
def defs() -> Definitions:
    """What `dagster dev` / the code server loads: the location over `$PIPELINE_HOME`."""
    return build_definitions(
        RuntimeHome.from_environment(),
        TrustStore.from_environment(),
        diagnostic_settings=settings_from_environment(),
    )
