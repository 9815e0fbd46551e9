"""`make scorecard` and `make attack SCENARIO=<name>`: run the attack lab through Dagster.

    python -m examples.attacks scorecard             every scenario of both examples, clean runs
    python -m examples.attacks attack <name> ...     the named scenarios only (no clean runs)
    ... --no-harm                                    skip mounting each attack again with its
                                                     catching checks off to measure its harm
    python -m examples.attacks list                  the scenarios' names

Each example's `security_scorecard` asset is materialised in the Dagster
instance under `$DAGSTER_HOME` (so `make ui` shows its table and checks);
the merged scorecard is printed, and the full one written to `reports/scorecard.json`.
The exit status is 1 when an attack was missed or a check failed on clean data.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Collection

from dagster import DagsterInstance, ExecuteInProcessResult

from examples.attacks.definitions import EXAMPLES, build_definitions
from examples.attacks.scorecard import CLEAN_SEEDS, SIZES, markdown, merge, summary
from examples.progress import followed
from resources.atomic import atomic_write_bytes
from resources.runtime import REPO_ROOT, RuntimeHome
from resources.trust_store import TrustStore

REPORT = REPO_ROOT / "reports" / "scorecard.json"
QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}


def all_scenarios() -> dict[str, list[str]]:
    from examples.ecommerce.attacks import SCENARIOS as ECOMMERCE
    from examples.healthcare.attacks import SCENARIOS as HEALTHCARE

    return {"ecommerce": [s.name for s in ECOMMERCE], "healthcare": [s.name for s in HEALTHCARE]}


def run_attack_lab(
    example: str, instance: DagsterInstance, home: RuntimeHome, trust: TrustStore, **config
) -> ExecuteInProcessResult:
    """Materialise `example`'s scorecard asset over `home` with this configuration (see `AttackLabConfig`)."""
    run_config = {**QUIET, "ops": {f"{example}__security_scorecard": {"config": config}}}
    job = build_definitions(home, trust).resolve_job_def(f"{example}_attack_lab")
    with followed(instance, job.name) as run_id:
        return job.execute_in_process(
            instance=instance, raise_on_error=False, run_config=run_config, run_id=run_id
        )


def materialise_scorecard(
    example: str,
    instance: DagsterInstance,
    home: RuntimeHome,
    trust: TrustStore,
    *,
    scenarios: Collection[str] = (),
    seeds: Collection[int] = (),
    size: str = "lab",
    measure_harm: bool = True,
) -> dict:
    """Materialise `example`'s scorecard for `scenarios` (all when empty), `seeds` and `size`; returns it."""
    result = run_attack_lab(
        example, instance, home, trust, scenarios=list(scenarios), clean_seeds=list(seeds), size=size,
        measure_harm=measure_harm,
    )  # fmt: skip
    if not result.get_asset_materialization_events():
        failure = next((e for e in result.all_events if e.is_step_failure), None)
        reason = failure.event_specific_data.error.message if failure else "no scorecard was produced"
        raise SystemExit(f"The {example} attack lab failed: {reason}")
    return result.output_for_node(f"{example}__security_scorecard")


def report(cards: list[dict], *, write: bool) -> int:
    """Print the merged scorecard (and write it to `reports/scorecard.json`); 1 if anything was missed."""
    card = merge(cards)
    print(markdown(card))
    print(f"\n{summary(card)}")
    if write:
        atomic_write_bytes(REPORT, json.dumps(card, indent=2).encode(), mode=0o644)
        print(f"Written to {REPORT.relative_to(REPO_ROOT)}")
    missed = [a for a in card["attacks"] if not a["detected"]]
    return 1 if missed or card["clean_runs"]["failed_checks"] else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.attacks", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    full = commands.add_parser("scorecard", help="every scenario of both examples and the clean runs")
    full.add_argument("--seeds", type=int, default=len(CLEAN_SEEDS), help="clean runs per example")
    full.add_argument("--size", choices=sorted(SIZES), default="lab", help="world size (large: 3x the lab's)")
    one = commands.add_parser("attack", help="run the named scenarios")
    one.add_argument("names", nargs="+", metavar="SCENARIO")
    for command in (full, one):
        command.add_argument("--no-harm", action="store_true", help="skip measuring harm with controls off")
    commands.add_parser("list", help="list the scenarios")
    args = parser.parse_args(argv)

    known = all_scenarios()
    home, trust = RuntimeHome.from_environment(), TrustStore.from_environment()
    if args.command == "list":
        print("\n".join(name for names in known.values() for name in names))
        return 0
    if args.command == "scorecard":
        seeds = list(range(1, args.seeds + 1))
        cards = [
            materialise_scorecard(
                ex,
                DagsterInstance.get(),
                home,
                trust,
                seeds=seeds,
                size=args.size,
                measure_harm=not args.no_harm,
            )  # fmt: skip
            for ex in EXAMPLES
        ]
        return report(cards, write=True)
    unknown = [n for n in args.names if not any(n in names for names in known.values())]
    if unknown:
        every = "\n  ".join(name for names in known.values() for name in names)
        print(f"No scenario named {', '.join(unknown)}. The scenarios are:\n  {every}", file=sys.stderr)
        return 2
    instance = DagsterInstance.get()
    cards = [
        materialise_scorecard(
            example,
            instance,
            home,
            trust,
            scenarios=[n for n in args.names if n in names],
            measure_harm=not args.no_harm,
        )  # fmt: skip
        for example, names in known.items()
        if set(args.names) & set(names)
    ]
    return report(cards, write=False)


if __name__ == "__main__":
    sys.exit(main())
