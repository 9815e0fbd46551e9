"""The healthcare lifecycle on the production stack: DICOM intake to a signed, registered champion.

Submitted through the webserver and launched by the daemon, as in
production; the code server reads the clinical thresholds from its
configuration file (`PIPELINE_HEALTHCARE_SETTINGS`), not from code.
"""

from __future__ import annotations

import time

import pytest
from dagster import DagsterRunStatus
from mlflow.tracking import MlflowClient

from deploy.stack.objectstore import client
from deploy.stack.settings import BUCKETS
from domain.healthcare.release import MODEL_NAME

pytestmark = pytest.mark.slow


def test_the_healthcare_lifecycle_runs_through_the_daemon_to_a_registered_champion(stack, clinic):
    assert [run.status for run in clinic.submitted] == [DagsterRunStatus.SUCCESS] * 2
    champion = MlflowClient(stack.mlflow_uri()).get_model_version_by_alias(MODEL_NAME, "champion")
    assert int(champion.version) == 1
    report = clinic.ledger.verify_chain()
    assert report.ok, report.problems


def test_no_patient_identifier_is_readable_in_the_bucket(stack, clinic):
    """The landed DICOM headers name patients; no stored object may show one of those values."""
    identifying = clinic.identifying
    assert len(identifying) > 50
    s3 = client(stack, "s3")
    stored = [
        item["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKETS["store"])
        for item in page.get("Contents", [])
        if "healthcare" in item["Key"]
    ]
    assert len(stored) > 10, "the healthcare lifecycle stored nothing in the bucket"
    for key in stored:
        body = s3.get_object(Bucket=BUCKETS["store"], Key=key)["Body"].read()
        assert not [value for value in identifying if value.encode() in body], key


def test_new_studies_then_a_reviewers_approval_retrain_through_the_daemon(stack, clinic, runs):
    """The daemon takes new studies in by itself, then retrains only once a trusted reviewer approves."""
    known = runs.known()
    clinic.feedback(cycle=1, studies=300)
    intake = runs.next_run(lambda r: r.job_name == "healthcare_feedback", known, timeout_s=600)
    assert intake is not None, "no run started"
    assert intake.status == DagsterRunStatus.SUCCESS, runs.why_failed(intake)
    # Without an approval, the approval sensor looks and starts nothing.
    after = time.time()
    ticks = runs.sensor_ticks("healthcare", "healthcare_approved_retraining", after, count=2, timeout_s=300)
    assert not [tick for tick in ticks if tick["runIds"]], ticks
    assert not [r for r in runs.launched(known) if r.job_name == "healthcare_retraining"]

    clinic.approve_retraining(reviewer="dr-review")
    retraining = runs.next_run(lambda r: r.job_name == "healthcare_retraining", known, timeout_s=900)
    assert retraining is not None, "no run started"
    assert retraining.status == DagsterRunStatus.SUCCESS, runs.why_failed(retraining)
    assert retraining.tags["pipeline/approved_by"] == "dr-review"
    champion = MlflowClient(stack.mlflow_uri()).get_model_version_by_alias(MODEL_NAME, "champion")
    assert int(champion.version) == 2
    assert clinic.ledger.verify_chain().ok
