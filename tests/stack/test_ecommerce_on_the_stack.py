"""The e-commerce lifecycle on the production stack, submitted and automated as in production.

The baseline and the first lifecycle are submitted through the webserver; the
daemon launches them through the code server. Feedback then lands in the
landing zone and nothing else is asked of the stack: its landing sensor
starts the intake and its automation condition retrains — once after clean
feedback, and not after poisoned feedback whose blocking check failed.
"""

from __future__ import annotations

import time

import httpx
import psycopg
import pytest
from dagster import AssetKey, DagsterRun, DagsterRunStatus
from mlflow.tracking import MlflowClient

from deploy.stack.objectstore import client
from deploy.stack.settings import BUCKETS, HOST, Stack
from domain.ecommerce.release import MODEL_NAME

pytestmark = pytest.mark.slow

TRAINING_SET = AssetKey(["ecommerce", "training_interactions"])
CHAMPION = AssetKey(["ecommerce", "champion_model"])


def _postgres(stack: Stack, role: str, database: str) -> psycopg.Connection:
    return psycopg.connect(stack.postgres_url(role, database).replace("postgresql+psycopg", "postgresql"))


def _retrains(run: DagsterRun) -> bool:
    return TRAINING_SET in (run.asset_selection or set())


def _champion(stack: Stack) -> int | None:
    versions = MlflowClient(stack.mlflow_uri()).get_model_version_by_alias(MODEL_NAME, "champion")
    return int(versions.version)


def test_submitted_runs_succeed_and_live_in_postgres(stack, shop):
    assert [run.status for run in shop.submitted] == [DagsterRunStatus.SUCCESS] * 2
    with _postgres(stack, "dagster", "dagster") as conn:
        stored = {row[0] for row in conn.execute("SELECT pipeline_name FROM runs")}
        events = conn.execute(
            "SELECT count(*) FROM event_logs WHERE run_id = %s", (shop.submitted[1].run_id,)
        ).fetchone()[0]
    assert {"ecommerce_baseline", "ecommerce_lifecycle"} <= stored
    assert events > 100


def test_ledger_is_in_postgres_and_its_chain_verifies(stack, shop):
    report = shop.ledger.verify_chain()
    assert report.ok, report.problems
    with _postgres(stack, "ledger_writer", "ledger") as conn:
        rows = conn.execute("SELECT count(*) FROM ledger_entries").fetchone()[0]
    assert rows == report.entries > 20


@pytest.mark.parametrize(
    "statement", ["UPDATE ledger_entries SET digest = 'x'", "DELETE FROM ledger_entries"]
)
def test_postgres_refuses_history_rewrites_by_the_pipeline_role(stack, shop, statement):
    with (
        _postgres(stack, "ledger_writer", "ledger") as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute(statement)


def test_every_stored_object_is_ciphertext_and_encrypted_server_side(stack, shop):
    s3 = client(stack, "s3")
    known = {p["user_id"] for p in shop.payloads("user-activity", limit=200)}
    known |= {p["item_id"] for p in shop.payloads("user-activity", limit=200)}
    objects = 0
    for bucket in (BUCKETS["store"], BUCKETS["dvc"]):
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for item in page.get("Contents", []):
                got = s3.get_object(Bucket=bucket, Key=item["Key"])
                assert got["ServerSideEncryption"] == "aws:kms", item["Key"]
                body = got["Body"].read()
                leaked = [value for value in known if value.encode() in body]
                assert not leaked, f"{bucket}/{item['Key']} holds plaintext {leaked[:3]}"
                objects += 1
    assert objects > 20


def test_the_model_is_registered_in_the_mlflow_server(stack, shop):
    assert _champion(stack) == 1


def test_spark_steps_ran_on_the_standalone_master(stack, shop):
    master = httpx.get(f"http://{HOST}:{stack.port('spark_ui')}/json/", timeout=5).json()
    finished = [app for app in master["completedapps"] if app["state"] == "FINISHED"]
    assert len(finished) >= 1, master


def test_clean_feedback_starts_intake_and_one_retraining_through_the_daemon(stack, runs, clean_feedback):
    known, intake = clean_feedback
    assert intake is not None, "no run started"
    assert intake.status == DagsterRunStatus.SUCCESS, runs.why_failed(intake)
    retraining = runs.next_run(_retrains, known, timeout_s=900)
    assert retraining is not None, "no run started"
    assert retraining.status == DagsterRunStatus.SUCCESS, runs.why_failed(retraining)
    assert retraining.tags.get("dagster/from_automation_condition") == "true"
    promotion = runs.next_run(lambda r: CHAMPION in (r.asset_selection or set()), known, timeout_s=600)
    assert promotion is not None, "no run started"
    assert promotion.status == DagsterRunStatus.SUCCESS, runs.why_failed(promotion)
    assert _champion(stack) == 2
    assert sum(_retrains(run) for run in runs.launched(known)) == 1


def test_poisoned_feedback_is_stopped_and_never_retrained(stack, shop, runs):
    def push(payload: dict) -> dict:
        if int(payload["event_id"][-2:], 16) % 4 == 0:
            return {**payload, "event_type": "purchase", "item_id": "i000003"}
        return payload

    known = runs.known()
    shop.feedback(cycle=2, transform=push)
    intake = runs.next_run(lambda r: r.job_name == "ecommerce_feedback_intake", known, timeout_s=600)
    assert intake is not None and intake.status == DagsterRunStatus.FAILURE
    assert "no_item_push" in {check for _, check in runs.failed_checks(intake.run_id)}
    # The daemon evaluated the automation conditions three times after the refused intake, and
    # launched no retraining.
    ticks = runs.sensor_ticks("ecommerce", "ecommerce_automation", time.time(), count=3, timeout_s=300)
    assert not [tick for tick in ticks if tick["runIds"]], ticks
    late = [run for run in runs.launched(known) if _retrains(run)]
    assert not late, f"a retraining started anyway: {[runs.why_failed(run) for run in late]}"
    assert _champion(stack) == 2
