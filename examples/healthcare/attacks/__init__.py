"""ATTACK SIMULATION: the attack catalogue (docs/threat-model.md) against the healthcare diagnostic model.

Each scenario mounts its attack on a fresh pipeline instance and runs the
lifecycle through Dagster; `make attack SCENARIO=<name>` runs one,
`make scorecard` runs them all.
"""

from assets.healthcare.deployment import CHAMPION_KEY
from domain.healthcare.release import MODEL_NAME
from examples.attacks.anchors import anchor_scenarios
from examples.attacks.insider import insider_scenario
from examples.attacks.releases import rollback_scenario, trojan_scenarios
from examples.attacks.running_server import running_server_scenario
from examples.healthcare.attacks import (
    backdoor,
    data_poisoning,
    label_flipping,
    processing_manipulation,
    retraining_exploitation,
    storage_tampering,
    subgroup_label_flip,
)
from examples.healthcare.attacks.pipeline import (
    COLLECTION,
    clean_lifecycle,
    one_release,
    pipeline,
    two_releases,
)
from serving.healthcare import create_diagnostic_app

SCENARIOS = [
    data_poisoning.SCENARIO,
    label_flipping.SCENARIO,
    subgroup_label_flip.SCENARIO,
    subgroup_label_flip.SWAP_SCENARIO,
    storage_tampering.SCENARIO,
    processing_manipulation.SCENARIO,
    insider_scenario("healthcare", "prepare_images", processing_manipulation.relabelling_prepare_images),
    backdoor.SCENARIO,
    backdoor.BLENDED_SCENARIO,
    backdoor.FREQUENCY_SCENARIO,
    *trojan_scenarios("healthcare", MODEL_NAME, one_release),
    retraining_exploitation.SCENARIO,
    rollback_scenario("healthcare", MODEL_NAME, two_releases),
    *anchor_scenarios("healthcare", MODEL_NAME, COLLECTION, one_release, two_releases),
    running_server_scenario("healthcare", MODEL_NAME, CHAMPION_KEY, create_diagnostic_app, one_release),
]

__all__ = ["SCENARIOS", "clean_lifecycle", "pipeline"]
