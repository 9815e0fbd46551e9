"""The landing sensor: one intake per new set of batches, never a window that is still landing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from dagster import RunRequest, SkipReason, build_sensor_context

from pipelines import ecommerce
from pipelines.intake import landing_sensor, poll_seconds
from resources.sources import SourceRegistry


def _tick(sensor, sources: SourceRegistry, cursor: str | None):
    with build_sensor_context(cursor=cursor, resources={"sources": sources}) as context:
        return sensor(context), context.cursor


def test_a_window_is_taken_once_it_stops_changing_and_only_once(tmp_path: Path):
    sources = SourceRegistry(name="ecommerce", path=str(tmp_path / "sources.json"), landing=str(tmp_path))
    sensor = landing_sensor("ecommerce", "feedback", ecommerce.feedback_intake_job)
    window = tmp_path / "feedback" / "user-activity"
    window.mkdir(parents=True)

    result, cursor = _tick(sensor, sources, None)
    assert isinstance(result, SkipReason)  # nothing landed

    (window / "b1.manifest.json").write_text("{}")
    result, cursor = _tick(sensor, sources, cursor)
    assert isinstance(result, SkipReason)  # still landing: seen once
    result, cursor = _tick(sensor, sources, cursor)
    assert isinstance(result, RunRequest)  # unchanged for a tick: taken
    result, cursor = _tick(sensor, sources, cursor)
    assert isinstance(result, SkipReason)  # taken already

    # A batch re-signed in place (same name, new content) is new data.
    os.utime(window / "b1.manifest.json", ns=(1, 1))
    result, cursor = _tick(sensor, sources, cursor)
    assert isinstance(result, SkipReason)
    (window / "b2.manifest.json").write_text("{}")  # more arrives before it settles
    result, cursor = _tick(sensor, sources, cursor)
    assert isinstance(result, SkipReason)
    result, cursor = _tick(sensor, sources, cursor)
    assert isinstance(result, RunRequest)
    assert result.tags["pipeline/new_batches"] == "2"
    (window / "b1.manifest.json").unlink()  # retired by that intake
    result, cursor = _tick(sensor, sources, cursor)
    assert isinstance(result, SkipReason)
    result, cursor = _tick(sensor, sources, cursor)
    assert isinstance(result, SkipReason)


def test_the_sensor_interval_is_configuration_and_a_bad_value_says_what_to_set(monkeypatch):
    monkeypatch.delenv("PIPELINE_SENSOR_INTERVAL_SECONDS", raising=False)
    assert poll_seconds() == 15
    monkeypatch.setenv("PIPELINE_SENSOR_INTERVAL_SECONDS", "5")
    assert poll_seconds() == 5
    sensor = landing_sensor("ecommerce", "feedback", ecommerce.feedback_intake_job)
    assert sensor.minimum_interval_seconds == 5
    for bad in ("0", "-3", "fast", "2.5"):
        monkeypatch.setenv("PIPELINE_SENSOR_INTERVAL_SECONDS", bad)
        with pytest.raises(ValueError, match="whole number of seconds"):
            poll_seconds()
