"""`make demo`: run the e-commerce lifecycle end to end and print what happened.

Runs land in the Dagster instance under `$DAGSTER_HOME`, so `make ui`
afterwards shows them, with every check's evidence.
"""

import sys

from dagster import AssetKey, DagsterInstance, Definitions

from assets.ecommerce.collection import ACTIVITY_KEY, REVIEWS_KEY
from pipelines import ecommerce

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def _metadata(instance: DagsterInstance, key: AssetKey) -> dict:
    event = instance.get_latest_materialization_event(key)
    if event is None or event.asset_materialization is None:
        return {}
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def run_jobs(defs: Definitions, jobs: list[str], instance: DagsterInstance) -> tuple[list, int]:
    """Run jobs in order; return every check evaluation and the number of assets written."""
    evaluations, written = [], 0
    for name in jobs:
        result = defs.resolve_job_def(name).execute_in_process(
            instance=instance, raise_on_error=False, run_config=QUIET
        )
        evaluations += result.get_asset_check_evaluations()
        written += len(result.get_asset_materialization_events())
        status = "succeeded" if result.success else "FAILED"
        print(f"  {name}: {status} (run {result.run_id[:8]})")
    return evaluations, written


def print_summary(instance: DagsterInstance, evaluations: list, written: int) -> bool:
    print("\nCollection")
    for key in (ACTIVITY_KEY, REVIEWS_KEY):
        meta = _metadata(instance, key)
        print(
            f"  {key.path[-1]:<16} received {meta.get('received', 0):>9,}  "
            f"accepted {meta.get('accepted', 0):>9,}  quarantined {meta.get('quarantined', 0):>6,}"
        )
    failed = [e for e in evaluations if not e.passed]
    print(f"\nArtifacts written: {written}")
    print(f"Checks: {len(evaluations) - len(failed)} passed, {len(failed)} failed")
    for e in failed:
        print(f"  FAILED {e.asset_key.to_user_string()}:{e.check_name} ({e.severity.value})")
    return not failed


def main() -> int:
    instance = DagsterInstance.get()
    print("E-commerce lifecycle")
    evaluations, written = run_jobs(
        ecommerce.build_definitions(),
        ["ecommerce_baseline", "ecommerce_lifecycle", "ecommerce_integrity_audit"],
        instance,
    )
    return 0 if print_summary(instance, evaluations, written) else 1


if __name__ == "__main__":
    sys.exit(main())
