"""One builder for both examples' code locations.

A location is the merge of its stage modules' definitions (each stage module
under `assets/<example>/` exports `defs`), its oversight (audits and their
schedule), its jobs, and the environment's resources placed under the runtime
home it is given.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any

from dagster import Definitions, JobDefinition, SensorDefinition, in_process_executor

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
    return Definitions.merge(
        *(stage.defs for stage in stages),
        oversight.defs,
        Definitions(
            jobs=jobs,
            sensors=sensors,
            resources={**resources_for(example, home, trust), **resources},
            # One process per run: Spark starts once and every step shares its session.
            executor=in_process_executor,
        ),
    )
