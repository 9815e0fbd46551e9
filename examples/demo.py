"""`make demo`: run the e-commerce lifecycle end to end and print what happened.

1. the trusted baseline from the reviewed reference window;
2. collection → processing → training → signed promotion of a champion;
3. a week of feedback lands; it is validated and the model retrained;
4. the integrity and retraining audits;
5. the model server starts on loopback and answers `/recommend`.

Runs land in the Dagster instance under `$DAGSTER_HOME`, so `make ui`
afterwards shows them, with every check's evidence.
"""

import os
import socket
import subprocess
import sys
import time

import httpx
from dagster import AssetKey, DagsterInstance, Definitions

from assets.ecommerce.collection import ACTIVITY_KEY, REVIEWS_KEY
from assets.ecommerce.deployment import CHAMPION_KEY
from assets.ecommerce.modeling import MODEL_KEY
from examples.ecommerce.generate import generate_feedback
from pipelines import ecommerce
from resources.runtime import REPO_ROOT, runtime_home

QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}


def _metadata(instance: DagsterInstance, key: AssetKey) -> dict:
    event = instance.get_latest_materialization_event(key)
    if event is None or event.asset_materialization is None:
        return {}
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def run_job(defs: Definitions, name: str, instance: DagsterInstance) -> tuple[bool, list]:
    """Run one job; print its outcome; return whether it succeeded and its check evaluations."""
    started = time.perf_counter()
    result = defs.resolve_job_def(name).execute_in_process(
        instance=instance, raise_on_error=False, run_config=QUIET
    )
    status = "succeeded" if result.success else "FAILED"
    print(f"  {name:<24} {status} in {time.perf_counter() - started:5.0f} s (run {result.run_id[:8]})")
    return result.success, result.get_asset_check_evaluations()


def serve_and_ask(user_id: str) -> dict:
    """Start the recommender server on a free loopback port, ask it once, stop it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "serving.ecommerce:create_recommender_app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        cwd=REPO_ROOT,
        env=os.environ.copy(),
    )
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(120):
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(1)
        health = httpx.get(f"{base}/healthz", timeout=5).json()
        answer = httpx.get(f"{base}/recommend", params={"user_id": user_id, "k": 5}, timeout=10).json()
        return {"health": health, "answer": answer}
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> int:
    instance = DagsterInstance.get()
    defs = ecommerce.build_definitions()
    events = int(os.environ.get("EVENTS", "1000000"))
    print("E-commerce lifecycle")
    outcomes = [run_job(defs, "ecommerce_baseline", instance), run_job(defs, "ecommerce_lifecycle", instance)]
    generate_feedback(int(os.environ.get("SEED", "7")), events, runtime_home(), cycle=1)
    outcomes += [run_job(defs, "ecommerce_retraining", instance), run_job(defs, "ecommerce_audit", instance)]
    evaluations = [e for _, job_evaluations in outcomes for e in job_evaluations]

    print("\nCollection")
    for key in (ACTIVITY_KEY, REVIEWS_KEY):
        meta = _metadata(instance, key)
        print(
            f"  {key.path[-1]:<16} received {meta.get('received', 0):>9,}  "
            f"accepted {meta.get('accepted', 0):>9,}  quarantined {meta.get('quarantined', 0):>6,}"
        )
    model = _metadata(instance, MODEL_KEY)
    print("\nRecommender on held-out interactions   recall@10   NDCG@10")
    for who in ("model", "popularity"):
        print(f"  {who:<36} {model.get(f'{who}_recall@10', 0):9.3f} {model.get(f'{who}_ndcg@10', 0):9.3f}")
    champion = _metadata(instance, CHAMPION_KEY)
    print(
        f"\nChampion: v{champion.get('release_version')} signed by {champion.get('signer')}, "
        f"MLflow model version {champion.get('mlflow_model_version')}"
    )

    failed = [e for e in evaluations if not e.passed]
    print(f"\nChecks: {len(evaluations) - len(failed)} passed, {len(failed)} failed")
    for e in failed:
        print(f"  FAILED {e.asset_key.to_user_string()}:{e.check_name} ({e.severity.value})")

    if champion:
        served = serve_and_ask("u0000001")
        items = [i["item_id"] for i in served["answer"].get("items", [])]
        print(
            f"\nServer: model v{served['health'].get('version')} loaded and verified; "
            f"/recommend?user_id=u0000001 → {items}"
        )
    return 0 if all(ok for ok, _ in outcomes) and not failed and champion else 1


if __name__ == "__main__":
    sys.exit(main())
