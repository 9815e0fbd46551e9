"""ATTACK SIMULATION: the attack catalogue (docs/threat-model.md) against the e-commerce recommender.

Each scenario mounts its attack on a fresh pipeline instance and runs the
lifecycle through Dagster; `make attack SCENARIO=<name>` runs one,
`make scorecard` runs them all.
"""

from assets.ecommerce.deployment import CHAMPION_KEY
from domain.ecommerce.release import MODEL_NAME
from examples.attacks.anchors import anchor_scenarios
from examples.attacks.insider import insider_scenario
from examples.attacks.releases import rollback_scenario, trojan_scenarios
from examples.attacks.running_server import running_server_scenario
from examples.ecommerce.attacks import (
    data_poisoning,
    label_flipping,
    processing_manipulation,
    retraining_exploitation,
    stealth_shilling,
    storage_tampering,
)
from examples.ecommerce.attacks.pipeline import (
    COLLECTION,
    clean_lifecycle,
    one_release,
    pipeline,
    two_releases,
)
from serving.ecommerce import create_recommender_app

SCENARIOS = [
    data_poisoning.SCENARIO,
    stealth_shilling.AGED_ACCOUNTS,
    stealth_shilling.AVERAGE_PROFILES,
    label_flipping.SCENARIO,
    storage_tampering.SCENARIO,
    processing_manipulation.SCENARIO,
    insider_scenario("ecommerce", "build_interactions", processing_manipulation.biased_build_interactions),
    *trojan_scenarios("ecommerce", MODEL_NAME, one_release),
    retraining_exploitation.SCENARIO,
    retraining_exploitation.SLOW_SCENARIO,
    rollback_scenario("ecommerce", MODEL_NAME, two_releases),
    *anchor_scenarios("ecommerce", MODEL_NAME, COLLECTION, one_release, two_releases),
    running_server_scenario("ecommerce", MODEL_NAME, CHAMPION_KEY, create_recommender_app, one_release),
]

__all__ = ["SCENARIOS", "clean_lifecycle", "pipeline"]
