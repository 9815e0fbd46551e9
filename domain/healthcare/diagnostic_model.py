"""The healthcare diagnostic model: a small PyTorch CNN that scores images for a lesion.

Pure model code with no Dagster and no I/O beyond `save_model`/`load_model`.
The modeling assets call these functions on the processing stage's output:
images as a float32 array ``[n, 1, size, size]`` normalised to [0, 1] and
labels ``[n]`` in {0, 1} (1 = lesion), and a study table (`study_uid`,
`patient_pseudonym`, `label`) that `patient_split` divides by patient.

Security properties this module owns:

- **Nothing is pickled.** Weights are a safetensors file (a JSON header plus
  raw tensor bytes) and everything else is JSON. `load_model` builds the
  network from code (`build_from_architecture`) and only then fills it from
  the safetensors file, so a model directory cannot carry code (OWASP LLM03
  Supply Chain, MITRE ATLAS AML.T0011.000 Unsafe AI Artifacts).
- **Deterministic training.** The same images, labels and `CNNConfig` give
  bit-identical weights on CPU: initial weights, shuffling and augmentation
  all draw from generators seeded by `cfg.seed`, never from global state.
- **No leakage across splits.** `patient_split` keeps every patient's studies
  in one split, so a held-out metric is never inflated by a patient the model
  has already seen (and a relabelled patient cannot straddle train and test).
- **Inputs are checked.** `predict_proba` refuses arrays of the wrong shape,
  non-finite values or values outside [0, 1] instead of scoring them.

`embed` exposes the penultimate activations that `domain.healthcare.robustness`
inspects for backdoors (spectral signatures, activation clustering).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score
from torch import nn
from torch.nn import functional as F

from domain.healthcare import ood
from domain.healthcare.lesion_cnn import (
    LesionCNN,
    build_from_architecture,
    check_images,
    check_shape,
    embed_images,
    predict_proba,
)
from resources.model_files import CONFIG_FILE, load_model_dir, save_model_dir

SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class CNNConfig:
    """Hyperparameters of one training run.

    `weight_decay` is Adam's L2 penalty; `augment` adds random horizontal and
    vertical flips (a lesion is a lesion whichever way up the image is).
    `adversarial_epsilon` > 0 trains on half clean, half FGSM-perturbed
    batches (pixel budget in [0, 1] units; 0 turns it off): on 64-px scans a
    plainly trained CNN lost 15-21 points of accuracy to an FGSM perturbation
    of 2/255, one trained this way 5-9, for about 2.5 times the training time.
    """

    image_size: int = 64
    channels: tuple[int, ...] = (8, 16, 32)
    epochs: int = 20
    lr: float = 1e-2
    batch_size: int = 32
    seed: int = 7
    device: str = "cpu"
    weight_decay: float = 1e-4
    augment: bool = True
    adversarial_epsilon: float = 2 / 255

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(self.channels))
        check_shape(self.image_size, self.channels)
        if (
            self.epochs < 1
            or self.batch_size < 1
            or self.lr <= 0
            or self.weight_decay < 0
            or not 0 <= self.adversarial_epsilon < 1
        ):
            raise ValueError(f"invalid training configuration: {self}")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["channels"] = list(self.channels)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CNNConfig:
        return cls(**data)


def check_labels(labels: np.ndarray, n: int) -> np.ndarray:
    """`labels` as int64 ``[n]`` in {0, 1}, or ValueError."""
    labels = np.asarray(labels)
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape [{n}], got {labels.shape}")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError(f"labels must be 0 or 1, found {sorted(set(np.unique(labels).tolist()))[:5]}")
    return labels.astype(np.int64)


def train_cnn(
    images: np.ndarray,
    labels: np.ndarray,
    cfg: CNNConfig,
    *,
    log: Callable[[str], None] | None = None,
) -> LesionCNN:
    """A `LesionCNN` fitted with binary cross-entropy on the logits and Adam, the learning rate on a cosine.

    The cosine schedule (from `cfg.lr` down to zero over all steps) lets the
    last epochs settle instead of ending on a noisy step, so the result does
    not depend on where in an oscillation training happened to stop. With
    `cfg.adversarial_epsilon` > 0 every batch is trained on twice: as is, and
    perturbed by FGSM from a random start within that budget.

    All randomness (initial weights, batch order, flips) comes from torch
    generators seeded by `cfg.seed`, so the same inputs give the same weights
    on CPU. On CUDA the result is close but, as cuDNN convolutions are not
    bit-reproducible, not guaranteed identical. Returns the model on CPU in
    eval mode.
    """
    images = check_images(images, cfg.image_size)
    labels = check_labels(labels, len(images))
    if len(images) < 2:
        raise ValueError("training needs at least two images")
    device = torch.device(cfg.device)
    model = LesionCNN(cfg.image_size, cfg.channels)
    model.reset_parameters(torch.Generator().manual_seed(cfg.seed))
    model.to(device).train()
    x = torch.from_numpy(images).to(device)
    y = torch.from_numpy(labels.astype(np.float32)).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = sum(1 for start in range(0, len(x), cfg.batch_size) if len(x) - start > 1)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs * steps_per_epoch)
    generator = torch.Generator().manual_seed(cfg.seed + 1)
    for epoch in range(cfg.epochs):
        total = 0.0
        for rows, flips in _epoch_batches(len(x), cfg, generator):
            rows = rows.to(device)
            batch, targets = x[rows], y[rows]
            if cfg.augment:
                batch = _flip(batch, flips.to(device))
            if cfg.adversarial_epsilon > 0:  # half clean, half adversarial (Goodfellow et al. 2015)
                adversarial = _fgsm_random_start(model, batch, targets, cfg.adversarial_epsilon, generator)
                batch, targets = torch.cat([batch, adversarial]), torch.cat([targets, targets])
            loss = F.binary_cross_entropy_with_logits(model(batch), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(rows)
        if log is not None:
            log(f"epoch {epoch + 1}/{cfg.epochs}: loss {total / len(x):.4f}")
    optimizer.zero_grad(set_to_none=True)  # hand back weights only, no stale gradients
    return model.cpu().eval()


def _epoch_batches(
    n: int, cfg: CNNConfig, generator: torch.Generator
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of shuffled row batches, each row with its (horizontal, vertical) flip decisions.

    A final batch of one row is dropped: batch norm cannot normalise a single sample.
    """
    order = torch.randperm(n, generator=generator)
    flips = torch.rand(n, 2, generator=generator) < 0.5
    for start in range(0, n, cfg.batch_size):
        rows = order[start : start + cfg.batch_size]
        if len(rows) > 1:
            yield rows, flips[start : start + cfg.batch_size]


def _fgsm_random_start(
    model: LesionCNN, x: torch.Tensor, y: torch.Tensor, epsilon: float, generator: torch.Generator
) -> torch.Tensor:
    """FGSM from a random start in the epsilon ball (Wong, Rice & Kolter 2020), step 1.25 * epsilon."""
    noise = ((torch.rand(x.shape, generator=generator) * 2 - 1) * epsilon).to(x.device)
    start = (x + noise).clamp(0, 1).requires_grad_(True)
    loss = F.binary_cross_entropy_with_logits(model(start), y)
    (gradient,) = torch.autograd.grad(loss, start)
    adversarial = start.detach() + 1.25 * epsilon * gradient.sign()
    return torch.min(torch.max(adversarial, x - epsilon), x + epsilon).clamp(0, 1).detach()


def _flip(batch: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    horizontal = flips[:, 0].view(-1, 1, 1, 1)
    vertical = flips[:, 1].view(-1, 1, 1, 1)
    batch = torch.where(horizontal, batch.flip(-1), batch)
    return torch.where(vertical, batch.flip(-2), batch)


def binary_metrics(labels: np.ndarray, probabilities: np.ndarray, threshold: float = 0.5) -> dict[str, Any]:
    """AUC, sensitivity, specificity and accuracy of `probabilities` against `labels`.

    Both classes must be present (otherwise AUC, sensitivity or specificity
    is undefined): ValueError rather than a misleading number.
    """
    labels = check_labels(labels, len(probabilities))
    if len(np.unique(labels)) < 2:
        raise ValueError("evaluation needs images of both classes (lesion and no lesion)")
    predicted = probabilities >= threshold
    positive = labels == 1
    return {
        "auc": float(roc_auc_score(labels, probabilities)),
        "sensitivity": float(predicted[positive].mean()),
        "specificity": float((~predicted[~positive]).mean()),
        "accuracy": float((predicted == positive).mean()),
        "n": len(labels),
    }


def evaluate(
    model: LesionCNN, images: np.ndarray, labels: np.ndarray, threshold: float = 0.5
) -> dict[str, Any]:
    """Held-out AUC (sklearn), sensitivity, specificity and accuracy at `threshold`, and the image count."""
    return binary_metrics(labels, predict_proba(model, images), threshold)


def patient_split(
    frame: pd.DataFrame,
    *,
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    seed: int,
) -> dict[str, list[str]]:
    """Study uids per split ("train", "validation", "test"), with every patient in exactly one split.

    Patients are the unit: splitting studies instead would let a patient's
    images appear in training and in the test set and inflate the test
    metrics. Stratified by label: patients with any lesion study and
    lesion-free patients are shuffled separately (seeded, independent of row
    order) and each patient goes to the split furthest below its share of
    that stratum's studies, so each split gets about `fractions` of the
    studies and of the positives. A study listed twice or under two patients
    is refused (ValueError): that is inconsistent metadata, not something to
    guess about.
    """
    missing = {"study_uid", "patient_pseudonym", "label"} - set(frame.columns)
    if missing:
        raise ValueError(f"patient_split needs columns {sorted(missing)}")
    if len(fractions) != len(SPLITS) or min(fractions) < 0 or not math.isclose(sum(fractions), 1.0):
        raise ValueError(f"fractions must be {len(SPLITS)} non-negative shares summing to 1, got {fractions}")
    if frame[["study_uid", "patient_pseudonym", "label"]].isna().any().any():
        raise ValueError("study_uid, patient_pseudonym and label must not be null")
    duplicated = frame["study_uid"][frame["study_uid"].duplicated()]
    if len(duplicated):
        raise ValueError(f"study uids listed more than once: {sorted(duplicated.astype(str).unique())[:5]}")
    check_labels(frame["label"].to_numpy(), len(frame))
    patients = (
        frame.assign(patient=frame["patient_pseudonym"].astype(str), study=frame["study_uid"].astype(str))
        .groupby("patient", sort=True)
        .agg(studies=("study", lambda s: sorted(s)), positive=("label", "max"))
    )
    rng = np.random.default_rng(seed)
    splits: dict[str, list[str]] = {name: [] for name in SPLITS}
    for positive in (1, 0):
        stratum = patients[patients["positive"] == positive]
        stratum = stratum.iloc[rng.permutation(len(stratum))]
        counts = np.zeros(len(SPLITS))
        for studies in stratum["studies"]:
            deficit = np.asarray(fractions) * (counts.sum() + len(studies)) - counts
            chosen = int(np.argmax(deficit))  # ties go to the earlier split
            splits[SPLITS[chosen]].extend(studies)
            counts[chosen] += len(studies)
    return {name: sorted(uids) for name, uids in splits.items()}


def save_model(
    model: LesionCNN,
    cfg: CNNConfig,
    metrics: dict[str, Any],
    directory: Path,
    *,
    version: int,
    threshold: float = 0.5,
    guard: ood.OODGuard | None = None,
) -> Path:
    """Write the model, its training config, metrics, decision threshold and OOD guard as a model directory.

    The guard (`domain.healthcare.ood`) goes into the config file, so it is
    signed and verified with the weights; the diagnostic server refuses a
    release without one.
    """
    config = {
        "architecture": model.architecture(),
        "train_config": cfg.to_dict(),
        "metrics": metrics,
        "threshold": threshold,
        "version": version,
    }
    if guard is not None:
        config[ood.CONFIG_KEY] = guard.to_dict()
    return save_model_dir(model, config, directory)


def fit_model_guard(
    model: LesionCNN,
    train: tuple[np.ndarray, np.ndarray, list[dict[str, Any]]],
    heldout: tuple[np.ndarray, list[dict[str, Any]]],
    *,
    false_refusal_rate: float = ood.DEFAULT_FALSE_REFUSAL_RATE,
) -> ood.OODGuard:
    """The model's out-of-distribution guard: `train` is (images, labels, acquisition records), `heldout`
    (images, records) of studies it was not trained on, for the threshold (`ood.fit_guard`)."""
    images, labels, records = train
    heldout_images, heldout_records = heldout
    return ood.fit_guard(
        records,
        embed_images(model, images),
        labels,
        heldout_records,
        embed_images(model, heldout_images),
        rate=false_refusal_rate,
    )


def load_model(directory: Path) -> tuple[LesionCNN, dict[str, Any]]:
    """The model and config stored in `directory` by `save_model`.

    The network is built from code and the weights read from safetensors only
    (`resources.model_files`); a training config whose image size or channels
    differ from the architecture is refused with ValueError.
    """

    def check(model: nn.Module, config: dict[str, Any]) -> None:
        try:
            cfg = CNNConfig.from_dict(config["train_config"])
        except TypeError as error:
            raise ValueError(f"{CONFIG_FILE} has an unknown train_config: {error}") from error
        if (cfg.image_size, cfg.channels) != (model.image_size, model.channels):
            raise ValueError(
                f"train_config declares image_size {cfg.image_size} and channels {list(cfg.channels)}, "
                f"the architecture declares {config['architecture']}"
            )

    model, config = load_model_dir(directory, build_from_architecture, {"train_config", "metrics"}, check)
    return model, config
