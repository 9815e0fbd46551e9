"""One builder for both examples' code locations.

A location is the merge of its stage modules' definitions (each stage module
under `assets/<example>/` exports `defs`), its oversight (audits and their
schedule), the controls view over every check those define, its jobs, and the
environment's resources placed under the runtime home it is given.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any

from dagster import AssetCheckSpec, Definitions, JobDefinition, SensorDefinition, in_process_executor

from assets.controls import controls_view
from pipelines.environment import resources_for
from pipelines.oversight import Oversight
from resources.runtime import RuntimeHome
from resources.trust_store import TrustStore


def build_location(
    example: str,
    *,
    stages: Sequence[ModuleType],
    oversight: Oversight,
    jobs: Sequence[JobDefinition],
    sensors: Sequence[SensorDefinition] = (),
    home: RuntimeHome,
    trust: TrustStore,
    resources: Mapping[str, Any],
) -> Definitions:
    """`example`'s definitions over `home` and `trust`; `resources` adds to or replaces the environment's."""
    checked = [*(stage.defs for stage in stages), oversight.defs]
    return Definitions.merge(
        *checked,
        Definitions(
            assets=[controls_view(example, _check_specs(checked))],
            jobs=jobs,
            sensors=sensors,
            resources={**resources_for(example, home, trust), **resources},
            # One process per run: Spark starts once and every step shares its session.
            executor=in_process_executor,
        ),
    )


def _check_specs(defs: Sequence[Definitions]) -> list[AssetCheckSpec]:
    """Every asset check `defs` define, on their assets or on their own."""
    return [
        spec
        for definitions in defs
        for assets in [*(definitions.assets or ()), *(definitions.asset_checks or ())]
        for spec in assets.check_specs
    ]
