"""Confident learning (cleanlab) with its confidence thresholds fixed on a trusted reference.

cleanlab's `find_label_issues` sets each class's confidence threshold from
the scores of the set it is given, so the share of labels it contradicts in
one window cannot be compared with another's: the thresholds move with the
window (a clean 1,500-study clinic counted 8.5% against its reference's
5.1%), and a poisoned window moves its own thresholds. Set once on the
reference's out-of-fold scores and kept, the thresholds make each label's
verdict depend on its own score only, so a share of contradicted labels is
a binomial count that can be tested against the reference's.
"""

import numpy as np
from cleanlab.count import compute_confident_joint, get_confident_thresholds


def _two_classes(probabilities: np.ndarray) -> np.ndarray:
    return np.column_stack([1 - probabilities, probabilities])


def confident_thresholds(probabilities: np.ndarray, labels: np.ndarray) -> list[float]:
    """Per class (0, 1), the mean probability of that class over the examples labelled with it."""
    return get_confident_thresholds(labels, _two_classes(probabilities)).tolist()


def confident_issues(probabilities: np.ndarray, labels: np.ndarray, thresholds: list[float]) -> np.ndarray:
    """Which binary `labels` the positive-class `probabilities` confidently contradict: cleanlab's
    confident joint off its diagonal (an example at or above the other class's threshold, and the
    likelier of the two where it clears both), with the per-class `thresholds` given."""
    _, off_diagonal = compute_confident_joint(
        labels, _two_classes(probabilities), thresholds=thresholds, calibrate=False,
        return_indices_of_off_diagonals=True,
    )  # fmt: skip
    flags = np.zeros(len(labels), dtype=bool)
    flags[off_diagonal] = True
    return flags
