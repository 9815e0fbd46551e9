"""Subgroup label shares: clean windows pass at any seed, a flip aimed at one modality fails."""

import numpy as np
import pandas as pd
import pytest

from domain.distribution import share_shift
from domain.subgroups import label_share_shifts, label_shares, subgroup_rates, subgroup_regressions
from examples.healthcare.studies.model import CohortConfig
from examples.healthcare.studies.plan import plan_studies

COLUMNS = ("modality", "body_part")
STUDIES = 1_500  # the attack lab's window


def _window(seed: int, period: int) -> pd.DataFrame:
    studies = plan_studies(CohortConfig(seed=seed, studies=STUDIES), period)
    return pd.DataFrame(
        {
            "label": [s.label for s in studies],
            "modality": [s.modality for s in studies],
            "body_part": [s.body_part for s in studies],
        }
    )


@pytest.fixture(scope="module", params=[13, 14, 15])
def windows(request) -> tuple[pd.DataFrame, pd.DataFrame]:
    return _window(request.param, -1), _window(request.param, 0)


def _moved(reference: pd.DataFrame, current: pd.DataFrame) -> list[str]:
    shifts, _ = label_share_shifts(label_shares(reference, COLUMNS), current, COLUMNS, false_alarm_rate=0.001)
    return [s.name for s in shifts if not s.test.passed]


def test_a_clean_window_passes_every_subgroup(windows):
    assert _moved(*windows) == []


def _relabel(frame: pd.DataFrame, modality: str, label: int, count: int) -> pd.DataFrame:
    victims = frame[(frame["modality"] == modality) & (frame["label"] == label)].index[:count]
    return frame.assign(label=frame["label"].where(~frame.index.isin(victims), 1 - label))


def test_lesions_of_one_modality_relabelled_normal_fail_that_modality(windows):
    """8% of the window: about a third of the radiographs' lesions. (At this size a 3-5% flip
    is caught on some seeds only; at 3x the size, 3% is: the limit shrinks with the subgroup.)"""
    reference, current = windows
    assert "modality=CR" in _moved(reference, _relabel(current, "CR", 1, int(0.08 * STUDIES)))


def test_the_overall_share_misses_a_flip_the_subgroup_test_catches(windows):
    """Radiographs' lesions called normal, as many CT normals called lesions: the overall share stays."""
    reference, current = windows
    count = int(0.08 * STUDIES)
    flipped = _relabel(_relabel(current, "CR", 1, count), "CT", 0, count)
    overall = share_shift(
        "positive_share", reference["label"].mean(), STUDIES, flipped["label"].mean(), STUDIES
    )
    assert flipped["label"].sum() == current["label"].sum() and overall.passed
    assert {"modality=CR", "modality=CT"} <= set(_moved(reference, flipped))


def test_a_subgroup_the_reference_never_saw_is_reported_not_tested():
    reference = pd.DataFrame({"label": [0, 1] * 50, "modality": ["CT"] * 100})
    current = pd.DataFrame({"label": [0, 1] * 50, "modality": ["CT"] * 90 + ["PT"] * 10})
    shifts, unseen = label_share_shifts(
        label_shares(reference, ["modality"]), current, ["modality"], false_alarm_rate=0.001
    )
    assert [s.name for s in shifts] == ["modality=CT"] and unseen == ["modality=PT"]


def test_a_subgroup_column_the_baseline_lacks_says_what_to_do():
    reference = label_shares(pd.DataFrame({"label": [0, 1], "modality": ["CT", "CT"]}), ["modality"])
    with pytest.raises(KeyError, match="rebuild the baseline"):
        label_share_shifts(
            reference, pd.DataFrame({"label": [1], "site": ["a"]}), ["site"], false_alarm_rate=0.001
        )


def _cases(modality: str, lesions: int, found: int, normals: int, cleared: int) -> pd.DataFrame:
    labels = [1] * lesions + [0] * normals
    predicted = [True] * found + [False] * (lesions - found)
    predicted += [False] * cleared + [True] * (normals - cleared)
    return pd.DataFrame({"modality": modality, "label": labels, "predicted": predicted})


def test_a_subgroup_is_shown_short_of_a_minimum_only_with_the_cases_to_show_it():
    cases = pd.concat(
        [
            _cases("CT", lesions=60, found=54, normals=120, cleared=110),  # fine
            _cases("CR", lesions=60, found=24, normals=120, cleared=110),  # misses most lesions: shown
            _cases("MR", lesions=6, found=3, normals=12, cleared=11),  # 3 of 6: too few to tell
        ],
        ignore_index=True,
    )
    rates = {
        r.value: r for r in subgroup_rates(cases, cases["predicted"], ["modality"], false_alarm_rate=0.001)
    }
    minimum = 0.75
    assert rates["CR"].sensitivity == pytest.approx(0.4) and rates["CR"].sensitivity_upper < minimum
    assert rates["MR"].sensitivity == pytest.approx(0.5) and rates["MR"].sensitivity_upper > minimum
    assert rates["CT"].sensitivity_upper > minimum and rates["CT"].specificity_upper > minimum


def test_a_subgroup_without_a_class_has_no_rate_for_it():
    cases = _cases("PT", lesions=0, found=0, normals=5, cleared=5)
    [rate] = subgroup_rates(cases, cases["predicted"], ["modality"], false_alarm_rate=0.001)
    assert rate.sensitivity is None and rate.sensitivity_upper == 1.0 and rate.specificity == 1.0


TOLERANCE = 0.05  # assets.healthcare.deployment.SUBGROUP_TOLERANCE


def _held_out(seed: int) -> pd.DataFrame:
    """A lab-sized test split: 15% of a window's studies."""
    return _window(seed, 0).sample(frac=0.15, random_state=seed).reset_index(drop=True)


def _answers(
    cases: pd.DataFrame, seed: int, sensitivity: float = 0.9, specificity: float = 0.85
) -> np.ndarray:
    """A model's calls, each case right at the given rates independently (the most churn two models show)."""
    right = np.random.default_rng(seed).random(len(cases)) < np.where(
        cases["label"] == 1, sensitivity, specificity
    )
    return np.where(right, cases["label"] == 1, cases["label"] == 0)


def _worse(cases: pd.DataFrame, champion: np.ndarray, challenger: np.ndarray) -> list[str]:
    found = subgroup_regressions(cases, champion, challenger, COLUMNS, false_alarm_rate=0.001)
    return [r.name for r in found if r.drop_lower_bound > TOLERANCE]


@pytest.mark.parametrize("seed", range(20, 30))
def test_two_equally_good_models_are_not_told_apart_on_any_subgroup(seed):
    cases = _held_out(seed)
    assert _worse(cases, _answers(cases, seed), _answers(cases, seed + 1000)) == []


@pytest.mark.parametrize("seed", [31, 32, 33])
def test_a_challenger_that_misses_most_of_one_modalitys_lesions_is_worse_there_only(seed):
    """Power at the lab's test size (~30 lesions per modality): a subgroup sensitivity down from
    0.9 to 0.2 is shown 10 times in 10, to 0.3 8 in 10, to 0.54 1 in 10; smaller flips are left to
    the label-share checks before training."""
    cases = _held_out(seed)
    champion = _answers(cases, seed)
    challenger = _answers(cases, seed + 1000)
    target = (cases["modality"] == "CR") & (cases["label"] == 1)
    challenger[target.to_numpy()] = np.random.default_rng(seed).random(int(target.sum())) < 0.2
    assert target.sum() >= 20
    assert [name for name in _worse(cases, champion, challenger) if name.startswith("modality")] == [
        "modality=CR:sensitivity"
    ]


def test_a_drop_on_a_handful_of_cases_is_not_evidence():
    cases = _cases("MR", lesions=6, found=6, normals=12, cleared=12)
    challenger = cases["predicted"].to_numpy().copy()
    challenger[:2] = False  # two of six lesions now missed
    [sensitivity, specificity] = subgroup_regressions(
        cases, cases["predicted"], challenger, ["modality"], false_alarm_rate=0.001
    )
    assert (sensitivity.lost, sensitivity.gained, sensitivity.challenger) == (2, 0, pytest.approx(4 / 6))
    assert sensitivity.drop_lower_bound <= TOLERANCE and specificity.lost == 0
