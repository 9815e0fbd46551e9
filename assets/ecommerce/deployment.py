"""Deployment: signed promotion of a challenger that is not worse than the champion.

Promotion runs only when every blocking check upstream passed (Dagster
skips it otherwise). It stamps a monotonically increasing version into the
model's config, signs the directory with the release key (OpenSSF
model-signing, EC P-256, offline), publishes it read-only, registers it in
the MLflow registry and moves the `champion` alias. Servers load it through
the secure loader, which verifies the signature against the trusted release
keys and refuses older versions (rollback).
"""

import pandas as pd
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetIn,
    AssetKey,
    AutomationCondition,
    Definitions,
    ResourceParam,
    asset_check,
)

from assets.ecommerce.modeling import MODEL_KEY
from assets.ecommerce.processing import INTERACTIONS_KEY
from assets.promotion import champion_asset, load_champion, release_check
from domain.ecommerce import ranking_metrics, recommender
from domain.ecommerce.release import ARCHITECTURES, MODEL_NAME
from resources.release_folder import ReleaseFolder
from resources.tables import ModelDir, TableFile
from resources.trust_store import TrustStore

CHAMPION_KEY = AssetKey(["ecommerce", "champion_model"])
OWNER = "team:ml-platform"
# How much worse than the champion a challenger may score on the trusted holdout (noise).
RECALL_TOLERANCE = 0.005


def _trusted_holdout(interactions: pd.DataFrame, *indices: recommender.IdIndex):
    """Held-out pairs of trusted data, restricted to users and items every model knows."""
    users = set.intersection(*(set(i.users) for i in indices))
    items = set.intersection(*(set(i.items) for i in indices))
    known = interactions[interactions["user_id"].isin(users) & interactions["item_id"].isin(items)]
    return recommender.split_holdout(known)


@asset_check(
    asset=MODEL_KEY,
    name="not_worse_than_champion",
    blocking=True,
    additional_ins={"trusted": AssetIn(key=INTERACTIONS_KEY)},
)
def not_worse_than_champion(
    context: AssetCheckExecutionContext,
    releases: ResourceParam[ReleaseFolder],
    trust_store: ResourceParam[TrustStore],
    recommender_model: ModelDir,
    trusted: TableFile,
) -> AssetCheckResult:
    """The challenger scores at least as well as the serving champion on a trusted holdout.

    The holdout comes from trusted interactions only, so feedback cannot
    grade its own homework. The champion is loaded through the secure loader.
    """
    champion = load_champion(releases, trust_store, MODEL_NAME, ARCHITECTURES)
    if champion is None:
        return AssetCheckResult(passed=True, description="No champion yet: the first model is promoted.")
    champion_index = recommender.IdIndex.from_dict(champion.config["id_index"])
    challenger, challenger_index, _ = recommender.load_model(recommender_model.path)
    train, heldout = _trusted_holdout(pd.read_parquet(trusted.path), champion_index, challenger_index)
    scores = {
        "champion": ranking_metrics.evaluate(champion.module, train, heldout, champion_index),
        "challenger": ranking_metrics.evaluate(challenger, train, heldout, challenger_index),
    }
    return AssetCheckResult(
        passed=scores["challenger"]["recall@10"] >= scores["champion"]["recall@10"] - RECALL_TOLERANCE,
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "champion_version": champion.version,
            **{f"{model}_{metric}": value for model, row in scores.items() for metric, value in row.items()},
            "tolerance": RECALL_TOLERANCE,
        },
    )


champion_model = champion_asset(
    CHAMPION_KEY,
    MODEL_KEY,
    MODEL_NAME,
    description="The signed release the model server loads (the MLflow registry's `champion`). Only "
    "this step holds the release key; the version in the signed config only ever increases, so "
    "servers can refuse a rollback.",
    automation_condition=AutomationCondition.eager() & AutomationCondition.all_deps_blocking_checks_passed(),
)


defs = Definitions(
    assets=[champion_model],
    asset_checks=[not_worse_than_champion, release_check(CHAMPION_KEY, MODEL_NAME, ARCHITECTURES)],
)
