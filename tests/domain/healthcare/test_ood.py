"""The out-of-distribution guard: held-out studies of the trained world pass, other acquisitions do not.

The model and guard are fitted on one simulated world (seed 3: 300 training
studies, 100 held out for the threshold); every rate below is measured on
another world (seed 21), which nothing was fitted or tuned on.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from sklearn.covariance import LedoitWolf

from domain.healthcare import lesion_cnn, ood
from examples.healthcare.studies.dicom import dicom_bytes
from examples.healthcare.studies.model import CohortConfig
from examples.healthcare.studies.profiles import PROFILES, profile_dicoms, profile_studies
from tests.domain.healthcare.ood_world import TEST_SEED, load, studies, trained

MAX_IN_DISTRIBUTION_REFUSALS = 0.01
MIN_OUT_OF_DISTRIBUTION_REFUSALS = 0.95


def refused(loaded) -> list[str]:
    model, guard, _ = trained()
    verdicts = guard.assess(loaded.records, lesion_cnn.embed_images(model, loaded.images))
    return [v.reason for v in verdicts if not v.inside]


def test_held_out_studies_of_the_trained_world_are_answered():
    world = studies(TEST_SEED, 300)
    reasons = refused(load([dicom_bytes(s) for s in world]))
    assert len(reasons) / len(world) <= MAX_IN_DISTRIBUTION_REFUSALS, reasons


@pytest.mark.parametrize(
    ("profile", "test"),
    [
        ("high_resolution", "envelope: rows"),
        ("double_spacing", "envelope: "),
        ("abdomen", "envelope: body_part 'ABDOMEN'"),
        ("mammography", "envelope: modality 'MG'"),
    ],
)
def test_studies_of_another_acquisition_profile_are_refused_with_the_test_that_failed(profile, test):
    loaded = load(profile_dicoms(profile, CohortConfig(seed=TEST_SEED, studies=120)))
    reasons = refused(loaded)
    assert len(loaded.records) >= 40
    assert len(reasons) / len(loaded.records) >= MIN_OUT_OF_DISTRIBUTION_REFUSALS
    assert all(reason.startswith(test) for reason in reasons), reasons[:3]


def test_double_spacing_is_refused_on_spacing_or_field_of_view():
    reasons = refused(load(profile_dicoms("double_spacing", CohortConfig(seed=TEST_SEED, studies=60))))
    assert {r.split(" ")[1] for r in reasons} <= {"pixel_spacing", "field_of_view_mm"}


def test_images_unlike_any_training_image_are_refused_on_features_alone():
    """Metadata of a normal study, pixels of another kind of image: only the feature test sees it."""
    world = studies(TEST_SEED, 120)
    rng = np.random.default_rng(0)
    foreign = []
    for study in world:
        top = 2**study.device.bits_stored - 1
        pixels = rng.integers(0, top, (study.rows, study.rows)).astype(np.uint16)  # detector noise
        foreign.append(dicom_bytes(study, pixels))
    reasons = refused(load(foreign))
    assert len(reasons) / len(world) >= MIN_OUT_OF_DISTRIBUTION_REFUSALS
    assert all(r.startswith("features: Mahalanobis distance") for r in reasons)


def test_the_threshold_comes_from_held_out_studies_and_says_how():
    _, guard, data = trained()
    assert guard.calibration["heldout_studies"] == 100 and guard.calibration["train_studies"] == 300
    assert guard.calibration["false_refusal_rate"] == 0.005
    assert "largest of 100" in guard.calibration["rule"]
    model = trained()[0]
    heldout = guard.distances(
        lesion_cnn.embed_images(model, data.images[300:]), [r["modality"] for r in data.records[300:]]
    )
    assert guard.threshold >= heldout.max()


def test_calibration_uses_the_conformal_order_statistic_when_there_are_enough_studies():
    distances = np.arange(1, 400, dtype=float)  # 399 held-out distances: rank ceil(400 * 0.995) = 398
    assert ood.calibrate_threshold(distances, 0.005) == {
        "threshold": 398.0,
        "rule": "order statistic 398 of 399",
    }
    few = np.random.default_rng(1).gamma(4.0, 1.0, 50)
    assert (
        ood.calibrate_threshold(few, 0.005)["threshold"] > few.max()
    )  # conservative, not the 99.5th percentile
    with pytest.raises(ValueError):
        ood.calibrate_threshold(np.array([1.0]), 0.005)


def test_ledoit_wolf_matches_sklearn():
    x = np.random.default_rng(2).normal(size=(60, 12)) @ np.random.default_rng(3).normal(size=(12, 12))
    centred = x - x.mean(axis=0)
    covariance, shrinkage = ood.ledoit_wolf(centred)
    reference = LedoitWolf(assume_centered=True).fit(centred)
    assert shrinkage == pytest.approx(reference.shrinkage_)
    np.testing.assert_allclose(covariance, reference.covariance_, rtol=1e-9)


def test_the_guard_round_trips_through_json_and_refuses_a_missing_or_malformed_record():
    model, guard, data = trained()
    restored = ood.OODGuard.from_dict(json.loads(json.dumps(guard.to_dict())), model.embedding_dim)
    embeddings = lesion_cnn.embed_images(model, data.images[:20])
    assert restored.assess(data.records[:20], embeddings) == guard.assess(data.records[:20], embeddings)
    with pytest.raises(ValueError, match="no out-of-distribution statistics"):
        ood.OODGuard.from_dict(None, model.embedding_dim)
    stored = guard.to_dict()
    for broken in (
        {**stored, "precision": stored["precision"][:-1]},
        {**stored, "threshold": -1},
        {**stored, "envelope": {"CT": {**stored["envelope"]["CT"], "rows": [128, 64]}}},
        {k: v for k, v in stored.items() if k != "groups"},
    ):
        with pytest.raises(ValueError, match="malformed"):
            ood.OODGuard.from_dict(broken, model.embedding_dim)


def test_the_envelope_is_per_modality():
    _, guard, data = trained()
    ct = next(r for r in data.records if r["modality"] == "CT")
    mr = next(r for r in data.records if r["modality"] == "MR")
    assert (
        ood.envelope_problem(guard.envelope, ct) is None and ood.envelope_problem(guard.envelope, mr) is None
    )
    # a head-sized field of view is normal for MR and out of range for a chest CT
    head_sized = ood.envelope_problem(guard.envelope, {**ct, "field_of_view_mm": mr["field_of_view_mm"]})
    assert head_sized.startswith("envelope: field_of_view_mm") and head_sized.endswith("for CT")
    assert "body_part" in ood.envelope_problem(guard.envelope, {**ct, "body_part": "HEAD"})
    assert "missing" in ood.envelope_problem(guard.envelope, {**ct, "pixel_spacing": None})


def test_profiles_reuse_the_simulator_and_change_only_the_acquisition():
    cfg = CohortConfig(seed=TEST_SEED, studies=30)
    assert set(PROFILES) == {"high_resolution", "double_spacing", "abdomen", "mammography"}
    with pytest.raises(ValueError, match="unknown profile"):
        profile_dicoms("ultrasound", cfg)
    base = {s.study_uid: s for s in studies(TEST_SEED, 30)}
    for study in profile_studies("double_spacing", cfg):
        original = base[study.study_uid]
        assert study.rows == original.rows and study.spacing_mm == pytest.approx(
            2 * original.spacing_mm, abs=1e-4
        )
        assert replace(study, spacing_mm=0, body=None, organs=(), lesion=None) == replace(
            original, spacing_mm=0, body=None, organs=(), lesion=None
        )
