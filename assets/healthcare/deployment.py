"""Deployment: signed promotion of a diagnostic model that is not worse than the champion.

Promotion runs only when every blocking check upstream passed. It uses the
same signing, publishing and registry code as every example
(`assets.promotion`): the version stamped into the signed config only ever
increases, so servers refuse a rollback, and only this step holds the
release key.
"""

import numpy as np
import pandas as pd
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetIn,
    AssetKey,
    Definitions,
    MetadataValue,
    ResourceParam,
    asset_check,
)

from assets.checks.markdown import markdown_table
from assets.healthcare.collection import FALSE_ALARM_RATE
from assets.healthcare.modeling import MODEL_KEY, TRAINING_SET_KEY, DiagnosticSettings
from assets.promotion import champion_asset, load_champion, release_check
from domain.healthcare import diagnostic_model as cnn
from domain.healthcare.lesion_cnn import predict_proba
from domain.healthcare.release import ARCHITECTURES, MODEL_NAME
from domain.healthcare.transforms import image_array
from domain.subgroups import SubgroupRegression, subgroup_regressions
from resources.release_folder import ReleaseFolder
from resources.tables import ModelDir
from resources.trust_store import TrustStore

CHAMPION_KEY = AssetKey(["healthcare", "champion_model"])
OWNER = "team:ml-platform"
# How much AUC a challenger may lose against the champion on the trusted test patients (noise).
AUC_TOLERANCE = 0.02
# How much of a subgroup's sensitivity or specificity it may be shown to lose: two clean trainings
# disagree on a few cases of each subgroup, and the paired bound only counts what exceeds that churn.
SUBGROUP_TOLERANCE = 0.05


@asset_check(
    asset=MODEL_KEY,
    name="not_worse_than_champion",
    blocking=True,
    additional_ins={"training": AssetIn(key=TRAINING_SET_KEY)},
)
def not_worse_than_champion(
    context: AssetCheckExecutionContext,
    diagnostic_settings: DiagnosticSettings,
    releases: ResourceParam[ReleaseFolder],
    trust_store: ResourceParam[TrustStore],
    diagnostic_model: ModelDir,
    training: pd.DataFrame,
) -> AssetCheckResult:
    """The challenger is not worse than the serving champion on the trusted test patients:
    overall AUC within a tolerance, and no subgroup (modality, body part…) shown to lose more
    than a tolerance of its sensitivity or specificity.

    Only trusted studies are scored, so new data cannot grade its own
    homework. The subgroup test is paired (the same cases, each model at its
    own threshold) and split over every rate tested: a retraining that teaches
    the model to miss one modality's lesions (OWASP LLM04, MITRE ATLAS
    AML.T0020) fails even when the overall AUC holds. The champion is loaded
    through the secure loader.
    """
    champion = load_champion(releases, trust_store, MODEL_NAME, ARCHITECTURES)
    if champion is None:
        return AssetCheckResult(passed=True, description="No champion yet: the first model is promoted.")
    challenger, config = cnn.load_model(diagnostic_model.path)
    test = training[(training["split"] == "test") & (training["tier"] == "trusted")]
    images, labels = image_array(test), test["label"].to_numpy(dtype=np.int64)
    scores = {
        "champion": predict_proba(champion.module, images),
        "challenger": predict_proba(challenger, images),
    }
    auc = {name: cnn.binary_metrics(labels, p)["auc"] for name, p in scores.items()}
    regressions = subgroup_regressions(
        test,
        scores["champion"] >= champion.config.get("threshold", 0.5),
        scores["challenger"] >= config.get("threshold", 0.5),
        diagnostic_settings.subgroups,
        false_alarm_rate=FALSE_ALARM_RATE,
    )
    worse = [r.name for r in regressions if r.drop_lower_bound > SUBGROUP_TOLERANCE]
    return AssetCheckResult(
        passed=auc["challenger"] >= auc["champion"] - AUC_TOLERANCE and not worse,
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "champion_version": champion.version,
            "champion_auc": auc["champion"],
            "challenger_auc": auc["challenger"],
            "tolerance": AUC_TOLERANCE,
            "subgroup_tolerance": SUBGROUP_TOLERANCE,
            "false_alarm_rate": FALSE_ALARM_RATE,
            "rates_tested": len(regressions),
            "largest_subgroup_drop_bound": max((r.drop_lower_bound for r in regressions), default=0.0),
            "worse_subgroups": MetadataValue.json(worse),
            "subgroups": MetadataValue.md(_regressions_table(regressions)),
        },
    )


def _regressions_table(regressions: list[SubgroupRegression]) -> str:
    return markdown_table(
        ["subgroup", "rate", "cases", "champion", "challenger", "lost", "gained", "drop (lower bound)"],
        (
            [f"{r.column}={r.value}", r.rate, r.cases, f"{r.champion:.3f}", f"{r.challenger:.3f}", r.lost,
             r.gained, f"{r.drop_lower_bound:.3f}"]
            for r in regressions
        ),
        text_columns=2,
    )  # fmt: skip


champion_model = champion_asset(
    CHAMPION_KEY,
    MODEL_KEY,
    MODEL_NAME,
    description="The signed diagnostic release the model server loads (the MLflow registry's `champion`). "
    "Only this step holds the release key; the version in the signed config only ever increases.",
)


defs = Definitions(
    assets=[champion_model],
    asset_checks=[not_worse_than_champion, release_check(CHAMPION_KEY, MODEL_NAME, ARCHITECTURES)],
)
