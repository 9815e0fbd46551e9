"""Both code locations load, and no asset can fall back to a pickling IO manager."""

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

from pipelines import ecommerce, healthcare
from resources.io_managers import JsonIOManager, ModelDirIOManager, ParquetIOManager
from resources.store import STAGES

LOCATIONS = {"ecommerce": ecommerce.defs, "healthcare": healthcare.defs}
REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", LOCATIONS)
def test_every_asset_uses_a_non_pickling_io_manager(name):
    defs: Definitions = LOCATIONS[name]
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


@pytest.mark.parametrize("name", LOCATIONS)
def test_assets_are_grouped_by_lifecycle_stage_and_documented(name):
    graph = LOCATIONS[name].resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        spec = graph.get(key)
        assert spec.group_name in STAGES, key
        assert spec.description, f"{key.to_user_string()} has no description"
        assert spec.owners, f"{key.to_user_string()} has no owner"
        assert spec.kinds, f"{key.to_user_string()} declares no kinds"


def test_every_check_that_guards_collection_and_processing_blocks():
    graph = ecommerce.defs.resolve_asset_graph()
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


def test_dagster_definitions_validate_passes_for_the_workspace():
    result = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
