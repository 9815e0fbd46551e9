"""`make demo-stack`: both lifecycles on the running production stack (`make stack`).

What a team does on its own deployment, in order:

1. the sources' first windows land, a reviewer approves the transformation
   code and the operator lists the release key as trusted;
2. each example's baseline and lifecycle are submitted through the
   webserver's API; the daemon launches them, Spark runs on the standalone
   master, models are registered in the MLflow server and every artifact is
   written encrypted to the bucket;
3. new e-commerce feedback lands, and the demo only watches: the landing
   sensor starts the intake and the automation condition retrains and
   promotes once every blocking check upstream has passed;
4. new studies land: the landing sensor starts the healthcare intake, a
   reviewer signs an approval for the training set it built (`make
   approve-retraining`), and the approval sensor starts the retraining.
"""

from __future__ import annotations

import argparse
import os
import sys

from dagster import AssetKey, DagsterRun, DagsterRunStatus

from deploy.stack.runs import StackRuns
from deploy.stack.settings import Stack
from examples.ecommerce.shop import MODEL_EVENTS, Shop
from examples.healthcare.clinic import MODEL_STUDIES, Clinic

TRAINING_SET = AssetKey(["ecommerce", "training_interactions"])
CHAMPION = AssetKey(["ecommerce", "champion_model"])


def _outcome(name: str, run: DagsterRun | None) -> bool:
    status = run.status.value if run else "not launched"
    print(f"  {name:<44} {status:<10} {f'(run {run.run_id[:8]})' if run else ''}")
    return run is not None and run.status == DagsterRunStatus.SUCCESS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.stack_demo", description=__doc__)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--events", type=int, default=MODEL_EVENTS)
    parser.add_argument("--studies", type=int, default=MODEL_STUDIES)
    args = parser.parse_args(argv)

    stack = Stack.from_environment()
    os.environ.update(stack.pipeline_environment())
    print(f"Landing the first windows in {stack.pipeline_home}")
    # Each example generates its sources' signed batches; a reviewer approves the transformation
    # code and the operator lists the release key as trusted.
    shop = Shop(stack.pipeline_home, seed=args.seed, events=args.events)
    clinic = Clinic(stack.pipeline_home, seed=args.seed, studies=args.studies)

    runs = StackRuns(stack)
    print("\nSubmitted to the stack (launched by its daemon)")
    ok = all([
        _outcome(job, runs.run(location, job))
        for location, job in [
            ("ecommerce", "ecommerce_baseline"),
            ("ecommerce", "ecommerce_lifecycle"),
            ("healthcare", "healthcare_baseline"),
            ("healthcare", "healthcare_lifecycle"),
        ]
    ])  # fmt: skip

    print("\nNew feedback lands; the stack takes it from there")
    known = runs.known()
    shop.feedback(cycle=1)
    ok &= _outcome(
        "landing sensor → ecommerce_feedback_intake",
        runs.next_run(lambda r: r.job_name == "ecommerce_feedback_intake", known, timeout_s=600),
    )
    ok &= _outcome(
        "automation condition → retraining",
        runs.next_run(lambda r: TRAINING_SET in (r.asset_selection or set()), known, timeout_s=900),
    )
    ok &= _outcome(
        "automation condition → promotion",
        runs.next_run(lambda r: CHAMPION in (r.asset_selection or set()), known, timeout_s=900),
    )

    print("\nNew studies land; a reviewer approves the training set they built")
    known = runs.known()
    clinic.feedback(cycle=1, studies=args.studies // 3)
    intake = _outcome(
        "landing sensor → healthcare_feedback",
        runs.next_run(lambda r: r.job_name == "healthcare_feedback", known, timeout_s=600),
    )
    ok &= intake
    if intake:  # a reviewer approves only a training set the intake built with every check passed
        clinic.approve_retraining(reviewer="demo-reviewer")
        ok &= _outcome(
            "approval sensor → healthcare_retraining",
            runs.next_run(lambda r: r.job_name == "healthcare_retraining", known, timeout_s=900),
        )
    print(f"\nThe UI: https://127.0.0.1:{stack.port('proxy')}/  (stop everything: make stack-down)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
