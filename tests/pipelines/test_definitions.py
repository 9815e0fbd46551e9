"""Both code locations load, and no asset can fall back to a pickling IO manager."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import (
    Definitions,
    FilesystemIOManager,
    InMemoryIOManager,
    fs_io_manager,
    mem_io_manager,
)

from examples.attacks import definitions as lab
from pipelines import ecommerce, healthcare
from resources.io_managers import JsonIOManager, ModelDirIOManager, ParquetIOManager
from resources.runtime import RuntimeHome
from resources.store import STAGES
from resources.trust_store import TrustStore

BUILDERS = {"ecommerce": ecommerce, "healthcare": healthcare, "lab": lab}
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def locations(tmp_path_factory) -> dict[str, Definitions]:
    home, trust = RuntimeHome(tmp_path_factory.mktemp("home")), TrustStore(tmp_path_factory.mktemp("trust"))
    return {name: module.build_definitions(home, trust) for name, module in BUILDERS.items()}


@pytest.mark.parametrize("name", BUILDERS)
def test_every_asset_uses_a_non_pickling_io_manager(name, locations):
    defs: Definitions = locations[name]
    graph = defs.resolve_asset_graph()
    resources = defs.resources
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        manager = resources.get(node.io_manager_key)
        assert manager is not None, (
            f"{key.to_user_string()} uses '{node.io_manager_key}', which is not defined"
        )
        assert isinstance(manager, (ParquetIOManager, JsonIOManager, ModelDirIOManager)), (
            f"{key.to_user_string()} is stored by {type(manager).__name__}, which may pickle"
        )
        assert not isinstance(manager, (FilesystemIOManager, InMemoryIOManager))
        assert manager not in (fs_io_manager, mem_io_manager)


@pytest.mark.parametrize("name", BUILDERS)
def test_assets_are_grouped_by_lifecycle_stage_and_documented(name, locations):
    graph = locations[name].resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        spec = graph.get(key)
        assert spec.group_name in STAGES, key
        assert spec.description, f"{key.to_user_string()} has no description"
        assert spec.owners, f"{key.to_user_string()} has no owner"
        assert spec.kinds, f"{key.to_user_string()} declares no kinds"


@pytest.mark.parametrize("name", ["ecommerce", "healthcare"])
def test_a_location_is_the_merge_of_its_stage_modules_and_its_audits(name, locations):
    """Nothing is listed by hand: every asset and check comes from a stage module's `defs`, the audits or
    the controls view."""
    graph = locations[name].resolve_asset_graph()
    stages = BUILDERS[name].STAGES
    from_stages = {key for stage in stages for asset in stage.defs.assets for key in asset.keys}
    audits = BUILDERS[name].OVERSIGHT.selection.resolve(graph)
    assert {key.path[-1] for key in audits} == {"integrity_audit", "retraining_audit", "controls"}
    assert graph.get_all_asset_keys() == from_stages | audits
    groups = {graph.get(key).group_name for key in from_stages}
    assert groups == {"collection", "processing", "modeling", "deployment", "monitoring"}


def test_production_locations_hold_no_attack_lab(locations):
    for name in ("ecommerce", "healthcare"):
        assert not [
            k for k in locations[name].resolve_asset_graph().get_all_asset_keys() if "scorecard" in k.path[-1]
        ]
    lab_jobs = {job.name for job in locations["lab"].resolve_all_job_defs()}
    assert {"ecommerce_attack_lab", "healthcare_attack_lab"} <= lab_jobs


def test_every_check_that_guards_collection_and_processing_blocks(locations):
    graph = locations["ecommerce"].resolve_asset_graph()
    specs = [graph.get_check_spec(k) for k in graph.asset_check_keys]
    blocking = {s.key.name for s in specs if s.blocking}
    assert {
        "batches_authenticated",
        "sources_within_rate_limits",
        "records_accounted",
        "volume_within_baseline",
        "no_near_duplicate_burst",
        "expectations_met",
        "stored_digest_matches_ledger",
        "provenance_recorded",
    } <= blocking
    assert all(s.description for s in specs), [s.key for s in specs if not s.description]


def test_dagster_definitions_validate_passes_for_the_workspace(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO,
        env={
            **os.environ,
            "PIPELINE_HOME": str(tmp_path / "home"),
            "PIPELINE_TRUST_STORE": str(tmp_path / "trust"),
            "DAGSTER_HOME": str(tmp_path),
        },
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
