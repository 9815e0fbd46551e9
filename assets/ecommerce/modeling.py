"""Modeling: a BPR matrix-factorisation recommender, trained only on checked data.

Before training, blocking checks compare the training set with the trusted
reference (label balance, distributions) and look for label issues in the
sentiment labels. The model must beat a popularity baseline on held-out
recall@10 and NDCG@10, must not be easy to push around with fake accounts
(shilling sensitivity), and its MLflow run must record the exact dataset
digests it learned from. Weights are safetensors plus JSON: nothing pickled.
"""

from collections.abc import Callable

import pandas as pd
import torch
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    AutomationCondition,
    Config,
    ConfigurableResource,
    Definitions,
    MetadataValue,
    asset,
    asset_check,
)

from assets.checks.evidence import materialization_metadata
from assets.checks.tracking import tracking_check
from assets.ecommerce.collection import REFERENCE_EVENTS_KEY, REFERENCE_REVIEWS_KEY
from assets.ecommerce.monitoring import FEEDBACK_INTERACTIONS_KEY
from assets.ecommerce.processing import INTERACTIONS_KEY, SCORED_REVIEWS_KEY
from domain.distribution import DEFAULT_FALSE_ALARM_RATE, CalibratedTest, share_shift
from domain.ecommerce import ranking_metrics, recommender, shilling, transforms
from domain.ecommerce.training_data import (
    LABEL_ISSUE_FOLDS,
    PROFILE_COLUMNS,
    label_balance_shift,
    label_issue_share,
    profile_drift,
    sentiment_reference,
    training_profile,
)
from domain.tables import read_table
from resources.code_approval import CodeApprovals, code_digest
from resources.digests import git_revision
from resources.integrity import IntegrityLedger
from resources.scratch import ScratchSpace
from resources.spark import SparkResource
from resources.tables import ModelDir, TableFile, spark_to_table_file
from resources.tracking import ExperimentTracking

TRAINING_REFERENCE_KEY = AssetKey(["ecommerce", "training_reference"])
TRAINING_SET_KEY = AssetKey(["ecommerce", "training_interactions"])
MODEL_KEY = AssetKey(["ecommerce", "recommender_model"])
OWNER = "team:ml-engineering"

FALSE_ALARM_RATE = DEFAULT_FALSE_ALARM_RATE  # per check, on clean data: the calibrated limits' one knob


class RecommenderSettings(ConfigurableResource):
    """Training hyperparameters, shared by training and the shilling check (tests use fewer epochs)."""

    dim: int = 32
    epochs: int = 20
    lr: float = 0.01
    weight_decay: float = 0.03
    batch_size: int = 4096
    seed: int = 7
    device: str = "cpu"
    # The attack budget the model must withstand: this share of fake accounts may not
    # lift an unpopular item into more than `max_shilling_lift` of real users' top-10.
    shilling_fake_user_share: float = 0.01
    max_shilling_lift: float = 0.25
    shilling_epochs: int = 5
    # One thread: BPR batches are small, and extra threads only fight Spark for the cores.
    torch_threads: int = 1

    def train_config(self) -> recommender.TrainConfig:
        return recommender.TrainConfig(
            dim=self.dim,
            epochs=self.epochs,
            lr=self.lr,
            weight_decay=self.weight_decay,
            batch_size=self.batch_size,
            seed=self.seed,
            device=self.device,
        )


@asset(
    key=TRAINING_REFERENCE_KEY,
    ins={"events": AssetIn(key=REFERENCE_EVENTS_KEY), "reviews": AssetIn(key=REFERENCE_REVIEWS_KEY)},
    group_name="modeling",
    io_manager_key="json_io_manager",
    kinds={"spark", "json"},
    owners=[OWNER],
)
def training_reference(
    context: AssetExecutionContext,
    spark: SparkResource,
    approvals: CodeApprovals,
    scratch: ScratchSpace,
    events: TableFile,
    reviews: TableFile,
) -> dict:
    """Training-data statistics of the trusted reference window, made by the approved transforms.

    The yardstick for the pre-training checks: label balance, confidence and
    activity distributions, and a sentiment grader fitted on the reference
    reviews with the share of their labels it contradicts out of fold.
    """
    for name in ("sessionise", "build_interactions"):
        approvals.require(name, getattr(transforms, name))
    frame = transforms.build_interactions(
        transforms.sessionise(spark.session().read.parquet(str(events.path)))
    )
    interactions = read_table(
        spark_to_table_file(frame, scratch.path("reference-interactions.parquet")).path,
        PROFILE_COLUMNS,
        categorical=["user_id", "item_id"],
    )
    reference = {
        "training": training_profile(interactions),
        "label_issues": sentiment_reference(pd.read_parquet(reviews.path)),
    }
    grader = reference["label_issues"]
    context.add_output_metadata(
        {
            "interactions": len(interactions),
            "label_share": reference["training"]["label_share"],
            "labelled_reviews": grader["reviews"],
            **({"label_issue_share": grader["share"]} if "share" in grader else {}),
        }
    )
    return reference


class TrainingSetConfig(Config):
    """How much untrusted (feedback) data a training set may hold."""

    max_untrusted_share: float = 0.2
    seed: int = 7


RETRAIN = (
    # since_last_handled: an update seen while its run is still in progress or its checks have not yet
    # run would otherwise be forgotten by the next tick, and that feedback would never be learnt from.
    (AutomationCondition.on_cron("0 4 * * 1") | AutomationCondition.any_deps_updated().since_last_handled())
    & AutomationCondition.all_deps_blocking_checks_passed()
    & ~AutomationCondition.any_deps_in_progress()
    & ~AutomationCondition.in_progress()
).with_label("weekly or on new validated feedback, only when every upstream blocking check passed")


@asset(
    key=TRAINING_SET_KEY,
    ins={"interactions": AssetIn(key=INTERACTIONS_KEY), "feedback": AssetIn(key=FEEDBACK_INTERACTIONS_KEY)},
    group_name="modeling",
    kinds={"pandas", "parquet", "dvc"},
    owners=[OWNER],
    automation_condition=RETRAIN,
)
def training_interactions(
    context: AssetExecutionContext, config: TrainingSetConfig, interactions: TableFile, feedback: TableFile
) -> pd.DataFrame:
    """The interactions the recommender learns from: all trusted rows plus capped, validated feedback.

    Feedback can only add pairs the trusted data lacks, and at most
    `max_untrusted_share` of the set. Its checks run before any training:
    a set that drifted from the trusted reference, or whose labels changed
    balance, never reaches a model.
    """
    trusted = pd.read_parquet(interactions.path).assign(tier="trusted")
    untrusted = pd.read_parquet(feedback.path).assign(tier="untrusted")
    known = pd.MultiIndex.from_frame(trusted[["user_id", "item_id"]])
    untrusted = untrusted[~pd.MultiIndex.from_frame(untrusted[["user_id", "item_id"]]).isin(known)]
    cap = int(config.max_untrusted_share / (1 - config.max_untrusted_share) * len(trusted))
    if len(untrusted) > cap:
        untrusted = untrusted.sample(n=cap, random_state=config.seed)
    frame = pd.concat([trusted, untrusted], ignore_index=True)
    share = len(untrusted) / len(frame) if len(frame) else 0.0
    context.add_output_metadata(
        {
            "trusted_rows": len(trusted),
            "untrusted_rows": len(untrusted),
            "untrusted_share": share,
            "max_untrusted_share": config.max_untrusted_share,
            "users": frame["user_id"].nunique(),
            "items": frame["item_id"].nunique(),
        }
    )
    return frame


@asset_check(asset=TRAINING_SET_KEY, name="untrusted_share_within_cap", blocking=True)
def untrusted_share_within_cap(
    context: AssetCheckExecutionContext, training_interactions: pd.DataFrame
) -> AssetCheckResult:
    """Untrusted feedback is at most the configured share of the stored training set."""
    meta = materialization_metadata(context, TRAINING_SET_KEY)
    share = (
        float((training_interactions["tier"] == "untrusted").mean()) if len(training_interactions) else 0.0
    )
    cap = meta.get("max_untrusted_share", 0.0)
    return AssetCheckResult(
        passed=share <= cap + 1e-9,
        severity=AssetCheckSeverity.ERROR,
        metadata={"untrusted_share": share, "cap": cap},
    )


def _label_balance_result(interactions: pd.DataFrame, reference: dict) -> AssetCheckResult:
    current = training_profile(interactions, reference["training"])
    test = label_balance_shift(reference["training"], current, false_alarm_rate=FALSE_ALARM_RATE)
    return AssetCheckResult(
        passed=test.passed,
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "label_share": current["label_share"],
            "reference_share": reference["training"]["label_share"],
            **test.metadata(),
        },
    )


def _distribution_result(interactions: pd.DataFrame, reference: dict) -> AssetCheckResult:
    current = training_profile(interactions, reference["training"])
    drift = profile_drift(reference["training"], current, false_alarm_rate=FALSE_ALARM_RATE)
    shifted = [name for name, test in drift.items() if not test.passed]
    return AssetCheckResult(
        passed=not shifted,
        severity=AssetCheckSeverity.ERROR,
        description=_drift_description(drift, shifted),
        metadata={"rows": len(interactions), **_flat(drift)},
    )


def _drift_description(drift: dict[str, CalibratedTest], shifted: list[str]) -> str:
    if not shifted:
        return "Every feature is within what a clean window of this size shows."
    return "Shifted beyond a clean window of this size: " + ", ".join(
        f"{name} (PSI {drift[name].statistic:.3f} > {drift[name].limit:.3f})" for name in shifted
    )


def _flat(drift: dict[str, CalibratedTest]) -> dict[str, float | int]:
    """`<feature>_psi`, `<feature>_limit`, ... as numbers, so each one's history can be plotted."""
    return {
        f"{name}_{field}": value
        for name, test in drift.items()
        for field, value in test.metadata().items()
        if field not in ("false_alarm_rate", "tests")
    } | {"false_alarm_rate": FALSE_ALARM_RATE, "tests": len(drift)}


def reference_checks(
    name: str, judge: Callable[[pd.DataFrame, dict], AssetCheckResult], protects: str
) -> list[AssetChecksDefinition]:
    """Blocking check `name` twice: on the training set's trusted rows, and on each feedback window.

    The training set's untrusted rows are not a window but the pairs its trusted
    data lacks (fewer carts by construction), so they are judged where they
    arrive, as a whole window, against a trusted window of the same size.
    """

    @asset_check(
        asset=TRAINING_SET_KEY,
        name=name,
        blocking=True,
        additional_ins={"reference": AssetIn(key=TRAINING_REFERENCE_KEY)},
        description=f"The training set's trusted rows: {protects}",
    )
    def on_trusted_rows(
        context: AssetCheckExecutionContext, training_interactions: pd.DataFrame, reference: dict
    ) -> AssetCheckResult:
        return judge(training_interactions[training_interactions["tier"] == "trusted"], reference)

    @asset_check(
        asset=FEEDBACK_INTERACTIONS_KEY,
        name=name,
        blocking=True,
        additional_ins={"reference": AssetIn(key=TRAINING_REFERENCE_KEY)},
        description=f"A window of feedback, before any of it reaches a training set: {protects}",
    )
    def on_feedback_window(
        context: AssetCheckExecutionContext, feedback_interactions: TableFile, reference: dict
    ) -> AssetCheckResult:
        frame = pd.read_parquet(feedback_interactions.path)
        if frame.empty:
            return AssetCheckResult(passed=True, description="No feedback in this window.")
        return judge(frame, reference)

    return [on_trusted_rows, on_feedback_window]


LABEL_BALANCE_CHECKS = reference_checks(
    "label_balance_matches_reference",
    _label_balance_result,
    "the share of positive (cart/purchase) labels stays within what a trusted window of this size "
    "shows (0.1% false alarms). Flipped or injected labels, and views turned into purchases a few "
    "points a week so that no week looks far from the last, move it (OWASP LLM04, MITRE ATLAS AML.T0020).",
)
DISTRIBUTION_CHECKS = reference_checks(
    "distribution_matches_reference",
    _distribution_result,
    "the confidence, items-per-user and users-per-item distributions stay within what a trusted "
    "window of this size shows (PSI per feature, 0.1% false alarms shared by the three). Fake "
    "accounts with bursts of purchases and items pushed by bot traffic show up here before they "
    "show up in recommendations (OWASP LLM04, MITRE ATLAS AML.T0020).",
)


@asset_check(
    asset=SCORED_REVIEWS_KEY,
    name="sentiment_label_issues",
    blocking=True,
    additional_ins={"reference": AssetIn(key=TRAINING_REFERENCE_KEY)},
)
def sentiment_label_issues(
    context: AssetCheckExecutionContext, scored_reviews: TableFile, reference: dict
) -> AssetCheckResult:
    """Sentiment labels that contradict their review text stay at the reference's natural rate.

    Protects against label flipping (OWASP LLM04, MITRE ATLAS AML.T0020): a
    sentiment grader fitted on the reference reviews only (so it cannot learn
    this window's flips) scores each review's text, cleanlab's confident
    learning with the reference's thresholds flags the labels it contradicts,
    and the share flagged is tested one-sided against the reference's out-of-fold
    share at both window sizes, so a small window is not stopped by chance and
    a large one cannot hide a few points of flips.
    """
    expected = reference["label_issues"]
    if "thresholds" not in expected:
        return AssetCheckResult(
            passed=False,
            severity=AssetCheckSeverity.ERROR,
            description="The training reference has no sentiment grader: it predates it, or its window had "
            f"fewer than {LABEL_ISSUE_FOLDS} labelled reviews of either sentiment. Rematerialise "
            "training_reference from a reference window with reviews of both kinds.",
        )
    found = label_issue_share(pd.read_parquet(scored_reviews.path), expected)
    if not found["reviews"]:
        return AssetCheckResult(
            passed=True, severity=AssetCheckSeverity.ERROR, description="No labelled reviews to check."
        )
    test = share_shift(
        "sentiment_label_issues", expected["share"], expected["reviews"], found["share"], found["reviews"],
        one_sided=True, false_alarm_rate=FALSE_ALARM_RATE,
    )  # fmt: skip
    return AssetCheckResult(
        passed=test.passed,
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "issue_share": found["share"],
            "reference_share": expected["share"],
            "issues": found["issues"],
            **test.metadata(),
            "examples": MetadataValue.json(found["examples"]),
        },
    )


@asset(
    key=MODEL_KEY,
    ins={"training": AssetIn(key=TRAINING_SET_KEY)},
    group_name="modeling",
    io_manager_key="model_io_manager",
    code_version=code_digest(recommender.train_bpr),
    automation_condition=AutomationCondition.eager() & AutomationCondition.all_deps_blocking_checks_passed(),
    kinds={"pytorch", "mlflow", "safetensors"},
    owners=[OWNER],
)
def recommender_model(
    context: AssetExecutionContext,
    recommender_settings: RecommenderSettings,
    tracking: ExperimentTracking,
    ledger: IntegrityLedger,
    scratch: ScratchSpace,
    training: pd.DataFrame,
) -> ModelDir:
    """A matrix-factorisation recommender trained with BPR loss, next to a popularity baseline.

    Every training input's digest, the code version, the git revision and
    the environment go into an MLflow run. The weights are written as
    safetensors with a JSON config; the release version is assigned at promotion.
    """
    train, heldout = recommender.split_holdout(training)
    index = recommender.IdIndex.from_interactions(training)
    torch.set_num_threads(recommender_settings.torch_threads)
    cfg = recommender_settings.train_config()
    model = recommender.train_bpr(train, index, cfg, log=context.log.info)
    metrics = {
        **{f"model_{k}": v for k, v in ranking_metrics.evaluate(model, train, heldout, index).items()},
        **{
            f"popularity_{k}": v
            for k, v in ranking_metrics.popularity_baseline(train, heldout, index).items()
        },
    }
    dataset = ledger.latest(TRAINING_SET_KEY.to_user_string())
    with tracking.run(
        "ecommerce-recommender",
        tags={"dagster_run_id": context.run_id},
        code_version=context.assets_def.code_versions_by_key[MODEL_KEY],
        git_revision=git_revision(),
        torch_version=torch.__version__,
    ) as run:
        run.log_params(cfg.to_dict())
        run.log_metrics({k.replace("@", "_at_"): float(v) for k, v in metrics.items()})
        run.log_dataset(
            TRAINING_SET_KEY.to_user_string(), dataset.digest, source=dataset.path, rows=len(training)
        )
    directory = scratch.path("recommender_model")
    directory.mkdir(mode=0o700)
    recommender.save_model(model, index, cfg, metrics, directory, version=0)
    context.add_output_metadata(
        {
            **{k: MetadataValue.float(float(v)) for k, v in metrics.items()},
            "mlflow_run_id": run.run_id,
        }
    )
    return ModelDir(path=directory, details={"metrics": metrics, "mlflow_run_id": run.run_id})


@asset_check(asset=MODEL_KEY, name="beats_popularity_baseline", blocking=True)
def beats_popularity_baseline(context: AssetCheckExecutionContext) -> AssetCheckResult:
    """The model ranks held-out items better than recommending the most popular ones.

    A model that cannot beat popularity is broken or learned from bad data.
    """
    meta = materialization_metadata(context, MODEL_KEY)
    pairs = {
        m: (float(meta.get(f"model_{m}", 0.0)), float(meta.get(f"popularity_{m}", 0.0)))
        for m in ("recall@10", "ndcg@10")
    }
    return AssetCheckResult(
        passed=all(model > baseline for model, baseline in pairs.values()),
        severity=AssetCheckSeverity.ERROR,
        # Flat numbers, so the UI plots each one's history.
        metadata={
            f"{who}_{m}": MetadataValue.float(value)
            for m, pair in pairs.items()
            for who, value in zip(("model", "popularity"), pair, strict=True)
        },
    )


@asset_check(
    asset=MODEL_KEY,
    name="shilling_sensitivity_within_limit",
    blocking=True,
    additional_ins={"training": AssetIn(key=TRAINING_SET_KEY)},
)
def shilling_sensitivity_within_limit(
    context: AssetCheckExecutionContext, recommender_settings: RecommenderSettings, training: pd.DataFrame
) -> AssetCheckResult:
    """A small bandwagon attack (1% fake accounts) cannot lift an unpopular item into many top-10s.

    Retrains briefly on a copy of the training data with injected fake users
    and measures how many real users then see the target item.
    """
    train, _ = recommender.split_holdout(training)
    index = recommender.IdIndex.from_interactions(training)
    result = shilling.shilling_sensitivity(
        train,
        index,
        recommender_settings.train_config(),
        fake_user_share=recommender_settings.shilling_fake_user_share,
        epochs=recommender_settings.shilling_epochs,
    )
    return AssetCheckResult(
        passed=result["exposure_lift"] <= recommender_settings.max_shilling_lift,
        severity=AssetCheckSeverity.ERROR,
        metadata={**result, "max_lift": recommender_settings.max_shilling_lift},
    )


defs = Definitions(
    assets=[training_reference, training_interactions, recommender_model],
    asset_checks=[
        untrusted_share_within_cap,
        *LABEL_BALANCE_CHECKS,
        *DISTRIBUTION_CHECKS,
        sentiment_label_issues,
        beats_popularity_baseline,
        shilling_sensitivity_within_limit,
        tracking_check(MODEL_KEY, TRAINING_SET_KEY),
    ],
)
