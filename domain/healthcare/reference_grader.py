"""A second opinion on every training label, from models that never saw the window under test.

A backdoor that works is one the diagnostic model has learnt: once it has,
the poisoned studies (a trigger on lesion scans relabelled normal) sit with
the normals in that model's own representation, so detectors that look
through it — label issues from its embeddings, a separate cluster in its
activations — stop seeing them exactly when the attack succeeds. The
grader here is trained on the trusted reference window only, so it cannot
have learnt a trigger that first appears later: on a triggered lesion scan
labelled normal it still sees the lesion.

The grader is cross-fitted: the reference's patients are split into
`FOLDS` halves and one `LesionCNN` is trained on each half's complement,
and each reference study is scored by the fold that did not see it. Those
out-of-fold scores say, for any grader score, how much likelier it is on a
study of the other label than on one of its own (a likelihood ratio per
score bin, `Calibration`). A study outside the reference is unseen by both
folds, so each fold's score on it is read against that calibration and the
two ratios are averaged (`evidence_against`). A training set's mean
likelihood ratio against its labels, over the studies labelled normal and over those labelled
lesion, is held to what clean reference studies show, at both sizes and
with the reference's per-patient clustering (`disagreements`,
`domain.distribution.mean_shift`). The mean likelihood ratio is the locally
most powerful statistic for "some of these labels belong to the other
class", so a few relabelled studies raise it whatever the trigger looks
like and whichever way labels were turned, with no cut-off to choose.

The same unseen-study scores feed confident learning (cleanlab): how many
labels a fold's scores confidently contradict, in a training set and out of
fold on the reference, compared at both sizes (`label_issues`), with
the confidence thresholds the reference's out-of-fold scores set
(`domain.label_issues`). The mean ratio moves with every relabelled study; the count of
contradicted labels stays put until some are contradicted outright, and
names them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from torch import nn

from domain.distribution import (
    DEFAULT_FALSE_ALARM_RATE,
    CalibratedTest,
    design_effect,
    effective_size,
    mean_shift,
    share_shift,
)
from domain.healthcare import diagnostic_model as cnn
from domain.healthcare.lesion_cnn import LesionCNN, check_shape, predict_proba
from domain.healthcare.robustness import fgsm_robustness
from domain.label_issues import confident_issues, confident_thresholds
from domain.subgroups import SubgroupShift, label_share_shifts, label_shares
from resources.model_files import CONFIG_FILE, load_model_dir, save_model_dir

FOLDS = 2
BINS = 10  # score bins (reference quantiles) the likelihood ratios are estimated in
LABELS = {"labelled_normal": 0, "labelled_lesion": 1}


class CrossFittedGrader(nn.Module):
    """`FOLDS` lesion CNNs, each trained on the reference studies of the other folds' patients."""

    def __init__(self, image_size: int, channels: tuple[int, ...]) -> None:
        super().__init__()
        check_shape(image_size, tuple(channels))
        self.folds = nn.ModuleList(LesionCNN(image_size, tuple(channels)) for _ in range(FOLDS))

    def architecture(self) -> dict[str, Any]:
        first = self.folds[0]
        return {"image_size": first.image_size, "channels": list(first.channels), "folds": FOLDS}

    def fold_probabilities(self, images: np.ndarray) -> np.ndarray:
        """Each fold's lesion probability for each image ``[n, 1, size, size]``: ``[FOLDS, n]``."""
        return np.stack([predict_proba(fold, images) for fold in self.folds])


@dataclass(frozen=True)
class Calibration:
    """What the grader's scores mean, learnt out of fold on the clean reference.

    `edges` cut lesion probabilities into `BINS` bins (quantiles of the
    reference's scores); `counts[name]` is how many reference studies with
    that label (`LABELS`) fell in each bin; `design_effects[name]` how much a
    patient's studies move together in their evidence; `fgsm` each fold's FGSM
    report (studies, lost, gained, accuracy drop) on the studies it did not
    see: what a clean model of the pipeline's architecture and training loses
    to the perturbation (`robustness.fgsm_budget`); `label_issues` how many
    reference labels the out-of-fold scores confidently contradict
    (`studies`, `share`, the `design_effect` of a patient's studies, the
    per-class confidence `thresholds` that define "confidently", and per
    `subgroups` column and value the studies and share, as `subgroups.label_shares`).
    """

    edges: list[float]
    counts: dict[str, list[int]]
    design_effects: dict[str, float]
    fgsm: list[dict[str, Any]] = field(default_factory=list)
    label_issues: dict[str, Any] = field(default_factory=dict)

    def shares(self, name: str) -> np.ndarray:
        """Per bin, the share of reference studies labelled `name` scored in it, smoothed by half a
        count per bin (Jeffreys): a bin the reference left empty is rare, not impossible."""
        counts = np.asarray(self.counts[name], float)
        return (counts + 0.5) / (counts.sum() + 0.5 * counts.size)

    def ratios(self, name: str) -> np.ndarray:
        """Per bin: how much likelier that score is on a study of the other label than on one labelled
        `name`. Its mean over clean studies labelled `name` is 1 by construction."""
        return self.shares(next(n for n in self.counts if n != name)) / self.shares(name)

    def evidence(self, name: str, probabilities: np.ndarray) -> np.ndarray:
        """Each score's likelihood ratio against the label `name`."""
        return self.ratios(name)[np.searchsorted(self.edges, probabilities, side="right")]


@dataclass(frozen=True)
class Disagreement:
    """One label's mean evidence against it in a training set, against the reference's, calibrated."""

    label: str
    studies: int
    mean_evidence: float
    reference_mean_evidence: float
    test: CalibratedTest


def evidence_against(calibration: Calibration, probabilities: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each study's likelihood ratio against its own label: the mean over folds of each fold's ratio.

    `probabilities` holds one row of lesion probabilities per fold (or a single
    row). The calibration describes one fold's scores on studies it did not
    see, so each fold's score is read against it before averaging. The mean of
    the folds' scores is a different, less spread score than any the
    calibration saw, and its mean ratio on clean studies drifts off 1: read
    that way, clean 400-study clinics were stopped on two seeds of two.
    """
    scores = np.atleast_2d(probabilities)
    against = np.zeros(len(labels))
    for name, label in LABELS.items():
        rows = labels == label
        against[rows] = np.mean([calibration.evidence(name, fold[rows]) for fold in scores], axis=0)
    return against


def disagreements(
    calibration: Calibration,
    probabilities: np.ndarray,
    labels: np.ndarray,
    *,
    false_alarm_rate: float = DEFAULT_FALSE_ALARM_RATE,
) -> list[Disagreement]:
    """Per label, the mean evidence against `labels` (the grader's `probabilities`, one row per fold)
    against the reference's.

    One-sided (only more evidence against the labels is a threat); both sizes
    counted in independent patients (the reference's design effect, never the
    set's own, so the set under test cannot widen its own limit); the
    false-alarm rate split over the labels. The null draws single-fold ratios,
    which spread at least as much as the folds' average, so the limit errs
    towards fewer false alarms. A label the set does not use is not tested.
    """
    against, results = evidence_against(calibration, probabilities, labels), []
    for name, label in LABELS.items():
        mine = against[labels == label]
        if mine.size == 0:
            continue
        ratios, deff = calibration.ratios(name), calibration.design_effects[name]
        test = mean_shift(
            name, ratios, effective_size(sum(calibration.counts[name]), deff), float(mine.mean()),
            effective_size(mine.size, deff), weights=calibration.shares(name), tests=len(LABELS),
            false_alarm_rate=false_alarm_rate,
        )  # fmt: skip
        results.append(
            Disagreement(name, mine.size, float(mine.mean()), float(mine.mean() - test.statistic), test)
        )
    return results


@dataclass(frozen=True)
class LabelIssues:
    """Labels the grader's folds confidently contradict in a training set, against the reference's rate."""

    flagged: np.ndarray  # per study: contradicted by every fold
    share: float  # the mean over folds of the share each fold contradicts
    test: CalibratedTest
    subgroups: list[SubgroupShift] = field(default_factory=list)
    unseen_subgroups: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.test.passed and all(s.test.passed for s in self.subgroups)


def label_issues(
    calibration: Calibration,
    probabilities: np.ndarray,
    labels: np.ndarray,
    subgroups: pd.DataFrame | None = None,
    *,
    false_alarm_rate: float = DEFAULT_FALSE_ALARM_RATE,
) -> LabelIssues:
    """The share of `labels` the grader's folds (`probabilities`, one row per fold) confidently
    contradict, tested one-sided against the reference's out-of-fold share, overall and in each
    subgroup (`subgroups`: the columns the calibration has shares for, one row per study).

    Each fold's scores on unseen studies are what the reference's out-of-fold
    scores are, so each fold flags issues on its own, against the reference's
    thresholds, and the shares are averaged; the average spreads no more than one fold's share, so the null
    (one share at each size, counted in independent patients with the
    reference's design effect) errs towards fewer false alarms. Flipping the
    labels of one modality barely moves the overall share, so each subgroup is
    tested at its own size too; the overall test and the subgroups' share the
    false-alarm rate half and half.
    """
    reference = calibration.label_issues
    thresholds = reference["thresholds"]
    flags = np.array([confident_issues(fold, labels, thresholds) for fold in np.atleast_2d(probabilities)])
    share, deff = float(flags.mean()), reference["design_effect"]
    columns = list(reference.get("subgroups", {})) if subgroups is not None else []
    rate = false_alarm_rate / 2 if columns else false_alarm_rate
    test = share_shift(
        "label_issues", reference["share"], effective_size(int(reference["studies"]), deff), share,
        effective_size(len(labels), deff), one_sided=True, false_alarm_rate=rate,
    )  # fmt: skip
    if not columns:
        return LabelIssues(flags.all(axis=0), share, test)
    contradicted = subgroups.reset_index(drop=True).assign(_contradicted=flags.mean(axis=0))
    shifts, unseen = label_share_shifts(
        reference["subgroups"], contradicted, columns, false_alarm_rate=rate, label="_contradicted",
        one_sided=True, design_effect=deff,
    )  # fmt: skip
    return LabelIssues(flags.all(axis=0), share, test, shifts, unseen)


def patient_folds(patients: pd.Series, seed: int) -> np.ndarray:
    """Each study's fold: patients shuffled by `seed` and dealt round-robin, so no patient spans two."""
    names = np.array(sorted(patients.unique()))
    shuffled = names[np.random.default_rng(seed).permutation(len(names))]
    return patients.map(dict(zip(shuffled, np.arange(len(names)) % FOLDS, strict=True))).to_numpy()


def fit_grader(
    images: np.ndarray,
    labels: np.ndarray,
    patients: pd.Series,
    cfg: cnn.CNNConfig,
    *,
    fgsm_epsilon: float,
    subgroups: pd.DataFrame | None = None,
) -> tuple[CrossFittedGrader, Calibration]:
    """The cross-fitted grader of the reference `images`, and its out-of-fold calibration
    (scores, each fold's FGSM accuracy drop at `fgsm_epsilon`, contradicted labels overall and
    per `subgroups` column)."""
    labels = cnn.check_labels(labels, len(images))
    folds = patient_folds(patients.reset_index(drop=True), cfg.seed)
    grader = CrossFittedGrader(cfg.image_size, cfg.channels)
    out_of_fold, fgsm = np.zeros(len(images)), []
    for k in range(FOLDS):
        unseen = folds == k
        grader.folds[k] = cnn.train_cnn(images[~unseen], labels[~unseen], cfg).eval()
        held_out = images[unseen]
        out_of_fold[unseen] = predict_proba(grader.folds[k], held_out)
        report = fgsm_robustness(grader.folds[k], held_out, labels[unseen], epsilon=fgsm_epsilon)
        fgsm.append({key: report[key] for key in ("n", "lost", "gained", "accuracy_drop")})
    return grader.eval(), calibrate(out_of_fold, labels, patients, fgsm, subgroups)


def calibrate(
    out_of_fold: np.ndarray,
    labels: np.ndarray,
    patients: pd.Series,
    fgsm: list[dict[str, Any]] | None = None,
    subgroups: pd.DataFrame | None = None,
) -> Calibration:
    """What out-of-fold lesion probabilities on the reference say about each label (see `Calibration`)."""
    edges = np.unique(np.quantile(out_of_fold, np.linspace(0, 1, BINS + 1)[1:-1])).tolist()
    bins = np.searchsorted(edges, out_of_fold, side="right")
    counts = {
        name: np.bincount(bins[labels == label], minlength=len(edges) + 1).tolist()
        for name, label in LABELS.items()
    }
    thresholds = confident_thresholds(out_of_fold, labels)
    flags = confident_issues(out_of_fold, labels, thresholds).astype(float)
    issues = pd.Series(flags).groupby(np.asarray(patients))
    contradicted = {
        "studies": len(labels),
        "share": float(flags.mean()),
        "thresholds": thresholds,
        "design_effect": design_effect(issues.size().to_numpy(), issues.sum().to_numpy()),
    }
    if subgroups is not None:
        frame = subgroups.reset_index(drop=True).assign(_contradicted=flags)
        contradicted["subgroups"] = label_shares(frame, list(subgroups.columns), "_contradicted")
    calibration = Calibration(edges, counts, {}, fgsm or [], contradicted)
    for name, label in LABELS.items():
        rows = labels == label
        evidence = calibration.evidence(name, out_of_fold[rows])
        per_patient = pd.Series(evidence).groupby(np.asarray(patients)[rows])
        calibration.design_effects[name] = design_effect(
            per_patient.size().to_numpy(), per_patient.sum().to_numpy(), float(evidence.var())
        )
    return calibration


def save_grader(grader: CrossFittedGrader, calibration: Calibration, directory: Path) -> Path:
    """The grader's weights (safetensors) and calibration (JSON) as a model directory."""
    config = {"architecture": grader.architecture(), "calibration": asdict(calibration), "version": 1}
    return save_model_dir(grader, config, directory)


def load_grader(directory: Path) -> tuple[CrossFittedGrader, Calibration]:
    """The grader and calibration `save_grader` wrote, built from code and filled from safetensors only."""

    def build(arch: dict[str, Any]) -> CrossFittedGrader:
        if set(arch) != {"image_size", "channels", "folds"} or arch["folds"] != FOLDS:
            raise ValueError(f"not a {FOLDS}-fold reference grader: {arch}")
        return CrossFittedGrader(arch["image_size"], tuple(arch["channels"]))

    grader, config = load_model_dir(directory, build, {"calibration"})
    return grader, Calibration(**config["calibration"])


def load_calibration(directory: Path) -> Calibration:
    """The calibration `save_grader` wrote, without the weights (for checks that need only what the
    folds showed on the reference)."""
    config = json.loads((Path(directory) / CONFIG_FILE).read_text(encoding="utf-8"))
    if "calibration" not in config:
        raise ValueError(f"{directory} is not a reference grader: its {CONFIG_FILE} has no calibration")
    return Calibration(**config["calibration"])
