"""The attack lab: mount one attack on a fresh pipeline instance and read what stopped it.

A scenario prepares the clean history its attack needs (a baseline, a
released model), then mounts the attack the way an attacker's change would
arrive and runs the example's Dagster jobs over it. What the runs did is
then read from their events: the first blocking check that failed, or the
first step a security control refused, is the control that caught the
attack; everything materialised by the attack's runs before that is how far
the attack got. Nothing here decides the answer: with the control switched
off, the same scenario reports the attack as missed.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path

from dagster import AssetCheckSeverity, AssetKey, ExecuteInProcessResult

from examples.attacks.harm import HarmProbe
from examples.runs import PipelineInstance, operator_key_file, reviewers_folder, trust_folder

CHECK_FAILED = "DagsterAssetCheckFailedError"  # how Dagster fails the step of a failed blocking check
# Exceptions by which a control refuses a step (anything else failing a step is an error, not a catch).
REFUSALS = {
    "IntegrityError",
    "SignatureError",
    "CodeNotApproved",
    "RetrainingNotApproved",
    "StoreAccessError",
    "PickledArtifactError",
    "VersionIntegrityError",
    "ModelRefused",
}


@dataclass(frozen=True)
class Scenario:
    """One attack of the catalogue (docs/threat-model.md) in one example's form."""

    name: str  # "<example>/<attack>", what `make attack SCENARIO=` takes
    attack: str  # the catalogue row
    summary: str  # what the attacker does, in one line
    mount: Callable[[PipelineInstance], None]  # mount the attack and run the jobs that meet it
    prepare: Callable[[PipelineInstance], None] = PipelineInstance.baseline  # clean history, not scored
    harm: HarmProbe | None = None

    @property
    def example(self) -> str:
        return self.name.split("/")[0]


@dataclass
class Outcome:
    """What the attack's runs did, read from their events."""

    scenario: str
    attack: str
    example: str
    detected: bool
    stage: str | None
    check: str | None
    materialised_before_stop: list[str]
    seconds: float
    controls_failed: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    harm: dict | None = None  # what the attack achieved with its catching checks switched off
    outcome: str = ""  # detected, missed-harmful, missed-harmless, or missed (harm not measured)

    def judge(self) -> None:
        """Set `outcome` from `detected` and `harm`."""
        if self.detected:
            self.outcome = "detected"
        elif self.harm is None or "value" not in self.harm:
            self.outcome = "missed"
        else:
            self.outcome = "missed-harmful" if self.harm["harmful"] else "missed-harmless"


def fresh_home(home: Path) -> Path:
    """`home`, emptied, with its trust store, operator key and reviewers' keys: each scenario and
    clean run starts from nothing (a trust store left from an earlier run would remember its
    sources' batches and refuse the new run's as replays)."""
    shutil.rmtree(home, ignore_errors=True)
    shutil.rmtree(trust_folder(home), ignore_errors=True)
    operator_key_file(home).unlink(missing_ok=True)
    shutil.rmtree(reviewers_folder(home), ignore_errors=True)
    home.mkdir(mode=0o700, parents=True)
    return home


def _error_classes(error) -> list[str]:
    names = []
    while error is not None:
        names.append(error.cls_name)
        error = error.cause
    return names


def _first_line(error) -> str:
    while error.cause is not None and error.cls_name not in REFUSALS:
        error = error.cause
    return error.message.strip().splitlines()[0][:160]


def read_runs(
    instance: PipelineInstance, runs: list[ExecuteInProcessResult], seconds: float, scenario: Scenario
) -> Outcome:
    """The outcome of `scenario` from the events of the runs its attack made."""
    graph = instance.defs.resolve_asset_graph()
    stage, check, reached = None, None, []
    failed, errors = [], []
    for result in runs:
        for event in result.all_events:
            if event.is_step_materialization:
                name = event.asset_key.path[-1]
                if check is None and name not in reached:
                    reached.append(name)
            elif event.event_type_value == "ASSET_CHECK_EVALUATION":
                evaluation = event.event_specific_data
                if evaluation.passed or evaluation.severity != AssetCheckSeverity.ERROR:
                    continue
                key = evaluation.asset_key
                failed.append(f"{key.path[-1]}:{evaluation.check_name}")
                if check is None:
                    stage, check = graph.get(key).group_name, failed[-1]
            elif event.is_step_failure and event.event_specific_data:
                error = event.event_specific_data.error
                key = AssetKey(event.step_key.split("__"))
                classes = _error_classes(error)
                if CHECK_FAILED in classes:
                    continue  # the failed blocking check itself was read above
                refused_by = set(classes) & REFUSALS
                if not refused_by:
                    errors.append(f"{key.path[-1]}: {_first_line(error)}")
                    continue
                failed.append(f"{key.path[-1]} refused ({', '.join(sorted(refused_by))})")
                if check is None:
                    stage, check = graph.get(key).group_name, failed[-1]
    return Outcome(
        scenario=scenario.name,
        attack=scenario.attack,
        example=scenario.example,
        detected=check is not None,
        stage=stage,
        check=check,
        materialised_before_stop=reached,
        seconds=round(seconds, 1),
        controls_failed=failed,
        errors=errors,
    )


def _mount(
    scenario: Scenario, pipeline: Callable[..., PipelineInstance], home: Path, **options
) -> tuple[PipelineInstance, Outcome]:
    instance = pipeline(fresh_home(home), log_level="CRITICAL", **options)
    before, started, broke = None, time.perf_counter(), None
    try:
        scenario.prepare(instance)
        before, started = len(instance.runs), time.perf_counter()
        scenario.mount(instance)
    except Exception as error:  # reported, not raised: one broken scenario must not hide the others
        broke = f"the scenario itself failed: {type(error).__name__}: {error}"
    attack_runs = instance.runs[before:] if before is not None else []
    outcome = read_runs(instance, attack_runs, time.perf_counter() - started, scenario)
    if broke:
        outcome.errors.append(broke)
    return instance, outcome


def run_scenario(
    scenario: Scenario,
    pipeline: Callable[..., PipelineInstance],
    root: Path,
    *,
    switched_off: Collection[str] = (),
    scale: int = 1,
    measure_harm: bool = False,
) -> Outcome:
    """Mount `scenario` on a fresh pipeline instance under `root` and read what stopped it.

    With `measure_harm`, the scenario is mounted again with every check that
    failed switched off (again, until none fails) and its harm probe measures
    what the attack then achieved. A scenario that breaks (its clean history
    fails, its mounting raises) is reported with the error and counts as
    missed; the lab goes on.
    """
    home = root / scenario.name
    instance, outcome = _mount(scenario, pipeline, home, scale=scale, switched_off=switched_off)
    if measure_harm and scenario.harm is not None:
        outcome.harm = measure(
            scenario, pipeline, home, (instance, outcome), scale=scale, switched_off=switched_off
        )
    outcome.judge()
    return outcome


HARM_ROUNDS = 4  # switch off what stopped the attack, mount again; a fifth stop is reported as is


def measure(
    scenario: Scenario,
    pipeline: Callable[..., PipelineInstance],
    home: Path,
    mounted: tuple[PipelineInstance, Outcome],
    *,
    scale: int,
    switched_off: Collection[str],
) -> dict:
    """What `scenario`'s attack achieves once the checks that caught it in `mounted` are switched off."""
    probe = scenario.harm
    off = set(switched_off)
    attacked, caught = mounted
    for round_ in range(1, HARM_ROUNDS + 1):
        checks = {c for c in caught.controls_failed if " refused " not in c} - off
        if not caught.detected or not checks:
            break
        off |= checks
        # A new home each round: MLflow keeps its database connections per path for the process.
        again = home.with_name(f"{home.name}-harm{round_}")
        attacked, caught = _mount(scenario, pipeline, again, scale=scale, switched_off=off)
    report = {"measure": probe.measure, "switched_off": sorted(off - set(switched_off))}
    if caught.detected:
        return report | {"unmeasured": f"still stopped by {caught.check} with those checks off"}
    if caught.errors:
        return report | {"unmeasured": f"the attack's runs failed: {caught.errors[0]}"}
    clean = None
    if probe.counterpart is not None:
        clean = pipeline(fresh_home(home.with_name(f"{home.name}-clean")), scale=scale, log_level="CRITICAL")
        scenario.prepare(clean)
        probe.counterpart(clean)
    effect = probe.effect(attacked, clean)
    return report | {
        "value": effect.value, "lower_bound": effect.lower_bound, "cases": effect.cases,
        "harmful": effect.harmful,
    }  # fmt: skip


@dataclass
class CleanRun:
    """What failed when the whole lifecycle ran on clean data: blocking checks and step errors
    (each stopped the run: a false alarm), and advisory (WARN) checks."""

    blocking: list[str]
    warnings: list[str]


def clean_run(
    lifecycle: Callable[[PipelineInstance], None],
    pipeline: Callable[..., PipelineInstance],
    home: Path,
    seed: int,
    scale: int = 1,
) -> CleanRun:
    """The checks that failed when the whole lifecycle ran on clean data from `seed`."""
    instance = pipeline(fresh_home(home), scale=scale, seed=seed, log_level="CRITICAL")
    lifecycle(instance)
    evaluations = [
        e for result in instance.runs for e in result.get_asset_check_evaluations() if not e.passed
    ]
    errors = [
        f"{event.step_key}: {_first_line(event.event_specific_data.error)}"
        for result in instance.runs
        for event in result.all_events
        if event.is_step_failure and CHECK_FAILED not in _error_classes(event.event_specific_data.error)
    ]
    return CleanRun(
        blocking=[
            f"{e.asset_key.path[-1]}:{e.check_name}"
            for e in evaluations
            if e.severity == AssetCheckSeverity.ERROR
        ]
        + errors,
        warnings=[
            f"{e.asset_key.path[-1]}:{e.check_name}"
            for e in evaluations
            if e.severity != AssetCheckSeverity.ERROR
        ],
    )
