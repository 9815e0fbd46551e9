"""The security scorecard asset: every attack of the catalogue on a fresh pipeline, and what caught it.

Materialising it runs the example's attack lab (`examples/<example>/attacks/`):
each scenario mounts its attack on a fresh pipeline instance of its own and
runs the lifecycle through Dagster; the scorecard is read from the check
evaluations and step failures of those runs, never written by hand. The
clean lifecycle also runs once per seed, so a control that fails on clean
data shows up here as well.
"""

from pathlib import Path

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    Config,
    MetadataValue,
    Output,
    asset,
)

from examples.attacks.scorecard import CLEAN_SEEDS, SIZES, markdown, run_lab, summary

OWNER = "team:security"


class AttackLabConfig(Config):
    """Which scenarios to run (all by default), clean runs' seeds, world size, controls left out."""

    scenarios: list[str] = []
    clean_seeds: list[int] = list(CLEAN_SEEDS)
    size: str = "lab"  # or "large": 3x the lab's window
    switched_off: list[str] = []  # "asset:check" names: shows what the attacks do without them
    measure_harm: bool = True  # mount each attack again with its catching checks off and measure its harm


def security_scorecard(example: str, lab_root: Path) -> AssetsDefinition:
    """`example`'s scorecard asset, with checks that every attack was detected and clean runs passed.

    Each scenario and clean run gets a fresh pipeline home of its own under `lab_root`.
    """
    key = AssetKey([example, "security_scorecard"])

    @asset(
        key=key,
        group_name="security",
        owners=[OWNER],
        kinds={"python", "json"},
        io_manager_key="json_io_manager",
        check_specs=[
            AssetCheckSpec(
                "every_attack_detected",
                asset=key,
                description="Every scenario of the attack lab was stopped by a control.",
            ),
            AssetCheckSpec(
                "clean_runs_pass",
                asset=key,
                description="No blocking check failed when the lifecycle ran on clean data.",
            ),
        ],
        description=f"Each attack of the catalogue mounted on a fresh {example} pipeline: detected or "
        "missed, the stage and check that caught it, how far it got; plus clean runs over several seeds.",
    )
    def _scorecard(context: AssetExecutionContext, config: AttackLabConfig):
        if config.size not in SIZES:
            raise ValueError(f"size must be one of {', '.join(SIZES)}, got {config.size!r}")
        card = run_lab(
            example,
            lab_root,
            only=config.scenarios,
            seeds=config.clean_seeds,
            switched_off=config.switched_off,
            scale=SIZES[config.size],
            measure_harm=config.measure_harm,
            log=context.log.info,
        )
        missed = [a["scenario"] for a in card["attacks"] if not a["detected"]]
        clean = card["clean_runs"]
        yield Output(
            card,
            metadata={
                "scorecard": MetadataValue.md(markdown(card)),
                "summary": summary(card),
                "scorecard_json": MetadataValue.json(card),
                "attacks": len(card["attacks"]),
                "missed": len(missed),
                "clean_failed_checks": clean["failed_checks"],
                "harmful_if_missed": sum(bool((a["harm"] or {}).get("harmful")) for a in card["attacks"]),
            },
        )
        yield AssetCheckResult(
            check_name="every_attack_detected",
            passed=not missed,
            severity=AssetCheckSeverity.ERROR,
            metadata={"missed": missed, "switched_off": config.switched_off},
        )
        yield AssetCheckResult(
            check_name="clean_runs_pass",
            passed=clean["failed_checks"] == 0,
            severity=AssetCheckSeverity.ERROR,
            metadata={
                "seeds": clean["seeds"],
                "scale": clean["scale"],
                "failures": clean["failures"],
                "false_alarms": MetadataValue.json(clean["false_alarms"]),
                "warnings": len(clean["warnings"]),
            },
        )

    return _scorecard
