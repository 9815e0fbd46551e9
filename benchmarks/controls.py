"""Cost of the controls: both lifecycles with every control, and with the separable ones off.

    make bench                                   # the lab's worlds: 30,000 events, 900 studies
    CONTROLS_EXAMPLES=ecommerce python -m benchmarks.controls   # one example (CONTROLS_EVENTS, _STUDIES)

For each example, fresh instances of the same generated world (same seed
and size) run the baseline job and then the lifecycle job, in turn, in this
process, `CONTROLS_REPEATS` times (default 2; each step counts at its fastest,
so one-off warm-up costs count against neither):
- controls on: the pipeline as `make demo` runs it;
- controls off: every asset check left out, the store writing and reading
  plaintext, and no DVC version kept of each table.
Each step's own duration comes from Dagster's event log and is summed per
stage (the asset's group; a check step counts toward its asset's stage);
the ratio per stage and in total is on / off.

What stays on in both, because the assets compute with it: source
authentication, rate limits and quarantine at intake, the provenance ledger
and the digests every load is verified against, code approval and release
signing. The ratio is therefore a lower bound of what every control costs.
"""

from __future__ import annotations

import os
import tempfile
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dagster import AssetKey, DagsterEventType

from benchmarks.report import write_section
from examples.ecommerce.shop import MODEL_EVENTS, Shop
from examples.healthcare.clinic import MODEL_STUDIES, Clinic
from examples.runs import PipelineInstance
from pipelines import ecommerce, healthcare
from resources.io_managers import JsonIOManager, ModelDirIOManager, ParquetIOManager
from resources.runtime import RuntimeHome
from resources.store import ArtifactStore, StoredArtifact

SWITCHED_OFF = ["asset checks", "encryption at rest", "DVC versions of tables"]
TOP_CHECKS = 5
BUILDERS = {"ecommerce": ecommerce, "healthcare": healthcare}
ON_IN_BOTH = [
    "source authentication, rate limits and quarantine",
    "provenance ledger and verified loads",
    "code approval",
    "release signing",
]


class UnversionedParquetIOManager(ParquetIOManager):
    """Tables in the store without a DVC version of each."""

    def _extra_details(self, context, artifact: StoredArtifact) -> dict[str, Any]:
        return {}


def plain_resources(instance: PipelineInstance) -> dict[str, Any]:
    """The instance's resources with a plaintext store and IO managers that keep no DVC versions."""
    resources = instance.defs.resources
    store: ArtifactStore = resources["store"]
    plain = ArtifactStore(key_provider=store.key_provider, root=store.root, encrypt=False)
    ledger, scratch = resources["ledger"], resources["scratch"]
    return {
        "store": plain,
        "io_manager": UnversionedParquetIOManager(
            store=plain, ledger=ledger, scratch=scratch, versioning=resources["versioning"]
        ),
        "json_io_manager": JsonIOManager(store=plain, ledger=ledger),
        "model_io_manager": ModelDirIOManager(store=plain, ledger=ledger, scratch=scratch),
    }


def every_check(instance: PipelineInstance) -> set[str]:
    """Every check of the instance's definitions, named as `PipelineInstance.switched_off` takes them."""
    graph = instance.defs.resolve_asset_graph()
    return {f"{key.asset_key.path[-1]}:{key.name}" for key in graph.asset_check_keys}


def step_seconds(instance: PipelineInstance) -> dict[str, tuple[str, float]]:
    """Each step of the instance's runs: its stage (the asset group of what it materialised or checked)
    and its own duration in seconds."""
    graph = instance.defs.resolve_asset_graph()
    steps: dict[str, tuple[str, float]] = {}
    for result in instance.runs:
        stage_of_step: dict[str, str] = {}
        for event in result.all_events:
            key: AssetKey | None = None
            if event.event_type == DagsterEventType.ASSET_MATERIALIZATION:
                key = event.asset_key
            elif event.event_type == DagsterEventType.ASSET_CHECK_EVALUATION:
                key = event.event_specific_data.asset_key
            if key is not None:
                stage_of_step.setdefault(event.step_key, graph.get(key).group_name or "other")
        for event in result.all_events:
            if event.event_type == DagsterEventType.STEP_SUCCESS:
                stage = stage_of_step.get(event.step_key, "other")
                steps[event.step_key] = (stage, event.event_specific_data.duration_ms / 1000)
    return steps


def run_lifecycle(instance: PipelineInstance) -> dict[str, tuple[str, float]]:
    """The baseline and lifecycle jobs on a warm Spark session; every step's stage and seconds."""
    instance.defs.resources["spark"].session()  # the JVM starts before, not inside, the first run
    result = instance.lifecycle()
    if not result.success:
        failed = [e.step_key for e in result.all_events if e.event_type == DagsterEventType.STEP_FAILURE]
        raise RuntimeError(
            f"The {instance.example} lifecycle failed ({', '.join(failed) or 'a check stopped it'}): the "
            "comparison needs both runs complete. Use a world large enough for the model's minimums "
            "(the defaults)."
        )
    return step_seconds(instance)


def per_stage(steps: dict[str, tuple[str, float]]) -> dict[str, float]:
    seconds: dict[str, float] = defaultdict(float)
    for stage, duration in steps.values():
        seconds[stage] += duration
    return seconds


def fastest(runs: list[dict[str, tuple[str, float]]]) -> dict[str, tuple[str, float]]:
    """Each step's stage and its shortest duration over repeated runs (the best of n)."""
    best: dict[str, tuple[str, float]] = {}
    for steps in runs:
        for step, (stage, seconds) in steps.items():
            if step not in best or seconds < best[step][1]:
                best[step] = (stage, seconds)
    return best


def without_controls(instance: PipelineInstance) -> PipelineInstance:
    """The instance rebuilt with every check left out, a plaintext store and no DVC versions."""
    instance.switched_off = every_check(instance)
    resources = {**instance.defs.resources, **plain_resources(instance)}
    instance.defs = BUILDERS[instance.example].build_definitions(
        RuntimeHome(instance.home), instance.trust, **resources
    )
    return instance


def measure_example(
    make: Callable[[Path], PipelineInstance], folder: Path, repeats: int = 2
) -> dict[str, Any]:
    """`make(home)` builds a fresh instance: one runs with every control, another with the separable
    ones off, `repeats` times in turn, and each step counts at its fastest. With one repeat the
    controlled run goes first, so whatever is still cold (imports, the first model trained in the
    process, MLflow's database) counts against the controls; with two or more it counts against neither.
    """
    on_runs, off_runs = [], []
    for repeat in range(repeats):
        on_runs.append(run_lifecycle(make(folder / f"on-{repeat}")))
        off_runs.append(run_lifecycle(without_controls(make(folder / f"off-{repeat}"))))
    on_steps, off_steps = fastest(on_runs), fastest(off_runs)
    on, off = per_stage(on_steps), per_stage(off_steps)
    # The steps only the controlled run has are its separate check steps; the rest of the difference
    # is inside the asset steps (encryption, DVC versions, checks run in the step).
    check_steps = {s: st for s, st in on_steps.items() if s not in off_steps}
    in_checks = per_stage(check_steps)
    checks = sorted(((s, t) for s, (_, t) in check_steps.items()), key=lambda st: -st[1])
    return {
        "on_s": round(sum(on.values()), 2),
        "off_s": round(sum(off.values()), 2),
        "per_stage": {
            stage: {
                "on_s": round(on.get(stage, 0.0), 2),
                "off_s": round(off.get(stage, 0.0), 2),
                "check_steps_s": round(in_checks.get(stage, 0.0), 2),
            }
            for stage in sorted(set(on) | set(off))
        },
        "costliest_check_steps_s": {step: round(seconds, 2) for step, seconds in checks[:TOP_CHECKS]},
        "repeats": repeats,
    }


def _ratio(on: float, off: float) -> float | None:
    return round(on / off, 3) if off > 0 else None


def summarise(examples: dict[str, dict]) -> dict[str, Any]:
    per_stage: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for example in examples.values():
        for stage, times in example["per_stage"].items():
            per_stage[stage][0] += times["on_s"]
            per_stage[stage][1] += times["off_s"]
    on = sum(e["on_s"] for e in examples.values())
    off = sum(e["off_s"] for e in examples.values())
    for example in examples.values():
        example["ratio"] = _ratio(example["on_s"], example["off_s"])
        for times in example["per_stage"].values():
            times["ratio"] = _ratio(times["on_s"], times["off_s"])
    return {
        "total": _ratio(on, off),
        "per_stage": {stage: _ratio(*times) for stage, times in sorted(per_stage.items())},
        "repeats": max(example["repeats"] for example in examples.values()),
        "switched_off": SWITCHED_OFF,
        "on_in_both": ON_IN_BOTH,
        "examples": examples,
    }


def _row(example: str, stage: str, on: float, in_checks: float, off: float, ratio: float | None) -> str:
    shown = f"{ratio:.2f}x" if ratio else "-"
    return f"{example:<12} {stage:<12} {on:>8.1f} {in_checks:>10.1f} {off:>8.1f} {shown:>7}"


def print_table(summary: dict[str, Any]) -> None:
    print(
        "cost of the controls: step time with every control / with checks, encryption and DVC off "
        f"(each step at its fastest of {summary['repeats']} runs)"
    )
    print(f"{'example':<12} {'stage':<12} {'on s':>8} {'in checks':>10} {'off s':>8} {'ratio':>7}")
    for name, example in summary["examples"].items():
        for stage, t in example["per_stage"].items():
            print(_row(name, stage, t["on_s"], t["check_steps_s"], t["off_s"], t["ratio"]))
        in_checks = sum(t["check_steps_s"] for t in example["per_stage"].values())
        print(_row(name, "all", example["on_s"], in_checks, example["off_s"], example["ratio"]))
    for name, example in summary["examples"].items():
        costliest = ", ".join(f"{step} {t:.1f} s" for step, t in example["costliest_check_steps_s"].items())
        print(f"{name} costliest check steps: {costliest}")
    print(f"total: {summary['total']:.2f}x (a lower bound: {', '.join(ON_IN_BOTH)} stay on in both)")


def main() -> dict[str, Any]:
    events = int(os.environ.get("CONTROLS_EVENTS", MODEL_EVENTS))
    studies = int(os.environ.get("CONTROLS_STUDIES", MODEL_STUDIES))
    repeats = int(os.environ.get("CONTROLS_REPEATS", "2"))
    if repeats < 1:
        raise SystemExit(f"CONTROLS_REPEATS is {repeats}; it counts runs of each kind, so use 1 or more.")
    makers: dict[str, Callable[[Path], PipelineInstance]] = {
        "ecommerce": lambda home: Shop(home, events=events),
        "healthcare": lambda home: Clinic(home, studies=studies),
    }
    chosen = os.environ.get("CONTROLS_EXAMPLES", ",".join(makers)).split(",")
    if unknown := set(chosen) - set(makers):
        raise SystemExit(f"CONTROLS_EXAMPLES names {sorted(unknown)}; choose from {', '.join(makers)}.")
    with tempfile.TemporaryDirectory(prefix="bench-controls-") as folder:
        examples = {name: measure_example(makers[name], Path(folder) / name, repeats) for name in chosen}
    summary = summarise(examples)
    print_table(summary)
    write_section("controls_overhead", summary)
    return summary


if __name__ == "__main__":
    main()
