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

from assets.healthcare.modeling import MODEL_KEY, TRAINING_SET_KEY
from assets.promotion import champion_asset, load_champion, release_check
from domain.healthcare import diagnostic_model as cnn
from domain.healthcare.release import ARCHITECTURES, MODEL_NAME
from domain.healthcare.transforms import image_array
from resources.release_folder import ReleaseFolder
from resources.tables import ModelDir
from resources.trust_store import TrustStore

CHAMPION_KEY = AssetKey(["healthcare", "champion_model"])
OWNER = "team:ml-platform"
# How much AUC a challenger may lose against the champion on the trusted test patients (noise).
AUC_TOLERANCE = 0.02


@asset_check(
    asset=MODEL_KEY,
    name="not_worse_than_champion",
    blocking=True,
    additional_ins={"training": AssetIn(key=TRAINING_SET_KEY)},
)
def not_worse_than_champion(
    context: AssetCheckExecutionContext,
    releases: ResourceParam[ReleaseFolder],
    trust_store: ResourceParam[TrustStore],
    diagnostic_model: ModelDir,
    training: pd.DataFrame,
) -> AssetCheckResult:
    """The challenger's AUC on the trusted test patients is at least the serving champion's.

    Only trusted studies are scored, so new data cannot grade its own
    homework. The champion is loaded through the secure loader.
    """
    champion = load_champion(releases, trust_store, MODEL_NAME, ARCHITECTURES)
    if champion is None:
        return AssetCheckResult(passed=True, description="No champion yet: the first model is promoted.")
    challenger, _ = cnn.load_model(diagnostic_model.path)
    test = training[(training["split"] == "test") & (training["tier"] == "trusted")]
    images, labels = image_array(test), test["label"].to_numpy(dtype=np.int64)
    scores = {
        "champion": cnn.evaluate(champion.module, images, labels)["auc"],
        "challenger": cnn.evaluate(challenger, images, labels)["auc"],
    }
    return AssetCheckResult(
        passed=scores["challenger"] >= scores["champion"] - AUC_TOLERANCE,
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "champion_version": champion.version,
            "auc": MetadataValue.json(scores),
            "tolerance": AUC_TOLERANCE,
        },
    )


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
