"""`make demo`: run both lifecycles end to end and print what happened.

For each example:

1. the trusted baseline from the reviewed reference window;
2. collection → processing → training → signed promotion of a champion;
3. new data lands (e-commerce feedback, new studies); it is validated and
   the model retrained (the diagnostic model only after a reviewer signs an
   approval for the exact training set; the demo shows the refusal first);
4. the integrity and retraining audits;
5. the model server starts on loopback and answers `/recommend` or `/diagnose`.

It ends with a short security scorecard: a few attacks of the catalogue,
each mounted on a fresh pipeline of its own, and the control that stopped it.

Runs land in the Dagster instance under `$DAGSTER_HOME`, so `make ui`
afterwards shows them, with every check's evidence.
"""

import base64
import os
import sys
import time
from collections.abc import Callable

import httpx
from dagster import AssetKey, DagsterInstance, Definitions

from assets.ecommerce.collection import ACTIVITY_KEY, REVIEWS_KEY
from assets.ecommerce.deployment import CHAMPION_KEY
from assets.ecommerce.modeling import MODEL_KEY
from assets.healthcare.collection import NOTES_KEY, STUDIES_KEY
from assets.healthcare.deployment import CHAMPION_KEY as HEALTHCARE_CHAMPION_KEY
from assets.healthcare.modeling import MODEL_KEY as HEALTHCARE_MODEL_KEY
from examples.attacks.__main__ import materialise_scorecard
from examples.attacks.scorecard import markdown, merge, summary
from examples.ecommerce.generate import generate_feedback
from examples.healthcare.generate import generate_feedback as generate_healthcare_feedback
from examples.healthcare.studies.dicom import dicom_bytes
from examples.healthcare.studies.model import CohortConfig
from examples.healthcare.studies.plan import plan_studies
from examples.loopback_server import served_on_loopback
from examples.progress import followed
from pipelines import ecommerce, healthcare
from pipelines.approve_code import reviewer_key
from pipelines.approve_retraining import approve
from resources.runtime import RuntimeHome
from resources.trust_store import TrustStore
from serving.settings import demo_api_key

SHORT_LAB = {
    "ecommerce": [
        "ecommerce/data-poisoning",
        "ecommerce/storage-tampering",
        "ecommerce/processing-manipulation",
    ],
    "healthcare": ["healthcare/label-flipping", "healthcare/processing-manipulation"],
}
QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
SILENT = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}  # a refusal we expect


def _metadata(instance: DagsterInstance, key: AssetKey) -> dict:
    event = instance.get_latest_materialization_event(key)
    if event is None or event.asset_materialization is None:
        return {}
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def run_job(
    defs: Definitions, name: str, instance: DagsterInstance, *, expect_refusal: bool = False
) -> tuple[bool, list]:
    """Run one job; print its outcome; return whether it succeeded and its check evaluations."""
    started = time.perf_counter()
    with followed(instance, name) as run_id:
        result = defs.resolve_job_def(name).execute_in_process(
            instance=instance,
            raise_on_error=False,
            run_config=SILENT if expect_refusal else QUIET,
            run_id=run_id,
        )
    status = "succeeded" if result.success else ("refused" if expect_refusal else "FAILED")
    print(f"  {name:<24} {status} in {time.perf_counter() - started:5.0f} s (run {result.run_id[:8]})")
    return result.success, result.get_asset_check_evaluations()


def serve_and_ask(factory: str, ask: Callable[[str, dict[str, str]], httpx.Response]) -> dict:
    """Start a model server (`module:factory`) on a free loopback port, `ask(base_url, headers)` once.

    The headers carry the demo client's API key, created under `$PIPELINE_HOME/serving/` if needed.
    """
    auth = {"Authorization": f"Bearer {demo_api_key(RuntimeHome.from_environment()).read_text()}"}
    with served_on_loopback(factory) as base:
        health = httpx.get(f"{base}/healthz", timeout=5).json()
        return {"health": health, "answer": ask(base, auth).json()}


def report_checks(evaluations: list) -> list:
    failed = [e for e in evaluations if not e.passed]
    print(f"\nChecks: {len(evaluations) - len(failed)} passed, {len(failed)} failed")
    for e in failed:
        print(f"  FAILED {e.asset_key.to_user_string()}:{e.check_name} ({e.severity.value})")
    return failed


def print_collection(instance: DagsterInstance, keys: tuple[AssetKey, ...]) -> None:
    print("\nCollection")
    for key in keys:
        meta = _metadata(instance, key)
        print(
            f"  {key.path[-1]:<16} received {meta.get('received', 0):>9,}  "
            f"accepted {meta.get('accepted', 0):>9,}  quarantined {meta.get('quarantined', 0):>6,}  "
            f"{meta.get('quarantine_reasons') or ''}"
        )


def print_champion(instance: DagsterInstance, key: AssetKey) -> dict:
    """Print the champion's release and signer; returns its metadata (empty when none was promoted)."""
    champion = _metadata(instance, key)
    print(
        f"\nChampion: v{champion.get('release_version')} signed by {champion.get('signer')}, "
        f"MLflow model version {champion.get('mlflow_model_version')}"
    )
    return champion


def ecommerce_demo(instance: DagsterInstance, home: RuntimeHome, trust: TrustStore, seed: int) -> bool:
    defs = ecommerce.build_definitions(home, trust)
    events = int(os.environ.get("EVENTS", "1000000"))
    print("E-commerce lifecycle")
    outcomes = [run_job(defs, "ecommerce_baseline", instance), run_job(defs, "ecommerce_lifecycle", instance)]
    generate_feedback(seed, events, home.root, cycle=1)
    outcomes += [run_job(defs, "ecommerce_retraining", instance), run_job(defs, "ecommerce_audit", instance)]

    print_collection(instance, (ACTIVITY_KEY, REVIEWS_KEY))
    model = _metadata(instance, MODEL_KEY)
    print("\nRecommender on held-out interactions   recall@10   NDCG@10")
    for who in ("model", "popularity"):
        print(f"  {who:<36} {model.get(f'{who}_recall@10', 0):9.3f} {model.get(f'{who}_ndcg@10', 0):9.3f}")
    champion = print_champion(instance, CHAMPION_KEY)
    failed = report_checks([e for _, job_evaluations in outcomes for e in job_evaluations])
    if champion:
        served = serve_and_ask(
            "serving.ecommerce:create_recommender_app",
            lambda base, auth: httpx.get(
                f"{base}/recommend", params={"user_id": "u0000001", "k": 5}, headers=auth, timeout=10
            ),
        )
        items = [i["item_id"] for i in served["answer"].get("items", [])]
        print(
            f"\nServer: model v{served['health'].get('version')} loaded and verified; "
            f"/recommend?user_id=u0000001 → {items}"
        )
    return all(ok for ok, _ in outcomes) and not failed and bool(champion)


def _print_diagnostic(title: str, meta: dict) -> None:
    print(
        f"  {title:<28} AUC {meta.get('auc', 0):.3f}  sensitivity {meta.get('sensitivity', 0):.3f}  "
        f"specificity {meta.get('specificity', 0):.3f}  ({meta.get('test_studies', 0)} held-out studies)"
    )


def healthcare_demo(instance: DagsterInstance, home: RuntimeHome, trust: TrustStore, seed: int) -> bool:
    defs = healthcare.build_definitions(home, trust)
    studies = int(os.environ.get("STUDIES", "3000"))
    print("\nHealthcare lifecycle")
    outcomes = [run_job(defs, job, instance) for job in ("healthcare_baseline", "healthcare_lifecycle")]
    first = _metadata(instance, HEALTHCARE_MODEL_KEY)
    generate_healthcare_feedback(seed, studies // 3, home.root, cycle=1)
    outcomes.append(run_job(defs, "healthcare_feedback", instance))
    went_ahead, _ = run_job(defs, "healthcare_retraining", instance, expect_refusal=True)
    if not went_ahead:
        print("  (as it must be: no reviewer has approved this training set yet)")
    approve(
        defs.resources["ledger"], defs.resources["retraining_approvals"], "demo-reviewer",
        reviewer_key("retraining", trust),
    )  # fmt: skip
    outcomes += [run_job(defs, job, instance) for job in ("healthcare_retraining", "healthcare_audit")]

    print_collection(instance, (STUDIES_KEY, NOTES_KEY))
    print("\nDiagnostic CNN on held-out patients")
    _print_diagnostic("first model", first)
    _print_diagnostic("after approved retraining", _metadata(instance, HEALTHCARE_MODEL_KEY))
    champion = print_champion(instance, HEALTHCARE_CHAMPION_KEY)
    failed = report_checks([e for _, job_evaluations in outcomes for e in job_evaluations])
    if champion:
        study = plan_studies(CohortConfig(seed=seed + 1, studies=4), 3)[0]
        payload = {"dicom": base64.b64encode(dicom_bytes(study)).decode()}
        served = serve_and_ask(
            "serving.healthcare:create_diagnostic_app",
            lambda base, auth: httpx.post(f"{base}/diagnose", json=payload, headers=auth, timeout=30),
        )
        print(
            f"\nServer: model v{served['health'].get('version')} loaded and verified; /diagnose on a new "
            f"{study.modality} study (truth: {'lesion' if study.truth else 'no lesion'}) → {served['answer']}"
        )
    return not went_ahead and all(ok for ok, _ in outcomes) and not failed and bool(champion)


def short_scorecard(instance: DagsterInstance, home: RuntimeHome, trust: TrustStore) -> bool:
    """A few attacks of the catalogue, each on a fresh pipeline, and the control that stopped each.

    What each attack would have done with its controls off is left to `make scorecard`: mounting
    them again and training on the poison took most of the demo's time.
    """
    count = sum(len(names) for names in SHORT_LAB.values())
    print(
        f"\nSecurity scorecard (short: {count} attacks stopped before training; `make scorecard` runs all "
        "and measures the harm each would have done)"
    )
    card = merge(
        [
            materialise_scorecard(example, instance, home, trust, scenarios=names, measure_harm=False)
            for example, names in SHORT_LAB.items()
        ]
    )
    print(markdown(card))
    print(summary(card))
    return all(a["detected"] for a in card["attacks"])


def main() -> int:
    instance, home, trust = (
        DagsterInstance.get(),
        RuntimeHome.from_environment(),
        TrustStore.from_environment(),
    )
    seed = int(os.environ.get("SEED", "7"))
    results = [
        ecommerce_demo(instance, home, trust, seed),
        healthcare_demo(instance, home, trust, seed),
        short_scorecard(instance, home, trust),
    ]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
