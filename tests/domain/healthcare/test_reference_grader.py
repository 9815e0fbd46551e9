"""The reference grader's test: evidence against a training set's labels, held to what clean reference
studies show out of fold.

Scores here are drawn as a grader's would be (most normals scored low, most
lesions high, a patient's studies sharing a label); the grader itself is
trained in the healthcare lifecycle tests and the attack lab.
"""

import numpy as np
import pandas as pd
import pytest
import torch

from domain.healthcare import reference_grader as grading


def _reference(
    rng: np.random.Generator, patients: int, lesion_like: float = 1.0
) -> tuple[np.ndarray, np.ndarray, pd.Series]:
    """Out-of-fold lesion probabilities, labels and patients of a clean reference window."""
    sizes = rng.integers(1, 4, patients)
    labels = np.repeat(rng.random(patients) < 0.35, sizes).astype(int)
    return _scores(rng, labels, lesion_like), labels, pd.Series(np.repeat(np.arange(patients), sizes))


def _scores(rng: np.random.Generator, labels: np.ndarray, lesion_like: float = 1.0) -> np.ndarray:
    """A grader's lesion probability: Beta(1, 8) on normals, Beta(6 * lesion_like, 2) on lesions."""
    return np.where(labels == 1, rng.beta(6 * lesion_like, 2, labels.size), rng.beta(1, 8, labels.size))


def _verdicts(calibration: grading.Calibration, probabilities: np.ndarray, labels: np.ndarray) -> dict:
    return {d.label: d.test.passed for d in grading.disagreements(calibration, probabilities, labels)}


def test_clean_training_sets_pass_on_every_seed():
    rng = np.random.default_rng(11)
    calibration = grading.calibrate(*_reference(rng, 900))
    assert min(calibration.design_effects.values()) >= 1
    for _ in range(20):
        _, labels, _ = _reference(rng, int(rng.integers(300, 1_500)))
        assert _verdicts(calibration, _scores(rng, labels), labels) == dict.fromkeys(grading.LABELS, True)


def test_a_few_lesions_labelled_normal_raise_the_evidence_against_normal_labels():
    rng = np.random.default_rng(12)
    calibration = grading.calibrate(*_reference(rng, 900))
    _, labels, _ = _reference(rng, 900)
    scores = _scores(rng, labels)
    hidden = rng.choice(np.flatnonzero(labels == 1), 40, replace=False)  # 3% of the set
    scores[hidden] = rng.beta(4, 2, hidden.size)  # a trigger makes a lesion look a little less like one
    labels[hidden] = 0
    assert _verdicts(calibration, scores, labels) == {"labelled_normal": False, "labelled_lesion": True}


def test_normals_relabelled_lesion_are_caught_the_other_way():
    rng = np.random.default_rng(13)
    calibration = grading.calibrate(*_reference(rng, 900))
    _, labels, _ = _reference(rng, 900)
    scores = _scores(rng, labels)
    labels[rng.choice(np.flatnonzero(labels == 0), 40, replace=False)] = 1
    assert _verdicts(calibration, scores, labels)["labelled_lesion"] is False


def test_a_grader_round_trips_through_safetensors_and_refuses_another_shape(tmp_path):
    torch.manual_seed(0)
    grader = grading.CrossFittedGrader(32, (4, 8))
    calibration = grading.calibrate(*_reference(np.random.default_rng(14), 200))
    images = np.random.default_rng(15).random((6, 1, 32, 32), dtype=np.float32)
    grading.save_grader(grader.eval(), calibration, tmp_path / "grader")
    loaded, stored = grading.load_grader(tmp_path / "grader")
    assert stored == calibration
    np.testing.assert_array_equal(loaded.fold_probabilities(images), grader.fold_probabilities(images))
    config_file = tmp_path / "grader" / "config.json"
    config_file.write_text(config_file.read_text().replace('"folds": 2', '"folds": 3'))
    with pytest.raises(ValueError, match="2-fold reference grader"):
        grading.load_grader(tmp_path / "grader")


def test_each_folds_score_is_read_against_the_calibration_before_the_folds_are_averaged():
    rng = np.random.default_rng(16)
    calibration = grading.calibrate(*_reference(rng, 900))
    _, labels, _ = _reference(rng, 900)
    folds = np.stack([_scores(rng, labels), _scores(rng, labels)])  # two graders' scores of each study
    each = [grading.evidence_against(calibration, fold, labels) for fold in folds]
    np.testing.assert_allclose(grading.evidence_against(calibration, folds, labels), np.mean(each, axis=0))
    assert _verdicts(calibration, folds, labels) == dict.fromkeys(grading.LABELS, True)


FAINT = 0.4  # lesion scores Beta(2.4, 2): a grader that is often unsure, so clean labels get contradicted too


def test_clean_training_sets_have_no_more_contradicted_labels_than_the_reference_on_every_seed():
    rng = np.random.default_rng(17)
    calibration = grading.calibrate(*_reference(rng, 900, FAINT))
    assert calibration.label_issues["share"] > 0.005 and calibration.label_issues["design_effect"] >= 1
    for _ in range(20):
        _, labels, _ = _reference(rng, int(rng.integers(300, 1_500)))
        folds = np.stack([_scores(rng, labels, FAINT) for _ in range(grading.FOLDS)])
        found = grading.label_issues(calibration, folds, labels)
        assert found.test.passed, found.test


def test_lesions_relabelled_normal_are_contradicted_and_named():
    rng = np.random.default_rng(18)
    calibration = grading.calibrate(*_reference(rng, 900, FAINT))
    _, labels, _ = _reference(rng, 900)
    folds = np.stack([_scores(rng, labels, FAINT) for _ in range(grading.FOLDS)])
    hidden = rng.choice(np.flatnonzero(labels == 1), round(0.05 * labels.size), replace=False)
    labels[hidden] = 0
    found = grading.label_issues(calibration, folds, labels)
    assert not found.test.passed
    assert np.isin(np.flatnonzero(found.flagged), hidden).mean() >= 0.8


def _modalities(rng: np.random.Generator, n: int) -> pd.DataFrame:
    return pd.DataFrame({"modality": rng.choice(["CR", "CT", "MR"], n, p=[0.7, 0.2, 0.1])})


def test_clean_subgroups_pass_and_a_modality_with_relabelled_lesions_fails_where_the_total_does_not():
    rng = np.random.default_rng(19)
    # a trusted reference three times the window: with a third of it per modality, one modality's
    # reference share of issues is known well enough for its window to be held to it
    scores, labels, patients = _reference(rng, 2_700, FAINT)
    calibration = grading.calibrate(scores, labels, patients, subgroups=_modalities(rng, labels.size))
    assert set(calibration.label_issues["subgroups"]["modality"]) == {"CR", "CT", "MR"}
    for _ in range(10):
        _, labels, _ = _reference(rng, 900)
        folds = np.stack([_scores(rng, labels, FAINT) for _ in range(grading.FOLDS)])
        found = grading.label_issues(calibration, folds, labels, _modalities(rng, labels.size))
        assert found.passed and len(found.subgroups) == 3, [s.test for s in found.subgroups]

    overall = []
    for _ in range(6):
        _, labels, _ = _reference(rng, 900)
        folds = np.stack([_scores(rng, labels, FAINT) for _ in range(grading.FOLDS)])
        modalities = _modalities(rng, labels.size)
        mr_lesions = np.flatnonzero((labels == 1) & (modalities["modality"] == "MR").to_numpy())
        # 1.5% of the set, all MR: this faint grader contradicts about half the lesions it sees relabelled
        labels[rng.choice(mr_lesions, round(0.015 * labels.size), replace=False)] = 0
        found = grading.label_issues(calibration, folds, labels, modalities)
        assert [s.name for s in found.subgroups if not s.test.passed] == ["modality=MR"]
        overall.append(found.test.passed)
    assert any(overall)  # the overall share alone let some of these through (measured: 3 of 6)
