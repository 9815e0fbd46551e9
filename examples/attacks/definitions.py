"""The attack lab's code location (`lab` in workspace.yaml): each example's security scorecard.

It lives apart from the production locations, which import nothing from
`examples/`: materialising a scorecard builds fresh pipelines of the example
under `<runtime home>/attack-lab/`, mounts every attack of the catalogue on
them and scores what stopped each one.
"""

from __future__ import annotations

from dagster import AssetSelection, Definitions, define_asset_job, definitions, in_process_executor

from examples.attacks.scorecard_asset import security_scorecard
from pipelines.environment import resources_for
from resources.runtime import RuntimeHome
from resources.trust_store import TrustStore

EXAMPLES = ("ecommerce", "healthcare")


def build_definitions(home: RuntimeHome, trust: TrustStore) -> Definitions:
    """The scorecard assets and their `<example>_attack_lab` jobs; the scorecards are stored under `home`."""
    scorecards = {example: security_scorecard(example, home.root / "attack-lab") for example in EXAMPLES}
    jobs = [
        define_asset_job(
            f"{example}_attack_lab",
            selection=AssetSelection.assets(scorecard),
            description="Mount every attack of the catalogue on fresh pipelines, run clean ones, score them.",
        )
        for example, scorecard in scorecards.items()
    ]
    resources = resources_for("lab", home, trust)
    return Definitions(
        assets=list(scorecards.values()),
        jobs=jobs,
        resources={"json_io_manager": resources["json_io_manager"]},
        # The lab runs its pipelines one after another: two torch workloads at once on few cores crawl.
        executor=in_process_executor,
    )


@definitions
def defs() -> Definitions:
    """What `dagster dev` / the code server loads: the lab over `$PIPELINE_HOME`."""
    return build_definitions(RuntimeHome.from_environment(), TrustStore.from_environment())
