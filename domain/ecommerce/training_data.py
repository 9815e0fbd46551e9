"""Statistics of training data, and label-issue detection on sentiment labels.

The modeling checks compare the data a model is about to learn from with
the trusted reference window: label balance, the confidence distribution
and how many interactions users have. A poisoning campaign (fake users with
many purchases, a skewed feedback loop) moves these before it moves a model.
"""

import numpy as np
import pandas as pd
from cleanlab.filter import find_label_issues
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_predict

from domain.distribution import CalibratedTest, histogram_shift, share_shift

DECILES = np.linspace(0, 1, 11)[1:-1]
LABEL_ISSUE_FOLDS = 5


def _histogram(values: pd.Series, edges: list[float]) -> dict[str, float]:
    """Shares of `values` in the bins cut at `edges` (keys are bin numbers)."""
    bins = np.searchsorted(np.asarray(edges), values.to_numpy(), side="right")
    counts = np.bincount(bins, minlength=len(edges) + 1)
    return {str(i): float(c) / max(len(values), 1) for i, c in enumerate(counts)}


def _features(interactions: pd.DataFrame) -> dict[str, pd.Series]:
    return {
        "confidence": interactions["confidence"],
        "items_per_user": interactions.groupby("user_id").size(),
        "users_per_item": interactions.groupby("item_id").size(),
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


def label_issue_share(reviews: pd.DataFrame, seed: int = 7) -> dict:
    """Share of sentiment labels that disagree with their text (cleanlab, confident learning).

    Out-of-fold probabilities from a TF-IDF logistic regression stand in for
    the model's view of each review; cleanlab flags labels that view says are
    wrong. Flipped labels (5 stars on a scathing text) raise the share.
    """
    labelled = sentiment_labels(reviews)
    if labelled["label"].nunique() < 2 or len(labelled) < 5 * LABEL_ISSUE_FOLDS:
        return {"reviews": len(labelled), "issues": 0, "share": 0.0, "examples": []}
    text = (labelled["title"].fillna("") + " " + labelled["text"].fillna("")).str.lower()
    features = TfidfVectorizer(min_df=2, ngram_range=(1, 2), sublinear_tf=True).fit_transform(text)
    probabilities = cross_val_predict(
        LogisticRegression(max_iter=1000, random_state=seed),
        features,
        labelled["label"].to_numpy(),
        cv=LABEL_ISSUE_FOLDS,
        method="predict_proba",
    )
    # n_jobs=1: no worker processes (which would fork the Dagster run and pickle data between them).
    issues = find_label_issues(labels=labelled["label"].to_numpy(), pred_probs=probabilities, n_jobs=1)
    flagged = labelled[issues]
    return {
        "reviews": len(labelled),
        "issues": int(issues.sum()),
        "share": float(issues.mean()),
        "examples": flagged["review_id"].head(10).tolist(),
    }
