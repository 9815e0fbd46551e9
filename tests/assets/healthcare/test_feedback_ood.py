"""Feedback outside the champion's training distribution is quarantined and never reaches a training set.

The champion (a small CNN with its guard, `tests.domain.healthcare.ood_world`)
judges new studies as the server would; studies of another acquisition
profile (the retraining-exploitation scenario's scanners with twice the pixel
spacing, an abdominal CT) stay in the feedback table with their reason, the
training set leaves them out and counts them, and a flood of them fails a
blocking check.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from dagster import build_asset_check_context, build_asset_context

from assets.healthcare.modeling import DiagnosticSettings, no_out_of_distribution_studies, training_set
from assets.healthcare.monitoring import (
    MAX_OUT_OF_DISTRIBUTION_SHARE,
    NO_CHAMPION,
    feedback_within_training_distribution,
    screen_feedback,
)
from domain.healthcare import ood
from domain.healthcare.images import IMAGE_SIZE, to_blob
from examples.healthcare.studies.dicom import dicom_bytes
from examples.healthcare.studies.model import CohortConfig
from examples.healthcare.studies.profiles import profile_dicoms
from resources.loader import LoadedModel
from resources.tables import TableFile
from tests.domain.healthcare.ood_world import TEST_SEED, load, studies, trained


def image_frame(dicoms: list[bytes], prefix: str) -> pd.DataFrame:
    """Studies as the processing stage's image table has them (64-px blobs, label, acquisition)."""
    loaded = load(dicoms, size=IMAGE_SIZE)
    frame = pd.DataFrame(loaded.records)
    return frame.assign(
        study_uid=[f"{prefix}-{i}" for i in range(len(frame))],
        patient_pseudonym=[f"anon-{prefix}-{i}" for i in range(len(frame))],
        label=np.arange(len(frame)) % 2,
        image=[to_blob(image[0]) for image in loaded.images],
    )


@pytest.fixture(scope="module")
def champion() -> LoadedModel:
    model, guard, _ = trained(IMAGE_SIZE)
    config = {"architecture": model.architecture(), "version": 1, ood.CONFIG_KEY: guard.to_dict()}
    return LoadedModel(model, config, 1, "test", "blake3:test")


@pytest.fixture(scope="module")
def screened(champion) -> pd.DataFrame:
    cfg = CohortConfig(seed=TEST_SEED, studies=40)
    frame = pd.concat(
        [
            image_frame([dicom_bytes(s) for s in studies(TEST_SEED, 60)], "new"),
            image_frame(profile_dicoms("double_spacing", cfg), "recalibrated"),
            image_frame(profile_dicoms("abdomen", cfg), "abdomen"),
        ],
        ignore_index=True,
    )
    return screen_feedback(frame, champion)


def test_feedback_outside_the_distribution_is_quarantined_with_its_reason(screened):
    inside = screened["study_uid"].str.startswith("new-")
    assert (screened.loc[inside, "ood_reason"] != "").sum() <= 1  # held-out studies of the trained world
    outside = screened.loc[~inside]
    assert len(outside) >= 50 and (outside["ood_reason"] != "").all()
    recalibrated = outside[outside["study_uid"].str.startswith("recalibrated-")]["ood_reason"]
    assert recalibrated.str.contains("pixel_spacing|field_of_view_mm").all()


def test_without_a_champion_every_feedback_study_is_quarantined(screened):
    blind = screen_feedback(screened.drop(columns=["ood_reason", "ood_distance"]), None)
    assert (blind["ood_reason"] == NO_CHAMPION).all() and len(blind) == len(screened)


def test_a_champion_without_a_guard_cannot_screen_feedback(screened, champion):
    unguarded = LoadedModel(
        champion.module, {"architecture": champion.config["architecture"], "version": 1}, 1, "t", "d"
    )
    with pytest.raises(ValueError, match="no out-of-distribution statistics"):
        screen_feedback(screened.drop(columns=["ood_reason", "ood_distance"]), unguarded)


def test_quarantined_feedback_never_reaches_the_training_set(screened, tmp_path):
    trusted = image_frame([dicom_bytes(s) for s in studies(TEST_SEED + 1, 30)], "trusted").assign(
        split="train"
    )
    context = build_asset_context()
    frame = training_set(context, DiagnosticSettings(), trusted=trusted, feedback=screened)
    quarantined = set(screened.loc[screened["ood_reason"] != "", "study_uid"])
    assert quarantined and not quarantined & set(frame["study_uid"])
    assert (frame["ood_reason"] == "").all()
    assert context.get_output_metadata("result")["out_of_distribution_feedback"] == len(quarantined)

    path = tmp_path / "training.parquet"
    frame.drop(columns=["image"]).to_parquet(path)
    assert no_out_of_distribution_studies(build_asset_check_context(), TableFile(path, len(frame))).passed
    leaked = pd.concat([frame, screened[screened["ood_reason"] != ""].head(1)]).drop(columns=["image"])
    leaked.to_parquet(path)
    result = no_out_of_distribution_studies(build_asset_check_context(), TableFile(path, len(leaked)))
    assert not result.passed and result.metadata["out_of_distribution"].value == 1


def test_a_flood_of_out_of_distribution_feedback_fails_the_blocking_check(screened, tmp_path):
    path = tmp_path / "feedback.parquet"
    screened[["study_uid", "ood_reason"]].to_parquet(path)
    flood = feedback_within_training_distribution(build_asset_check_context(), TableFile(path, len(screened)))
    assert not flood.passed and flood.metadata["share"].value > MAX_OUT_OF_DISTRIBUTION_SHARE
    inside = screened[screened["study_uid"].str.startswith("new-")]
    inside[["study_uid", "ood_reason"]].to_parquet(path)
    assert feedback_within_training_distribution(
        build_asset_check_context(), TableFile(path, len(inside))
    ).passed
