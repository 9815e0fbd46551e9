"""The modeling checks as the pipeline runs them, on models and data built to fail them.

The lifecycle tests show these checks passing on the pipeline's own model
and the backdoor check failing on a poisoned source; here the FGSM check
meets a deliberately fragile model at the pipeline's image size and epsilon,
and the label-issue check a training set with flipped diagnoses, through a
real reference grader.
"""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from dagster import build_asset_check_context

from assets.healthcare.grading import training_label_issues
from assets.healthcare.modeling import DiagnosticSettings, robust_to_fgsm
from domain.healthcare import reference_grader as grading
from domain.healthcare.diagnostic_model import CNNConfig, save_model, train_cnn
from domain.healthcare.images import IMAGE_SIZE, to_blob
from domain.healthcare.robustness import fgsm_robustness
from resources.tables import ModelDir, TableFile
from tests.domain.healthcare.test_diagnostic_model import synthetic_scans

pytestmark = pytest.mark.slow


def shortcut_scans(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Scans whose "lesion" is a faint (3/255) checkerboard: a scanner artefact, not anatomy."""
    grid = np.indices((IMAGE_SIZE, IMAGE_SIZE)).sum(axis=0) % 2
    pattern = np.where(grid == 0, 3 / 255, -3 / 255).astype(np.float32)
    images, labels = synthetic_scans(n, seed=seed, size=IMAGE_SIZE, contrast=(0.0, 0.0))
    return np.clip(images + pattern * labels[:, None, None, None], 0, 1).astype(np.float32), labels


def as_training_set(images: np.ndarray, labels: np.ndarray, split: str) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "study_uid": [f"2.25.{i}" for i in range(len(labels))],
            "label": labels,
            "split": split,
            "image": [to_blob(image[0]) for image in images],
        }
    )


def clean_reference(cfg: CNNConfig, settings: DiagnosticSettings, directory: Path) -> ModelDir:
    """A reference grader directory whose FGSM reference is measured, as the baseline measures it, on
    a CNN trained the same way on ordinary scans: its drop on two halves of scans it did not see."""
    model = train_cnn(*synthetic_scans(300, seed=33, size=IMAGE_SIZE), cfg)
    unseen, labels = synthetic_scans(320, seed=34, size=IMAGE_SIZE)
    folds = []
    for half in (slice(0, 160), slice(160, 320)):
        report = fgsm_robustness(model, unseen[half], labels[half], epsilon=settings.fgsm_epsilon)
        folds.append({key: report[key] for key in ("n", "lost", "gained", "accuracy_drop")})
    empty = {name: [0, 0] for name in grading.LABELS}
    calibration = grading.Calibration([0.5], empty, dict.fromkeys(grading.LABELS, 1.0), folds)
    grader = grading.CrossFittedGrader(IMAGE_SIZE, cfg.channels)
    return ModelDir(grading.save_grader(grader, calibration, directory))


def test_the_fgsm_check_fails_a_fragile_model_and_passes_when_the_margin_allows(tmp_path):
    cfg = CNNConfig(epochs=12, channels=(8, 16, 32), seed=1, augment=False, adversarial_epsilon=0.0)
    settings = DiagnosticSettings()
    grader = clean_reference(cfg, settings, tmp_path / "grader")
    model = train_cnn(*shortcut_scans(300, seed=31), cfg)
    save_model(model, cfg, {}, tmp_path / "model", version=0)
    held_out = as_training_set(*shortcut_scans(160, seed=32), split="test")

    result = robust_to_fgsm(
        build_asset_check_context(), settings, ModelDir(tmp_path / "model"), held_out, grader
    )
    meta = {k: v.value for k, v in result.metadata.items()}
    assert meta["clean_accuracy"] > 0.95, meta  # looks perfect on clean data...
    assert not result.passed, meta  # ...and a 1/255 nudge costs it far more than it costs a clean model
    assert meta["accuracy_drop_lower_bound"] > meta["budget"] > max(meta["reference_drops"])

    lenient = DiagnosticSettings(fgsm_training_margin=1.0)
    check = robust_to_fgsm(
        build_asset_check_context(), lenient, ModelDir(tmp_path / "model"), held_out, grader
    )
    assert check.passed


def test_the_fgsm_check_fails_closed_without_a_clean_reference(tmp_path):
    calibration = grading.Calibration([0.5], {n: [0, 0] for n in grading.LABELS}, {}, [])
    untrained = grading.CrossFittedGrader(IMAGE_SIZE, (8, 16, 32))
    grader = ModelDir(grading.save_grader(untrained, calibration, tmp_path / "grader"))
    context, settings = build_asset_check_context(), DiagnosticSettings()
    result = robust_to_fgsm(context, settings, ModelDir(tmp_path / "model"), pd.DataFrame(), grader)
    assert not result.passed and "rematerialise reference_grader" in result.description


def test_the_label_issue_check_names_flipped_diagnoses_and_passes_clean_labels(tmp_path):
    """A real grader cross-fitted on clean scans; its out-of-fold rate of contradicted labels is the limit.

    Lesions of clear contrast, so two folds of 200 scans learn them (at the default faint contrast
    they contradict 13-40% of clean labels, and 15% flips hide in that).
    """
    cfg = CNNConfig(epochs=12, channels=(8, 16, 32), seed=1, adversarial_epsilon=0.0)
    visible = (0.3, 0.6)
    reference, reference_labels = synthetic_scans(400, seed=33, size=IMAGE_SIZE, contrast=visible)
    patients = pd.Series([f"p{i // 2}" for i in range(len(reference_labels))])  # two studies each
    grader, calibration = grading.fit_grader(reference, reference_labels, patients, cfg, fgsm_epsilon=1 / 255)
    grader_dir = ModelDir(grading.save_grader(grader, calibration, tmp_path / "grader"))
    images, labels = synthetic_scans(300, seed=41, size=IMAGE_SIZE, contrast=visible)
    flipped = labels.copy()
    chosen = np.random.default_rng(0).choice(len(labels), 45, replace=False)  # 15% of the diagnoses
    flipped[chosen] = 1 - flipped[chosen]
    outcomes = {}
    for name, training_labels in (("clean", labels), ("flipped", flipped)):
        path = tmp_path / f"{name}.parquet"
        as_training_set(images, training_labels, split="train").to_parquet(path)
        outcomes[name] = training_label_issues(
            build_asset_check_context(), TableFile(path, len(labels)), grader_dir
        )
    assert outcomes["clean"].passed, outcomes["clean"].metadata
    assert not outcomes["flipped"].passed
    found = outcomes["flipped"].metadata
    assert found["issue_share"].value > found["reference_share"].value + found["limit"].value
    flagged = set(found["examples"].value)  # up to 20, as evidence
    # the grader never saw the flips, so the studies it contradicts are mostly flipped ones
    assert len(flagged & {f"2.25.{i}" for i in chosen}) >= 0.8 * len(flagged) > 0


@pytest.mark.parametrize(
    "reference",
    [{}, {"studies": 400, "share": 0.05, "design_effect": 1.0}],
    ids=["no label-issue reference", "no fixed thresholds"],
)
def test_the_label_issue_check_asks_for_a_grader_with_a_label_issue_reference(tmp_path, reference):
    """A grader saved before the label-issue reference (or its fixed thresholds) existed cannot pass for
    one that has it."""
    calibration = grading.Calibration([0.5], {n: [0, 0] for n in grading.LABELS}, {}, [], reference)
    grader = ModelDir(
        grading.save_grader(grading.CrossFittedGrader(IMAGE_SIZE, (8, 16, 32)), calibration, tmp_path / "g")
    )
    images, labels = synthetic_scans(20, seed=3, size=IMAGE_SIZE)
    as_training_set(images, labels, split="train").to_parquet(tmp_path / "training.parquet")
    result = training_label_issues(
        build_asset_check_context(), TableFile(tmp_path / "training.parquet", 20), grader
    )
    assert not result.passed and "rematerialise reference_grader" in result.description


def test_clinical_minimums_fail_a_subgroup_the_model_is_shown_to_miss():
    """Overall figures above the minimums, but radiograph lesions found 24 times in 60."""
    from dagster import AssetMaterialization, DagsterInstance

    from assets.healthcare.modeling import MODEL_KEY, meets_clinical_minimums

    def rates(value: str, found: int, upper: float) -> dict:
        return {
            "column": "modality", "value": value, "positives": 60, "sensitivity": found / 60,
            "sensitivity_upper": upper, "negatives": 120, "specificity": 0.92, "specificity_upper": 0.97,
        }  # fmt: skip

    settings = DiagnosticSettings()
    for subgroups, passed in (
        ([rates("CT", 54, 0.97)], True),
        ([rates("CT", 54, 0.97), rates("CR", 24, 0.62)], False),
    ):
        instance = DagsterInstance.ephemeral()
        metadata = {"auc": 0.9, "sensitivity": 0.8, "specificity": 0.9, "subgroup_rates": subgroups}
        instance.report_runless_asset_event(AssetMaterialization(MODEL_KEY, metadata=metadata))
        result = meets_clinical_minimums(build_asset_check_context(instance=instance), settings)
        assert result.passed is passed, result.metadata["below"]
    assert result.metadata["below"].value == {"modality=CR:sensitivity": 0.4}
