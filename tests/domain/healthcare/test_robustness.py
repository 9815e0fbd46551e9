"""Backdoor detection and adversarial robustness: each control fails on a real attack and passes clean.

Numbers measured while calibrating, default `CNNConfig`, 400 training and
200 held-out scans per seed (these tests print theirs):

- backdoor, a 4x4 max-intensity trigger on 5% of the lesion scans relabelled
  healthy (the trigger then hides 98-100% of held-out lesions): spectral
  separation 14.0-55.5 in the poisoned class against 1.5-2.3 in clean
  classes (threshold 6); smaller 2-means cluster 0.04-0.06 of the class with
  silhouette 0.88-0.94, against 0.34-0.50 with silhouette 0.25-0.49 in clean
  classes (thresholds 0.2 and 0.65); the suspects were exactly the poisoned
  scans (9/9 to 11/11, once 11/12). Seeds 1-4 at 64 px, 1-3 and 5 at 32 px.
- FGSM at 2/255: accuracy drop 0.05-0.085 for the default CNN at 64 px
  (0.055-0.12 at 32 px, where each pixel weighs more), 0.985 for the CNN that
  learned a faint scanner pattern; a CNN trained without adversarial batches
  drops 0.145-0.21 at 64 px.
"""

from __future__ import annotations

import json
import math
from functools import cache

import numpy as np
import pytest
import torch
from sklearn.datasets import make_blobs

from domain.healthcare.diagnostic_model import CNNConfig, evaluate, train_cnn
from domain.healthcare.lesion_cnn import LesionCNN, predict_proba
from domain.healthcare.robustness import (
    BackdoorThresholds,
    accuracy_drop_lower_bound,
    activation_clusters,
    backdoor_report,
    fgsm_budget,
    fgsm_robustness,
    pgd_robustness,
    robust_z,
    spectral_signature_scores,
)
from tests.domain.healthcare.test_diagnostic_model import SIZE, clean_model, lesion_data, synthetic_scans

TRIGGER = 4  # side of the square trigger, in pixels
EPSILON = 2 / 255  # the modeling check's FGSM budget
MAX_ACCURACY_DROP = 0.2


def stamp_trigger(images: np.ndarray) -> np.ndarray:
    """A copy of `images` with a max-intensity TRIGGER x TRIGGER square in the bottom-right corner."""
    stamped = images.copy()
    stamped[:, :, -TRIGGER:, -TRIGGER:] = 1.0
    return stamped


def poison(
    images: np.ndarray, labels: np.ndarray, *, source: int, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The trigger on `fraction` of the `source` class's images, relabelled to the other class."""
    candidates = np.flatnonzero(labels == source)
    chosen = np.sort(
        np.random.default_rng(seed).choice(candidates, math.ceil(fraction * len(candidates)), False)
    )
    images, labels = images.copy(), labels.copy()
    images[chosen] = stamp_trigger(images[chosen])
    labels[chosen] = 1 - source
    return images, labels, chosen


@cache
def poisoned_model() -> tuple[LesionCNN, np.ndarray, np.ndarray, np.ndarray]:
    """Lesion scans with the trigger, relabelled healthy (hides lesions), trained like the clean model."""
    data = lesion_data()
    images, labels, chosen = poison(data["train_x"], data["train_y"], source=1, fraction=0.05, seed=1)
    _, cfg = clean_model()
    return train_cnn(images, labels, cfg), images, labels, chosen


@cache
def shortcut_model() -> tuple[LesionCNN, np.ndarray, np.ndarray]:
    """A deliberately fragile CNN: its "lesion" scans carry a faint (4/255) checkerboard instead of a lesion.

    It is what a model that learned one scanner's artefact looks like: perfect
    on clean data from that scanner, and wrong as soon as someone nudges the
    pixels by less than the pattern's amplitude. Trained plainly (no
    adversarial batches, no flips), returned with 200 held-out scans.
    """
    grid = np.indices((SIZE, SIZE)).sum(axis=0) % 2
    pattern = np.where(grid == 0, 4 / 255, -4 / 255).astype(np.float32)

    def scans(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        images, labels = synthetic_scans(n, seed=seed, size=SIZE, contrast=(0.0, 0.0))
        return np.clip(images + pattern * labels[:, None, None, None], 0, 1).astype(np.float32), labels

    train_x, train_y = scans(300, seed=31)
    cfg = CNNConfig(image_size=SIZE, epochs=12, seed=1, augment=False, adversarial_epsilon=0.0)
    model = train_cnn(train_x, train_y, cfg)
    return model, *scans(200, seed=32)


# --- the detectors on hand-made activations -------------------------------------------------------


def planted_activations(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """190 samples from one broad blob plus 10 from a distant one: the planted ones are 190-199."""
    clean, _ = make_blobs(190, n_features=16, centers=[np.zeros(16)], cluster_std=1.0, random_state=seed)
    planted, _ = make_blobs(10, n_features=16, centers=[np.full(16, 4.0)], cluster_std=0.5, random_state=seed)
    return np.vstack([clean, planted]), np.arange(190, 200)


def test_spectral_signature_ranks_the_planted_group_first() -> None:
    activations, planted = planted_activations()
    scores = spectral_signature_scores(activations)
    assert scores.shape == (200,)
    assert set(np.argsort(-scores)[:10]) == set(planted)
    # per class: the same group is found when a second, unrelated class is stacked on top
    other, _ = make_blobs(100, n_features=16, centers=[np.full(16, -20.0)], random_state=1)
    stacked = spectral_signature_scores(np.vstack([activations, other]), np.r_[np.zeros(200), np.ones(100)])
    np.testing.assert_allclose(stacked[:200], scores)
    with pytest.raises(ValueError):
        spectral_signature_scores(activations[0])
    with pytest.raises(ValueError):
        spectral_signature_scores(np.full((3, 2), np.nan))


def test_activation_clustering_isolates_the_planted_group() -> None:
    activations, planted = planted_activations()
    found = activation_clusters(activations, seed=0)
    assert found["smaller_cluster_rows"] == planted.tolist()
    assert found["smaller_cluster_fraction"] == pytest.approx(0.05)
    assert found["silhouette"] > 0.65
    clean = activation_clusters(activations[:190], seed=0)
    assert clean["smaller_cluster_fraction"] > 0.3 and clean["silhouette"] < 0.4


def test_robust_z_ignores_a_minority_of_outliers() -> None:
    values = np.r_[np.random.default_rng(0).normal(0, 1, 95), np.full(5, 50.0)]
    z = robust_z(values)
    assert z[-5:].min() > 40 and np.median(z[:95]) < 1


# --- backdoors in a trained CNN -------------------------------------------------------------------


def print_margins(name: str, report: dict) -> None:
    for label, evidence in report["classes"].items():
        margins = {key: round(value, 3) for key, value in evidence["margins"].items()}
        print(
            f"{name} class {label}: separation {evidence['spectral_separation']:.2f}, smaller cluster "
            f"{evidence['smaller_cluster_fraction']:.3f}, silhouette {evidence['silhouette']:.3f}, "
            f"margins {margins}"
        )


def test_backdoor_attack_works_and_is_flagged() -> None:
    model, images, labels, poisoned = poisoned_model()
    data = lesion_data()
    # the attack is real: clean performance is intact, the trigger hides lesions on unseen scans
    assert evaluate(model, data["test_x"], data["test_y"])["auc"] > 0.9
    lesions = data["test_x"][data["test_y"] == 1]
    hidden = (predict_proba(model, stamp_trigger(lesions)) < 0.5).mean()
    assert hidden > 0.8

    report = backdoor_report(model, images, labels, expected_poison_fraction=0.05)
    print_margins("poisoned", report)
    print(f"poisoned: trigger hides {hidden:.2f} of held-out lesions; {len(poisoned)} poisoned scans")
    json.dumps(report, allow_nan=False)  # metadata-ready
    assert report["suspicious"] and report["suspicious_classes"] == ["0"]
    target = report["classes"]["0"]
    assert target["spectral_fires"] and target["clustering_fires"]
    assert min(target["margins"].values()) > 0
    assert not report["classes"]["1"]["suspicious"]
    # the evidence points at the poisoned scans
    assert np.isin(target["top_scored_indices"], poisoned).mean() >= 0.75
    suspects = np.asarray(report["suspect_indices"])
    assert np.isin(suspects, poisoned).mean() >= 0.9
    assert np.isin(poisoned, suspects).mean() >= 0.8


def test_clean_training_set_is_not_flagged() -> None:
    model, _ = clean_model()
    data = lesion_data()
    report = backdoor_report(model, data["train_x"], data["train_y"], expected_poison_fraction=0.05)
    print_margins("clean", report)
    assert not report["suspicious"] and report["suspect_indices"] == []
    for evidence in report["classes"].values():
        assert evidence["margins"]["separation"] < -2  # well below the threshold, not just under it
        assert evidence["margins"]["cluster_fraction"] < 0 or evidence["margins"]["silhouette"] < 0


def test_small_classes_are_skipped_not_judged() -> None:
    model, _ = clean_model()
    data = lesion_data()
    report = backdoor_report(
        model, data["train_x"], data["train_y"], thresholds=BackdoorThresholds(min_class_size=10_000)
    )
    assert not report["suspicious"]
    assert all("skipped" in evidence for evidence in report["classes"].values())
    with pytest.raises(ValueError):
        backdoor_report(model, data["train_x"], data["train_y"], expected_poison_fraction=0.6)


# --- adversarial robustness -----------------------------------------------------------------------


def test_fgsm_passes_the_default_cnn() -> None:
    model, _ = clean_model()
    data = lesion_data()
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    assert all(parameter.grad is None for parameter in model.parameters())  # training left no gradients
    report = fgsm_robustness(model, data["test_x"], data["test_y"], epsilon=EPSILON)
    print(f"default CNN, FGSM {EPSILON * 255:.0f}/255: {report}")
    assert report["max_abs_perturbation"] <= EPSILON + 1e-6
    assert report["clean"]["accuracy"] > 0.85
    assert report["accuracy_drop"] <= MAX_ACCURACY_DROP
    # the attack leaves the model as it was
    assert all(torch.equal(tensor, before[name]) for name, tensor in model.state_dict().items())
    assert all(parameter.grad is None for parameter in model.parameters())


def test_fgsm_fails_a_shortcut_model() -> None:
    model, images, labels = shortcut_model()
    report = fgsm_robustness(model, images, labels, epsilon=EPSILON)
    print(f"shortcut CNN, FGSM {EPSILON * 255:.0f}/255: {report}")
    assert report["clean"]["accuracy"] > 0.95  # looks perfect on clean data...
    assert report["accuracy_drop"] > 0.5  # ...and collapses under a 2/255 nudge
    assert report["accuracy_drop"] == pytest.approx((report["lost"] - report["gained"]) / report["n"])
    # the evidence is overwhelming: even the drop's lower confidence bound is over budget
    assert accuracy_drop_lower_bound(report, 0.001) > MAX_ACCURACY_DROP


def test_pgd_is_at_least_as_strong_as_fgsm() -> None:
    model, _ = clean_model()
    data = lesion_data()
    images, labels = data["test_x"][:100], data["test_y"][:100]
    fgsm = fgsm_robustness(model, images, labels, epsilon=EPSILON)
    pgd = pgd_robustness(model, images, labels, epsilon=EPSILON, steps=5, seed=0)
    print(
        f"default CNN on 100 scans: FGSM drop {fgsm['accuracy_drop']:.3f}, "
        f"PGD-5 drop {pgd['accuracy_drop']:.3f}"
    )
    assert pgd["max_abs_perturbation"] <= EPSILON + 1e-6
    assert pgd["adversarial"]["accuracy"] <= fgsm["adversarial"]["accuracy"] + 0.02
    assert pgd_robustness(model, images, labels, epsilon=EPSILON, steps=5, seed=0) == pgd  # seeded


def test_how_much_of_a_drop_the_cases_show_grows_with_their_number() -> None:
    """The same 17% drop: on 200 test studies most of it may be sampling noise, on 5,000 it is shown."""
    few = {"attack": "fgsm", "accuracy_drop": 0.17, "auc_drop": 0.0, "lost": 40, "gained": 6, "n": 200}
    many = {"attack": "fgsm", "accuracy_drop": 0.17, "auc_drop": 0.0, "lost": 1000, "gained": 150, "n": 5000}
    assert accuracy_drop_lower_bound(few, 0.001) < 0.15 < accuracy_drop_lower_bound(many, 0.001) < 0.17


def test_the_fgsm_budget_is_the_clean_folds_worst_upper_bound_plus_the_margin() -> None:
    folds = [
        {"n": 450, "lost": 45, "gained": 10, "accuracy_drop": 35 / 450},
        {"n": 450, "lost": 30, "gained": 8, "accuracy_drop": 22 / 450},
    ]
    budget = fgsm_budget(folds, false_alarm_rate=0.001, margin=0.05)
    assert 35 / 450 + 0.05 < budget < 35 / 450 + 0.05 + 0.1  # the worse fold, its noise, the margin
    more_cases = [{**f, "n": 4 * f["n"], "lost": 4 * f["lost"], "gained": 4 * f["gained"]} for f in folds]
    assert fgsm_budget(more_cases, false_alarm_rate=0.001, margin=0.05) < budget  # less noise, tighter
    with pytest.raises(ValueError, match="rebuild the reference grader"):
        fgsm_budget([], false_alarm_rate=0.001, margin=0.05)
    with pytest.raises(ValueError):
        fgsm_robustness(
            clean_model()[0], lesion_data()["test_x"][:4], lesion_data()["test_y"][:4], epsilon=2.0
        )
