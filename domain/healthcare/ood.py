"""The out-of-distribution guard: is a study one the lesion model was trained for?

A CNN scores anything shaped like its input; a brain CT, an abdominal scan
or a mammogram resized to 64 px gets a lesion probability like any chest CT
(measured: 0.93-0.998 on real scans the model never saw). This module says
"outside the model's training distribution" instead, by two tests:

- **envelope** - the acquisition metadata (`acquisition`) lies inside what
  the training studies had, per modality: the modality itself, body part,
  photometric interpretation, bits allocated and stored, rows, columns,
  pixel spacing and field of view (rows x spacing). Continuous ranges are
  widened (`RANGE_MARGIN` of their span, `RELATIVE_MARGIN` of each bound) so
  a held-out study of the same population is not refused for falling just
  past the training extreme.
  Resizing to 64 px erases geometry from the pixels; only this test sees a
  scanner with twice the pixel spacing.
- **features** - the Mahalanobis distance (Lee et al. 2018) of the CNN's
  penultimate activations to the nearest class mean of the declared
  modality, with one pooled within-group covariance shrunk by Ledoit-Wolf.
  The threshold is calibrated on held-out in-distribution studies at a stated
  false-refusal rate (`calibrate_threshold`), the count recorded.

Fitting happens at training time (`fit_guard`); the result is a JSON record
(numbers as lists, nothing pickled) stored in the model's signed
``config.json`` under `CONFIG_KEY`, so it is verified with the weights, and
`OODGuard.from_dict` refuses a missing or malformed record. Numpy only: the
isolated inference worker imports this module.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from io import BytesIO
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset

CONFIG_KEY = "ood"
FORMAT_VERSION = 1
REFUSAL = "outside the model's training distribution"
DEFAULT_FALSE_REFUSAL_RATE = 0.005
TAIL_QUANTILE = 0.8  # the exponential tail is fitted above this quantile of the held-out distances
RANGE_MARGIN = 0.25  # of the trained span, on each side of a continuous range
RELATIVE_MARGIN = 0.1  # of the bound itself
CATEGORICAL = ("body_part", "photometric", "bits_allocated")
INTEGER_RANGES = ("bits_stored", "rows", "columns")
CONTINUOUS_RANGES = ("pixel_spacing", "field_of_view_mm")
ACQUISITION_COLUMNS = ("modality", *CATEGORICAL, *INTEGER_RANGES, *CONTINUOUS_RANGES)


def _number(ds: Dataset, keyword: str) -> float | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    if not isinstance(value, str | int | float):
        value = value[0] if len(value) else None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def acquisition(ds: Dataset) -> dict[str, Any]:
    """The acquisition metadata of one DICOM data set, as the envelope compares it."""
    rows, columns = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    spacing = _number(ds, "PixelSpacing") or _number(ds, "ImagerPixelSpacing")
    bits_allocated = int(ds.get("BitsAllocated", 0) or 0)
    return {
        "modality": str(ds.get("Modality", "")).strip().upper(),
        "body_part": str(ds.get("BodyPartExamined", "")).strip().upper(),
        "photometric": str(ds.get("PhotometricInterpretation", "")).strip().upper(),
        "bits_allocated": bits_allocated,
        "bits_stored": int(ds.get("BitsStored", bits_allocated) or 0),
        "rows": rows,
        "columns": columns,
        "pixel_spacing": spacing,
        "field_of_view_mm": None if spacing is None else max(rows, columns) * spacing,
    }


def acquisition_from_bytes(data: bytes) -> dict[str, Any]:
    """`acquisition` of a stored (already validated) DICOM file, read without its pixels."""
    return acquisition(pydicom.dcmread(BytesIO(data), stop_before_pixels=True))


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    return None if isinstance(value, float) and math.isnan(value) else value


def acquisition_records(frame: Any) -> list[dict[str, Any]]:
    """The `ACQUISITION_COLUMNS` of a table (pandas), one plain dict per row, a missing number as None."""
    rows = frame[list(ACQUISITION_COLUMNS)].to_dict("records")
    return [{key: _plain(value) for key, value in row.items()} for row in rows]


def _range(values: Sequence[float], widen: bool) -> list:
    """[min, max] of `values`, widened (continuous attributes) by `RANGE_MARGIN` of the span and
    `RELATIVE_MARGIN` of each bound: a handful of studies per modality does not reach the
    population's extremes, while a changed geometry moves a value by a factor."""
    if not widen:
        return [min(values), max(values)]
    low, high = float(min(values)), float(max(values))
    pad = RANGE_MARGIN * (high - low)
    return [low - pad - RELATIVE_MARGIN * abs(low), high + pad + RELATIVE_MARGIN * abs(high)]


def fit_envelope(records: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per modality: the categories seen and the (widened) ranges of the training studies."""
    by_modality: dict[str, list[Mapping[str, Any]]] = {}
    for record in records:
        by_modality.setdefault(str(record["modality"]), []).append(record)
    if not by_modality:
        raise ValueError("the envelope needs at least one training study")
    envelope: dict[str, dict[str, Any]] = {}
    for modality, rows in sorted(by_modality.items()):
        entry: dict[str, Any] = {name: sorted({r[name] for r in rows}) for name in CATEGORICAL}
        for name in INTEGER_RANGES:
            entry[name] = _range([r[name] for r in rows], widen=False)
        for name in CONTINUOUS_RANGES:
            values = [r[name] for r in rows if r[name] is not None]
            # None: the training studies never lacked it, so a study without it is refused
            entry[name] = _range(values, widen=True) if len(values) == len(rows) else None
        envelope[modality] = entry
    return envelope


def envelope_problem(envelope: Mapping[str, Mapping[str, Any]], record: Mapping[str, Any]) -> str | None:
    """Which acquisition attribute of `record` lies outside `envelope` (None: all inside)."""
    modality = record["modality"]
    if modality not in envelope:
        return f"envelope: modality {modality!r} not among the trained {sorted(envelope)}"
    entry = envelope[modality]
    for name in CATEGORICAL:
        if record[name] not in entry[name]:
            return f"envelope: {name} {record[name]!r} not among the trained {entry[name]} for {modality}"
    for name in (*INTEGER_RANGES, *CONTINUOUS_RANGES):
        value, bounds = record[name], entry[name]
        if bounds is None:
            continue
        if value is None:
            return f"envelope: {name} missing, every {modality} training study had one"
        if not bounds[0] <= value <= bounds[1]:
            return (
                f"envelope: {name} {value:.4g} outside the trained {bounds[0]:.4g}..{bounds[1]:.4g} "
                f"for {modality}"
            )
    return None


def _checked_envelope(envelope: Any) -> dict[str, dict[str, Any]]:
    """`envelope` if it has the shape `fit_envelope` writes, else ValueError."""

    def is_range(bounds: Any) -> bool:
        return (
            isinstance(bounds, list)
            and len(bounds) == 2
            and all(isinstance(b, int | float) and math.isfinite(b) for b in bounds)
            and bounds[0] <= bounds[1]
        )

    if not isinstance(envelope, dict) or not envelope:
        raise ValueError("the envelope must be a non-empty object")
    for modality, entry in envelope.items():
        if not all(isinstance(entry[name], list) for name in CATEGORICAL):
            raise ValueError(f"the envelope of {modality} lacks a category list")
        if not all(is_range(entry[name]) for name in INTEGER_RANGES):
            raise ValueError(f"the envelope of {modality} lacks a range")
        if not all(entry[name] is None or is_range(entry[name]) for name in CONTINUOUS_RANGES):
            raise ValueError(f"the envelope of {modality} has a malformed range")
    return envelope


def ledoit_wolf(centred: np.ndarray) -> tuple[np.ndarray, float]:
    """The Ledoit-Wolf shrunk covariance of already-centred rows, and the shrinkage (as sklearn's)."""
    n, p = centred.shape
    empirical = centred.T @ centred / n
    mu = float(np.trace(empirical)) / p
    squared = centred**2
    beta_ = float(np.sum(squared.T @ squared))
    delta_ = float(np.sum(empirical**2))
    beta = (beta_ / n - delta_) / (p * n)
    delta = (delta_ - 2 * mu * float(np.trace(empirical)) + p * mu**2) / p
    shrinkage = 0.0 if delta == 0 else min(beta, delta) / delta
    return (1 - shrinkage) * empirical + shrinkage * mu * np.eye(p), shrinkage


def calibrate_threshold(distances: np.ndarray, rate: float) -> dict[str, Any]:
    """A distance that held-out in-distribution studies exceed with probability about `rate`.

    With n >= 1/rate - 1 held-out distances, the ceil((n+1)(1-rate))-th
    smallest (split-conformal: a new exchangeable study exceeds it with
    probability at most `rate`). With fewer, that order statistic does not
    exist, so the larger of the largest held-out distance and an exponential
    tail fitted to the excesses over the `TAIL_QUANTILE` quantile (peaks over
    threshold), extrapolated to `rate`: conservative for the light tails of
    distances.
    """
    distances = np.sort(np.asarray(distances, dtype=np.float64))
    n = len(distances)
    if n < 2 or not 0 < rate < 1:
        raise ValueError(
            f"calibration needs at least two held-out distances and 0 < rate < 1, got {n}, {rate}"
        )
    rank = math.ceil((n + 1) * (1 - rate))
    if rank <= n:
        return {"threshold": float(distances[rank - 1]), "rule": f"order statistic {rank} of {n}"}
    base = float(np.quantile(distances, TAIL_QUANTILE))
    excess = distances[distances > base] - base
    mean_excess = float(excess.mean()) if len(excess) else 0.0
    tail = base + mean_excess * math.log((1 - TAIL_QUANTILE) / rate)
    return {
        "threshold": max(tail, float(distances[-1])),
        "rule": f"max(largest of {n}, exponential tail over the {TAIL_QUANTILE:.0%} quantile at {rate:.2%})",
    }


@dataclass(frozen=True)
class Verdict:
    """The guard's answer for one study: `reason` is None when it is inside the distribution."""

    reason: str | None
    distance: float | None

    @property
    def inside(self) -> bool:
        return self.reason is None


@dataclass(frozen=True)
class OODGuard:
    """The acquisition envelope and the feature statistics of one trained model."""

    envelope: dict[str, dict[str, Any]]
    groups: dict[str, np.ndarray]  # "<modality>/<label>" -> class mean of the embeddings
    precision: np.ndarray  # inverse of the pooled, shrunk within-group covariance
    threshold: float
    calibration: dict[str, Any]

    def distances(self, embeddings: np.ndarray, modalities: Sequence[str]) -> np.ndarray:
        """Per row: the Mahalanobis distance to the nearest class mean of its modality (inf: none)."""
        embeddings = np.asarray(embeddings, dtype=np.float64)
        out = np.full(len(embeddings), np.inf)
        for key, mean in self.groups.items():
            modality = key.rsplit("/", 1)[0]
            rows = np.array([m == modality for m in modalities], dtype=bool)
            if not rows.any():
                continue
            delta = embeddings[rows] - mean
            squared = np.einsum("ij,jk,ik->i", delta, self.precision, delta)
            out[rows] = np.minimum(out[rows], np.sqrt(np.maximum(squared, 0.0)))
        return out

    def assess(self, records: Sequence[Mapping[str, Any]], embeddings: np.ndarray) -> list[Verdict]:
        """One verdict per study: the envelope first (its reason names the attribute), then the features."""
        distances = self.distances(embeddings, [r["modality"] for r in records])
        verdicts = []
        for record, distance in zip(records, distances, strict=True):
            reason = envelope_problem(self.envelope, record)
            if reason is None and not distance <= self.threshold:
                reason = (
                    f"features: Mahalanobis distance {distance:.3g} to the training studies exceeds "
                    f"{self.threshold:.3g} ({self.calibration['rule']})"
                )
            verdicts.append(Verdict(reason, None if math.isinf(distance) else float(distance)))
        return verdicts

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION,
            "envelope": self.envelope,
            "groups": {key: mean.tolist() for key, mean in sorted(self.groups.items())},
            "precision": self.precision.tolist(),
            "threshold": self.threshold,
            "calibration": self.calibration,
        }

    @classmethod
    def from_dict(cls, data: Any, embedding_dim: int) -> OODGuard:
        """The guard stored by `to_dict`, or ValueError saying what is missing or malformed."""
        if not isinstance(data, dict) or data.get("format") != FORMAT_VERSION:
            raise ValueError(
                f"no out-of-distribution statistics ('{CONFIG_KEY}' format {FORMAT_VERSION}): a model "
                "is served only with the guard fitted when it was trained; retrain and promote"
            )
        try:
            groups = {str(k): np.asarray(v, dtype=np.float64) for k, v in data["groups"].items()}
            precision = np.asarray(data["precision"], dtype=np.float64)
            threshold = float(data["threshold"])
            envelope, calibration = _checked_envelope(data["envelope"]), data["calibration"]
            calibration["rule"]
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as error:
            raise ValueError(f"malformed out-of-distribution statistics: {error!r}") from error
        shapes_ok = (
            groups
            and all(mean.shape == (embedding_dim,) for mean in groups.values())
            and precision.shape == (embedding_dim, embedding_dim)
            and np.isfinite(precision).all()
            and math.isfinite(threshold)
            and threshold > 0
        )
        if not shapes_ok:
            raise ValueError(
                f"malformed out-of-distribution statistics: means and precision must fit the "
                f"{embedding_dim}-value embedding and the threshold be a positive number"
            )
        return cls(envelope, groups, precision, threshold, dict(calibration))


def fit_guard(
    train_records: Sequence[Mapping[str, Any]],
    train_embeddings: np.ndarray,
    train_labels: np.ndarray,
    heldout_records: Sequence[Mapping[str, Any]],
    heldout_embeddings: np.ndarray,
    *,
    rate: float = DEFAULT_FALSE_REFUSAL_RATE,
) -> OODGuard:
    """The guard of a model: envelope and class means from its training studies, threshold from held-out ones.

    Groups are (modality, label): CT, radiographs and MR are apart in feature
    space, and a study is compared only with the groups of the modality it
    declares, so a scan that claims to be a chest CT must also look like one.
    The threshold is `calibrate_threshold` over the held-out studies' distances.
    """
    embeddings = np.asarray(train_embeddings, dtype=np.float64)
    if len(embeddings) != len(train_records) or len(train_labels) != len(train_records):
        raise ValueError("one training record, embedding and label per study")
    keys = np.array([f"{r['modality']}/{int(y)}" for r, y in zip(train_records, train_labels, strict=True)])
    groups = {key: embeddings[keys == key].mean(axis=0) for key in sorted(set(keys))}
    centred = embeddings - np.stack([groups[key] for key in keys])
    covariance, shrinkage = ledoit_wolf(centred)
    precision = np.linalg.inv(covariance)
    envelope = fit_envelope(train_records)
    provisional = OODGuard(envelope, groups, precision, math.inf, {"rule": "uncalibrated"})
    inside = [envelope_problem(envelope, r) is None for r in heldout_records]
    distances = provisional.distances(heldout_embeddings, [r["modality"] for r in heldout_records])
    distances = distances[np.array(inside, dtype=bool) & np.isfinite(distances)]
    calibration = calibrate_threshold(distances, rate)
    calibration |= {
        "false_refusal_rate": rate,
        "heldout_studies": len(heldout_records),
        "heldout_outside_envelope": int(len(inside) - sum(inside)),
        "train_studies": len(train_records),
        "shrinkage": shrinkage,
    }
    return OODGuard(envelope, groups, precision, calibration["threshold"], calibration)
