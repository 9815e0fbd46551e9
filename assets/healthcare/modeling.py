"""Modeling: a small CNN for lesion detection, trained only on checked, approved data.

The training set holds every trusted image plus validated new studies (the
untrusted tier, capped). Once a model is in service, training again
(retraining) needs a reviewer's signed approval naming the exact digest of
the training set. The model must meet clinical minimums (AUC, sensitivity,
specificity on the patient-level test split), show no backdoor in its
training data (spectral signatures and activation clustering on the
penultimate layer) and stay accurate under an FGSM perturbation. The
training set's labels are held to the reference grader's view first
(`assets.healthcare.grading`). Nothing is pickled.
"""

from dataclasses import asdict

import numpy as np
import pandas as pd
import torch
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    ConfigurableResource,
    Definitions,
    MetadataValue,
    ResourceParam,
    asset,
    asset_check,
)

from assets.checks.evidence import materialization_metadata
from assets.checks.integrity import stored_digest_check
from assets.checks.markdown import markdown_table
from assets.checks.schema import expectation_check
from assets.checks.tracking import tracking_check
from assets.healthcare.collection import BASELINE_KEY, FALSE_ALARM_RATE
from assets.healthcare.monitoring import FEEDBACK_IMAGES_KEY
from assets.healthcare.processing import STUDY_IMAGES_KEY
from domain.healthcare import diagnostic_model as cnn
from domain.healthcare import lesion_cnn, ood
from domain.healthcare import reference_grader as grading
from domain.healthcare.expectations import TRAINING_SET_SUITE
from domain.healthcare.release import MODEL_NAME
from domain.healthcare.robustness import (
    accuracy_drop_lower_bound,
    backdoor_report,
    fgsm_budget,
    fgsm_robustness,
)
from domain.healthcare.transforms import image_array
from domain.subgroups import SubgroupRates, SubgroupShift, label_share_shifts, subgroup_rates
from resources.code_approval import code_digest
from resources.digests import git_revision
from resources.integrity import IntegrityLedger
from resources.release_folder import ReleaseFolder
from resources.retraining_approval import RetrainingApprovals
from resources.scratch import ScratchSpace
from resources.tables import ModelDir, TableFile
from resources.tracking import ExperimentTracking

TRAINING_SET_KEY = AssetKey(["healthcare", "training_set"])
MODEL_KEY = AssetKey(["healthcare", "diagnostic_model"])
GRADER_KEY = AssetKey(["healthcare", "reference_grader"])  # built with the baseline: `grading.py`
OWNER = "team:ml-engineering"


class DiagnosticSettings(ConfigurableResource):
    """Training hyperparameters and the thresholds the model is held to (tests train smaller)."""

    image_size: int = 64
    channels: list[int] = [16, 32, 64]
    epochs: int = 15
    lr: float = 3e-3
    batch_size: int = 16
    seed: int = 7
    device: str = "cpu"
    # Adversarial batches cost ~2.5x the training time and, on these scans, ~4 points of AUC;
    # the FGSM check below holds the plainly trained model to a budget it meets.
    adversarial_epsilon: float = 0.0
    torch_threads: int = 2
    max_untrusted_share: float = 0.5
    min_auc: float = 0.85
    min_sensitivity: float = 0.75
    min_specificity: float = 0.75
    fgsm_epsilon: float = 1 / 255
    # What FGSM may cost beyond the clean reference models' drops (training runs differ more than two folds).
    fgsm_training_margin: float = 0.05
    backdoor_poison_fraction: float = 0.05
    # Columns whose values are tested one by one (label shares now; any of
    # `collection.BASELINE_SUBGROUPS`, which the trusted baseline keeps shares for).
    subgroups: list[str] = ["modality", "body_part"]

    def train_config(self) -> cnn.CNNConfig:
        return cnn.CNNConfig(
            image_size=self.image_size,
            channels=tuple(self.channels),
            epochs=self.epochs,
            lr=self.lr,
            batch_size=self.batch_size,
            seed=self.seed,
            device=self.device,
            adversarial_epsilon=self.adversarial_epsilon,
        )


@asset(
    key=TRAINING_SET_KEY,
    ins={"trusted": AssetIn(key=STUDY_IMAGES_KEY), "feedback": AssetIn(key=FEEDBACK_IMAGES_KEY)},
    group_name="modeling",
    kinds={"pandas", "parquet", "dvc"},
    owners=[OWNER],
)
def training_set(
    context: AssetExecutionContext,
    diagnostic_settings: DiagnosticSettings,
    trusted: pd.DataFrame,
    feedback: pd.DataFrame,
) -> pd.DataFrame:
    """Every trusted image with its patient split, plus validated new studies (capped).

    New studies the champion's guard put outside its training distribution are left out
    and counted (`out_of_distribution_feedback`); they stay quarantined in the feedback table.

    New studies of a patient already in a held-out split join that split;
    others join training. So the trusted test split stays the yardstick and
    no patient straddles two splits. This table's digest is what a reviewer
    approves before retraining.
    """
    trusted = trusted.assign(tier="trusted", ood_reason="")
    known = dict(zip(trusted["patient_pseudonym"], trusted["split"], strict=False))
    untrusted = feedback[~feedback["study_uid"].isin(trusted["study_uid"])]
    outside = untrusted["ood_reason"] != ""  # quarantined by the champion's guard (monitoring)
    untrusted = untrusted[~outside].drop(columns=["ood_distance"])
    split = untrusted["patient_pseudonym"].map(known).fillna("train")
    untrusted = untrusted.assign(tier="untrusted", split=split)
    share = diagnostic_settings.max_untrusted_share
    cap = int(share / (1 - share) * len(trusted))
    if len(untrusted) > cap:
        untrusted = untrusted.sample(n=cap, random_state=diagnostic_settings.seed)
    frame = pd.concat([trusted, untrusted], ignore_index=True)
    context.add_output_metadata(
        {
            "trusted_studies": len(trusted),
            "untrusted_studies": len(untrusted),
            "out_of_distribution_feedback": int(outside.sum()),
            "untrusted_share": len(untrusted) / max(len(frame), 1),
            "positive_share": float(frame["label"].mean()) if len(frame) else 0.0,
            "splits": MetadataValue.json(frame["split"].value_counts().to_dict()),
        }
    )
    return frame


@asset_check(asset=TRAINING_SET_KEY, name="untrusted_share_within_cap", blocking=True)
def untrusted_share_within_cap(
    context: AssetCheckExecutionContext, diagnostic_settings: DiagnosticSettings, table: TableFile
) -> AssetCheckResult:
    """New (untrusted) studies are at most the configured share of the stored training set."""
    tiers = pd.read_parquet(table.path, columns=["tier"])["tier"]
    share = float((tiers == "untrusted").mean()) if len(tiers) else 0.0
    return AssetCheckResult(
        passed=share <= diagnostic_settings.max_untrusted_share + 1e-9,
        severity=AssetCheckSeverity.ERROR,
        metadata={"untrusted_share": share, "cap": diagnostic_settings.max_untrusted_share},
    )


@asset_check(asset=TRAINING_SET_KEY, name="no_out_of_distribution_studies", blocking=True)
def no_out_of_distribution_studies(context: AssetCheckExecutionContext, table: TableFile) -> AssetCheckResult:
    """No study of the stored training set was judged outside the champion's training distribution.

    Re-checks the stored table (not the code that built it): a quarantined feedback study
    that reached a training set would teach the model a scanner, body part or modality no
    one validated it on (OWASP LLM04, MITRE ATLAS AML.T0020).
    """
    frame = pd.read_parquet(table.path, columns=["study_uid", "ood_reason"])
    outside = frame[frame["ood_reason"] != ""]
    return AssetCheckResult(
        passed=outside.empty,
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "out_of_distribution": len(outside),
            "examples": MetadataValue.json(outside.head(20).to_dict("records")),
        },
    )


def subgroup_label_check(key: AssetKey):
    """Blocking check that each configured subgroup's lesion share stays near the trusted baseline's."""

    @asset_check(
        asset=key,
        name="label_shares_within_baseline",
        blocking=True,
        additional_ins={"baseline": AssetIn(key=BASELINE_KEY)},
    )
    def label_shares_within_baseline(
        context: AssetCheckExecutionContext,
        diagnostic_settings: DiagnosticSettings,
        table: TableFile,
        baseline: dict,
    ) -> AssetCheckResult:
        """The lesion share of every subgroup (modality, body part…) stays near the trusted baseline's.

        Relabelling one modality's lesion studies as normal, with reports rewritten to
        agree, barely moves the overall share but teaches the model to miss lesions on
        that modality (OWASP LLM04, MITRE ATLAS AML.T0020). Each subgroup is tested at
        its own size; the false-alarm rate is split over all subgroups tested.
        """
        columns = diagnostic_settings.subgroups
        frame = pd.read_parquet(table.path, columns=["label", *columns])
        shifts, unseen = label_share_shifts(
            baseline["labels"], frame, columns, false_alarm_rate=FALSE_ALARM_RATE
        )
        moved = [s for s in shifts if not s.test.passed]
        return AssetCheckResult(
            passed=not moved,
            severity=AssetCheckSeverity.ERROR,
            description=(
                "Lesion share moved beyond a clean window of this size: "
                + ", ".join(f"{s.name} {s.share:.3f} (baseline {s.reference_share:.3f})" for s in moved)
                if moved
                else f"{len(shifts)} subgroups within what a clean window of their size shows."
            ),
            metadata={
                "subgroups_tested": len(shifts),
                "smallest_p_value": min((s.test.p_value for s in shifts), default=1.0),
                "subgroups": MetadataValue.md(subgroup_table(shifts)),
                "unseen_subgroups": MetadataValue.json(unseen),
                "false_alarm_rate": FALSE_ALARM_RATE,
            },
        )

    return label_shares_within_baseline


def subgroup_table(shifts: list[SubgroupShift], share: str = "lesion share") -> str:
    """Each subgroup's `share` against the baseline's, with the calibrated limit, as Markdown."""
    return markdown_table(
        ["subgroup", "studies", share, "baseline", "shift", "limit", "p"],
        (
            [s.name, s.test.current_n, f"{s.share:.3f}", f"{s.reference_share:.3f}",
             f"{s.test.statistic:.3f}", f"{s.test.limit:.3f}", f"{s.test.p_value:.4f}"]
            for s in shifts
        ),
    )  # fmt: skip


def _split(frame: pd.DataFrame, name: str) -> tuple[np.ndarray, np.ndarray]:
    part = frame[frame["split"] == name]
    return image_array(part), part["label"].to_numpy(dtype=np.int64)


def _threshold(model: lesion_cnn.LesionCNN, images: np.ndarray, labels: np.ndarray) -> float:
    """The operating point on the validation split that maximises sensitivity + specificity."""
    if len(np.unique(labels)) < 2:
        return 0.5
    probabilities = lesion_cnn.predict_proba(model, images)
    candidates = np.unique(np.round(probabilities, 4))
    scores = [
        (probabilities[labels == 1] >= t).mean() + (probabilities[labels == 0] < t).mean() for t in candidates
    ]
    return float(candidates[int(np.argmax(scores))])


@asset(
    key=MODEL_KEY,
    ins={"training": AssetIn(key=TRAINING_SET_KEY)},
    group_name="modeling",
    io_manager_key="model_io_manager",
    code_version=code_digest(cnn.train_cnn),
    kinds={"pytorch", "mlflow", "safetensors"},
    owners=[OWNER],
)
def diagnostic_model(
    context: AssetExecutionContext,
    diagnostic_settings: DiagnosticSettings,
    retraining_approvals: RetrainingApprovals,
    releases: ResourceParam[ReleaseFolder],
    tracking: ExperimentTracking,
    ledger: IntegrityLedger,
    scratch: ScratchSpace,
    training: pd.DataFrame,
) -> ModelDir:
    """The lesion CNN, with AUC, sensitivity and specificity on the patient-level test split.

    Once a model is in service, retraining is refused unless a reviewer
    signed an approval for exactly this training set's digest (`make
    approve-retraining`). The decision threshold is chosen on the validation
    split; the out-of-distribution guard the server applies (`domain.healthcare.ood`)
    is fitted on the training split and calibrated on the validation split. The
    MLflow run records parameters, metrics, the dataset digest, code version and
    git revision.
    """
    dataset = ledger.latest(TRAINING_SET_KEY.to_user_string())
    approval = None
    if releases.current(MODEL_NAME) is not None:
        approval = retraining_approvals.require(MODEL_NAME, dataset.digest)
    torch.set_num_threads(diagnostic_settings.torch_threads)
    cfg = diagnostic_settings.train_config()
    train_x, train_y = _split(training, "train")
    model = cnn.train_cnn(train_x, train_y, cfg, log=context.log.info)
    threshold = _threshold(model, *_split(training, "validation"))
    test_x, test_y = _split(training, "test")
    test_p = lesion_cnn.predict_proba(model, test_x)
    metrics = cnn.binary_metrics(test_y, test_p, threshold)
    rates = subgroup_rates(
        training[training["split"] == "test"],
        test_p >= threshold,
        diagnostic_settings.subgroups,
        false_alarm_rate=FALSE_ALARM_RATE,
    )
    train, validation = (training[training["split"] == name] for name in ("train", "validation"))
    guard = cnn.fit_model_guard(
        model,
        (train_x, train_y, ood.acquisition_records(train)),
        (image_array(validation), ood.acquisition_records(validation)),
    )
    with tracking.run(
        "healthcare-lesion-cnn",
        tags={"dagster_run_id": context.run_id, "approved_by": approval["reviewer"] if approval else ""},
        code_version=context.assets_def.code_versions_by_key[MODEL_KEY],
        git_revision=git_revision(),
        torch_version=torch.__version__,
    ) as run:
        run.log_params({**cfg.to_dict(), "threshold": threshold})
        run.log_metrics({k: float(v) for k, v in metrics.items()})
        run.log_dataset(
            TRAINING_SET_KEY.to_user_string(), dataset.digest, source=dataset.path, rows=len(training)
        )
    directory = scratch.path("diagnostic_model")
    directory.mkdir(mode=0o700)
    cnn.save_model(model, cfg, metrics, directory, version=0, threshold=threshold, guard=guard)
    context.add_output_metadata(
        {
            **{k: MetadataValue.float(float(v)) for k, v in metrics.items() if k != "n"},
            "test_studies": metrics["n"],
            "threshold": threshold,
            "ood_threshold": guard.threshold,
            "ood_calibration": MetadataValue.json(guard.calibration),
            "train_studies": len(train_y),
            "subgroup_rates": MetadataValue.json([asdict(r) for r in rates]),
            "subgroups": MetadataValue.md(_rates_table(rates)),
            "mlflow_run_id": run.run_id,
            "approved_by": approval["reviewer"] if approval else "first model: no champion to replace",
        }
    )
    return ModelDir(path=directory, details={"metrics": metrics, "mlflow_run_id": run.run_id})


def _rates_table(rates: list[SubgroupRates]) -> str:
    return markdown_table(
        ["subgroup", "lesions", "sensitivity (upper bound)", "normals", "specificity (upper bound)"],
        (
            [r.name, r.positives, _rate(r.sensitivity, r.sensitivity_upper), r.negatives,
             _rate(r.specificity, r.specificity_upper)]
            for r in rates
        ),
    )  # fmt: skip


def _rate(value: float | None, upper: float) -> str:
    return "-" if value is None else f"{value:.3f} ({upper:.3f})"


@asset_check(asset=MODEL_KEY, name="meets_clinical_minimums", blocking=True)
def meets_clinical_minimums(
    context: AssetCheckExecutionContext, diagnostic_settings: DiagnosticSettings
) -> AssetCheckResult:
    """AUC, sensitivity and specificity on the held-out patients reach the configured minimums,
    and no subgroup (modality, body part…) is shown to fall short of them.

    Overall figures can hide a subgroup the model fails (OWASP LLM04, MITRE ATLAS
    AML.T0020: a flip aimed at one modality). A subgroup fails when even the
    upper confidence bound of its sensitivity or specificity is below the
    minimum: evidence on its own held-out studies, not the noise of a few dozen.
    """
    meta = materialization_metadata(context, MODEL_KEY)
    minimums = {
        "auc": diagnostic_settings.min_auc,
        "sensitivity": diagnostic_settings.min_sensitivity,
        "specificity": diagnostic_settings.min_specificity,
    }
    short = {name: meta.get(name, 0.0) for name, floor in minimums.items() if meta.get(name, 0.0) < floor}
    subgroups = meta.get("subgroup_rates", [])
    short |= {
        f"{r['column']}={r['value']}:{rate}": r[rate]
        for r in subgroups
        for rate in ("sensitivity", "specificity")
        if r[f"{rate}_upper"] < minimums[rate]
    }
    return AssetCheckResult(
        passed=not short,
        severity=AssetCheckSeverity.ERROR,
        metadata={
            **{name: MetadataValue.float(float(meta.get(name, 0.0))) for name in minimums},
            **{f"min_{name}": MetadataValue.float(floor) for name, floor in minimums.items()},
            "subgroups_tested": len(subgroups),
            "below": MetadataValue.json(short),
        },
    )


@asset_check(
    asset=MODEL_KEY,
    name="no_backdoor_in_training_data",
    blocking=True,
    additional_ins={"training": AssetIn(key=TRAINING_SET_KEY)},
)
def no_backdoor_in_training_data(
    context: AssetCheckExecutionContext,
    diagnostic_settings: DiagnosticSettings,
    diagnostic_model: ModelDir,
    training: pd.DataFrame,
) -> AssetCheckResult:
    """No class of the training set holds a small, separate group the model represents apart.

    A trigger patch stamped on some images relabelled to a target class forms
    such a group in the penultimate activations (spectral signatures, Tran
    et al. 2018; activation clustering, Chen et al. 2018). OWASP LLM04, MITRE
    ATLAS AML.T0020 / AML.T0018.
    """
    model, _ = cnn.load_model(diagnostic_model.path)
    images, labels = _split(training, "train")
    train = training[training["split"] == "train"].reset_index(drop=True)
    uids = train["study_uid"].to_numpy()
    reports, flagged, suspects = {}, {}, []
    # Per modality: CT, radiographs and MR are natural subgroups of each class, and a detector
    # looking for a separate group would find them instead of a trigger. Within a modality both
    # detectors must agree: clean CT negatives hold a natural subgroup that the spectral score
    # alone rates up to 6.4 (threshold 6) but clustering does not separate (silhouette <= 0.5);
    # a trigger on 8% of lesion studies measured 12-17 and 0.81-0.83.
    for modality, rows in train.groupby("modality").groups.items():
        rows = np.asarray(rows)
        report = backdoor_report(
            model,
            images[rows],
            labels[rows],
            expected_poison_fraction=diagnostic_settings.backdoor_poison_fraction,
        )
        classes = {
            name: {k: v for k, v in evidence.items() if not k.endswith(("indices", "rows"))}
            for name, evidence in report["classes"].items()
        }
        agreed = [n for n, e in classes.items() if e.get("spectral_fires") and e.get("clustering_fires")]
        if agreed:
            flagged[modality] = agreed
            suspects += uids[rows][report["suspect_indices"]].tolist()
        reports[modality] = classes
    return AssetCheckResult(
        passed=not flagged,
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "suspicious": MetadataValue.json(flagged),
            "suspect_studies": MetadataValue.json(suspects[:50]),
            "by_modality": MetadataValue.json(reports),
        },
    )


@asset_check(
    asset=MODEL_KEY,
    name="robust_to_fgsm",
    blocking=True,
    additional_ins={"training": AssetIn(key=TRAINING_SET_KEY), "grader": AssetIn(key=GRADER_KEY)},
)
def robust_to_fgsm(
    context: AssetCheckExecutionContext,
    diagnostic_settings: DiagnosticSettings,
    diagnostic_model: ModelDir,
    training: pd.DataFrame,
    grader: ModelDir,
) -> AssetCheckResult:
    """An imperceptible FGSM perturbation costs the model no more accuracy than it costs clean models.

    A model that learned a faint shortcut (a scanner artefact) instead of the
    lesion collapses under it. The budget comes from data: the reference
    grader's folds are models of the same architecture and training, fitted on
    the reviewed reference window, and their drops on studies they did not see
    (upper confidence bounds) plus a margin for training-run spread are what
    clean training shows. The model fails only when even the lower confidence
    bound of its own drop over the test studies exceeds that, so neither the
    noise of a few hundred test studies nor a lucky fold decides.
    """
    calibration = grading.load_calibration(grader.path)
    if not calibration.fgsm:
        return AssetCheckResult(
            passed=False,
            severity=AssetCheckSeverity.ERROR,
            description="The reference grader has no clean FGSM reference: rematerialise reference_grader.",
        )
    model, _ = cnn.load_model(diagnostic_model.path)
    images, labels = _split(training, "test")
    report = fgsm_robustness(model, images, labels, epsilon=diagnostic_settings.fgsm_epsilon)
    budget = fgsm_budget(
        calibration.fgsm, false_alarm_rate=FALSE_ALARM_RATE, margin=diagnostic_settings.fgsm_training_margin
    )
    lower = accuracy_drop_lower_bound(report, FALSE_ALARM_RATE)
    return AssetCheckResult(
        passed=lower <= budget,
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "epsilon": report["epsilon"],
            "accuracy_drop": report["accuracy_drop"],
            "accuracy_drop_lower_bound": lower,
            "budget": budget,
            "reference_drops": MetadataValue.json([r["accuracy_drop"] for r in calibration.fgsm]),
            "training_margin": diagnostic_settings.fgsm_training_margin,
            "test_studies": report["n"],
            "false_alarm_rate": FALSE_ALARM_RATE,
            "auc_drop": report["auc_drop"],
            "clean_accuracy": report["clean"]["accuracy"],
            "adversarial_accuracy": report["adversarial"]["accuracy"],
        },
    )


defs = Definitions(
    assets=[training_set, diagnostic_model],
    asset_checks=[
        untrusted_share_within_cap,
        no_out_of_distribution_studies,
        subgroup_label_check(STUDY_IMAGES_KEY),
        subgroup_label_check(TRAINING_SET_KEY),
        expectation_check(TRAINING_SET_KEY, TRAINING_SET_SUITE, engine="pandas"),
        stored_digest_check(TRAINING_SET_KEY),
        meets_clinical_minimums,
        no_backdoor_in_training_data,
        robust_to_fgsm,
        tracking_check(MODEL_KEY, TRAINING_SET_KEY),
    ],
)
