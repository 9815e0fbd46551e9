"""The security scorecard: every scenario's outcome and the clean runs, as JSON and as Markdown.

The JSON schema is stable so that scorecards of two versions can be compared
(`docs/threat-model.md` documents it):

    {
      "schema_version": 3,
      "attacks": [{"scenario", "attack", "example", "detected", "stage", "check",
                   "materialised_before_stop", "seconds", "controls_failed", "errors",
                   "outcome", "harm"}],
      "clean_runs": {"seeds": N, "scale": N, "failed_checks": N, "failures": ["<seed>: <asset>:<check>", ...],
                     "warnings": ["<seed>: <asset>:<check>", ...],
                     "false_alarms": {"<asset>:<check>": <clean runs it stopped>, ...}}
    }

`failed_checks` and `failures` count blocking checks (and step errors) only: each stopped
a clean run. Advisory (WARN) checks that failed are listed under `warnings`.

`outcome` is `detected`, `missed-harmful`, `missed-harmless`, or `missed` where the
scenario has no harm probe. `harm` (null without a probe, or when not measured) is what
the attack achieved with the checks that caught it switched off:
`{"measure", "switched_off", "value", "lower_bound", "cases", "harmful"}`, or
`{"measure", "switched_off", "unmeasured"}` when a control that cannot be switched off
(a refusal inside a step) still stopped it. `value` and `lower_bound` are shares of
`cases`; the attack is harmful when `lower_bound` is above zero.
"""

from __future__ import annotations

import importlib
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import asdict
from pathlib import Path

from examples.attacks.lab import clean_run, run_scenario

# 2: failed_checks counts blocking checks only; scale, warnings, false_alarms added. 3: outcome, harm.
SCHEMA_VERSION = 3
CLEAN_SEEDS = tuple(range(1, 11))
SIZES = {"lab": 1, "large": 3}  # multiples of each example's lab window (`make scorecard SIZE=large`)


def run_lab(
    example: str,
    root: Path,
    *,
    only: Collection[str] = (),
    seeds: Collection[int] = CLEAN_SEEDS,
    switched_off: Collection[str] = (),
    scale: int = 1,
    measure_harm: bool = True,
    log: Callable[[str], None] = print,
) -> dict:
    """Run `example`'s scenarios (or `only` those) and its clean lifecycle once per seed, at `scale`,
    telling `log` each one's result as it comes.

    With `measure_harm`, each scenario with a harm probe is also run with its catching checks off.
    """
    lab = importlib.import_module(f"examples.{example}.attacks")
    unknown = set(only) - {s.name for s in lab.SCENARIOS}
    if unknown:
        names = ", ".join(s.name for s in lab.SCENARIOS)
        raise ValueError(f"No scenario named {', '.join(sorted(unknown))} in {example}; there are: {names}")
    outcomes = []
    for scenario in (s for s in lab.SCENARIOS if not only or s.name in only):
        outcome = run_scenario(
            scenario, lab.pipeline, root, switched_off=switched_off, scale=scale, measure_harm=measure_harm
        )
        found = f"detected by {outcome.check}" if outcome.detected else outcome.outcome.upper()
        log(f"{outcome.scenario}: {found} ({outcome.seconds:.0f} s)")
        outcomes.append(outcome)
    runs = {}
    for seed in seeds:
        home = root / example / f"clean-{seed}"
        runs[seed] = clean_run(lab.clean_lifecycle, lab.pipeline, home, seed, scale)
        stopped = ", ".join(runs[seed].blocking) or "no blocking check failed"
        log(f"{example} clean seed {seed}: {stopped}")
    failures = [f"{seed}: {failure}" for seed, run in runs.items() for failure in run.blocking]
    return {
        "schema_version": SCHEMA_VERSION,
        "attacks": [asdict(o) for o in outcomes],
        "clean_runs": {
            "seeds": len(seeds),
            "scale": scale,
            "failed_checks": len(failures),
            "failures": failures,
            "warnings": [f"{seed}: {warning}" for seed, run in runs.items() for warning in run.warnings],
            "false_alarms": dict(Counter(f for run in runs.values() for f in dict.fromkeys(run.blocking))),
        },
    }


def merge(cards: list[dict]) -> dict:
    """One scorecard from several examples' scorecards."""
    return {
        "schema_version": SCHEMA_VERSION,
        "attacks": [a for card in cards for a in card["attacks"]],
        "clean_runs": {
            "seeds": min((c["clean_runs"]["seeds"] for c in cards), default=0),
            "scale": max((c["clean_runs"]["scale"] for c in cards), default=1),
            "failed_checks": sum(c["clean_runs"]["failed_checks"] for c in cards),
            "failures": [f for c in cards for f in c["clean_runs"]["failures"]],
            "warnings": [w for c in cards for w in c["clean_runs"]["warnings"]],
            "false_alarms": dict(sum((Counter(c["clean_runs"]["false_alarms"]) for c in cards), Counter())),
        },
    }


def markdown(card: dict) -> str:
    """The scorecard as a Markdown table, one row per scenario, and a line for the clean runs."""
    lines = [
        "| scenario | attack | outcome | stage | caught by | got as far as | harm, checks off | seconds |",
        "|---|---|---|---|---|---|---|---:|",
    ]
    for a in card["attacks"]:
        reached = ", ".join(a["materialised_before_stop"]) or "nothing"
        verdict = a["outcome"] if a["detected"] else f"**{a['outcome'].upper()}**"
        caught = f"`{a['check']}`" if a["check"] else "-"
        others = [c for c in a["controls_failed"] if c != a["check"]]
        if others:
            caught += " (then " + ", ".join(f"`{c}`" for c in dict.fromkeys(others)) + ")"
        lines.append(
            f"| {a['scenario']} | {a['attack']} | {verdict} | {a['stage'] or '-'} | {caught} | {reached} | "
            f"{harm_text(a['harm'])} | {a['seconds']:.0f} |"
        )
    clean = card["clean_runs"]
    if clean["seeds"]:
        lines.append("")
        lines.append(
            f"Clean runs: {clean['seeds']} seeds at {clean['scale']}x the lab's size, "
            f"{clean['failed_checks']} blocking checks failed"
            + (f" ({'; '.join(clean['failures'])})" if clean["failures"] else "")
            + f", {len(clean['warnings'])} warnings"
        )
        if clean["false_alarms"]:
            lines += ["", "| check (false alarms on clean runs) | runs stopped |", "|---|---:|"]
            lines += [f"| `{check}` | {n} |" for check, n in sorted(clean["false_alarms"].items())]
    return "\n".join(lines)


def harm_text(harm: dict | None) -> str:
    """A row's harm figure in words: the effect, its lower bound, what it measures."""
    if harm is None:
        return "-"
    if "unmeasured" in harm:
        return f"not measured: {harm['unmeasured']}"
    verdict = "harmful" if harm["harmful"] else "harmless"
    return (
        f"{harm['value']:+.1%} (at least {harm['lower_bound']:+.1%}) {harm['measure']}, "
        f"{harm['cases']} cases: {verdict}"
    )


def summary(card: dict) -> str:
    """One line: how many attacks were detected, and the clean runs."""
    detected = sum(a["detected"] for a in card["attacks"])
    clean = card["clean_runs"]
    line = f"{detected} of {len(card['attacks'])} attacks detected"
    harmful = [a["scenario"] for a in card["attacks"] if a["outcome"] == "missed-harmful"]
    if harmful:
        line += f" ({len(harmful)} missed and harmful: {', '.join(harmful)})"
    if clean["seeds"]:
        line += f"; {clean['failed_checks']} blocking checks failed on clean runs over {clean['seeds']} seeds"
    return line
