"""Statistics of training data, and label-issue detection on sentiment labels.

The modeling checks compare the data a model is about to learn from with
the trusted reference window: label balance, the confidence distribution
and how many interactions users have. A poisoning campaign (fake users with
many purchases, a skewed feedback loop) moves these before it moves a model.
"""

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.special import expit
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_predict

from domain.distribution import CalibratedTest, histogram_shift, share_shift
from domain.label_issues import confident_issues, confident_thresholds

DECILES = np.linspace(0, 1, 11)[1:-1]
PROFILE_COLUMNS = ["user_id", "item_id", "confidence", "label"]  # what `training_profile` reads
LABEL_ISSUE_FOLDS = 5
REVIEW_FEATURES = HashingVectorizer(ngram_range=(1, 2), alternate_sign=False, n_features=2**20)


def _histogram(values: pd.Series, edges: list[float]) -> dict[str, float]:
    """Shares of `values` in the bins cut at `edges` (keys are bin numbers)."""
    bins = np.searchsorted(np.asarray(edges), values.to_numpy(), side="right")
    counts = np.bincount(bins, minlength=len(edges) + 1)
    return {str(i): float(c) / max(len(values), 1) for i, c in enumerate(counts)}


def _features(interactions: pd.DataFrame) -> dict[str, pd.Series]:
    return {
        "confidence": interactions["confidence"],
        "items_per_user": interactions.groupby("user_id", observed=True).size(),
        "users_per_item": interactions.groupby("item_id", observed=True).size(),
    }


def training_profile(interactions: pd.DataFrame, reference: dict | None = None) -> dict:
    """Label share and binned feature distributions; bins are the reference's deciles."""
    features = _features(interactions)
    histograms = {}
    for name, values in features.items():
        edges = (
            reference["histograms"][name]["edges"]
            if reference
            else sorted(set(np.quantile(values, DECILES).tolist()))
        )
        histograms[name] = {"edges": edges, "shares": _histogram(values, edges), "n": len(values)}
    return {
        "rows": len(interactions),
        "label_share": float(interactions["label"].mean()) if len(interactions) else 0.0,
        "histograms": histograms,
    }


def profile_drift(reference: dict, current: dict, *, false_alarm_rate: float) -> dict[str, CalibratedTest]:
    """PSI of each binned feature between the reference and current profiles, each against the
    limit a clean window of the current one's size exceeds with `false_alarm_rate` (shared
    by the features)."""
    features = current["histograms"]
    return {
        name: histogram_shift(
            f"profile:{name}",
            reference["histograms"][name]["shares"],
            reference["histograms"][name]["n"],
            hist["shares"],
            hist["n"],
            tests=len(features),
            false_alarm_rate=false_alarm_rate,
        )
        for name, hist in features.items()
    }


def label_balance_shift(reference: dict, current: dict, *, false_alarm_rate: float) -> CalibratedTest:
    """How far the positive-label share moved from the reference's, against its calibrated limit."""
    return share_shift(
        "label_share",
        reference["label_share"],
        reference["rows"],
        current["label_share"],
        current["rows"],
        false_alarm_rate=false_alarm_rate,
    )


def sentiment_labels(reviews: pd.DataFrame) -> pd.DataFrame:
    """Reviews with a binary sentiment label from the rating (4-5 positive, 1-2 negative)."""
    labelled = reviews[reviews["rating"] != 3]
    return labelled.assign(label=(labelled["rating"] >= 4).astype(int))


def sentiment_reference(reviews: pd.DataFrame, seed: int = 7) -> dict:
    """A sentiment grader of review text fitted on the trusted reference reviews only, and the share
    of their labels it contradicts out of fold (cleanlab's confident learning).

    Hashed word and bigram counts (nothing to store but the weights) and a
    logistic regression. Its out-of-fold scores on the reference set the
    confidence thresholds (`domain.label_issues`) and the reference share;
    the model fitted on every reference review, weights kept as JSON, grades
    later windows. A grader fitted on the window under test would learn its
    flipped labels, and would contradict more labels the more reviews it was
    fitted on: a clean window four times the reference's size counted 2.8%
    against 0.8%. `reviews` is 0 and there are no `weights` when the reference
    has fewer than `LABEL_ISSUE_FOLDS` labelled reviews of either sentiment.
    """
    labelled = sentiment_labels(reviews)
    labels = labelled["label"].to_numpy()
    if min(np.bincount(labels, minlength=2)) < LABEL_ISSUE_FOLDS:
        return {"reviews": 0, "labelled": len(labelled)}
    features = _review_features(labelled)
    model = LogisticRegression(C=10, solver="liblinear", random_state=seed)
    probabilities = cross_val_predict(model, features, labels, cv=LABEL_ISSUE_FOLDS, method="predict_proba")
    out_of_fold = probabilities[:, 1]
    thresholds = confident_thresholds(out_of_fold, labels)
    coefficients = model.fit(features, labels).coef_[0]
    used = np.flatnonzero(coefficients)
    return {
        "reviews": len(labelled),
        "share": float(confident_issues(out_of_fold, labels, thresholds).mean()),
        "thresholds": thresholds,
        "features": used.tolist(),
        "weights": coefficients[used].tolist(),
        "intercept": float(model.intercept_[0]),
    }


def label_issue_share(reviews: pd.DataFrame, reference: dict) -> dict:
    """Share of sentiment labels in `reviews` that the `reference` grader (`sentiment_reference`)
    confidently contradicts, with the reference's thresholds; up to ten contradicted review ids."""
    labelled = sentiment_labels(reviews)
    weights = np.zeros(REVIEW_FEATURES.n_features)
    weights[reference["features"]] = reference["weights"]
    scores = expit(_review_features(labelled) @ weights + reference["intercept"])
    issues = confident_issues(scores, labelled["label"].to_numpy(), reference["thresholds"])
    return {
        "reviews": len(labelled),
        "issues": int(issues.sum()),
        "share": float(issues.mean()) if len(labelled) else 0.0,
        "examples": labelled["review_id"][issues].head(10).tolist(),
    }


def _review_features(labelled: pd.DataFrame) -> sparse.csr_matrix:
    return REVIEW_FEATURES.transform(
        (labelled["title"].fillna("") + " " + labelled["text"].fillna("")).str.lower()
    )
