"""The controls view: its checklist agrees with the design, the threat model and the code, and what it
reports is what the Dagster instance recorded."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest
from dagster import (
    AssetCheckKey,
    AssetCheckResult,
    AssetCheckSpec,
    AssetKey,
    DagsterInstance,
    Definitions,
    MaterializeResult,
    asset,
    materialize,
)

from assets.controls import CHECKLIST, EXAMPLES, controls_key, controls_view, listed_checks
from pipelines import ecommerce, healthcare
from resources.runtime import REPO_ROOT, RuntimeHome
from resources.trust_store import TrustStore

DESIGN = REPO_ROOT.parent / "shared" / "DESIGN.md"
THREAT_MODEL = REPO_ROOT / "docs" / "threat-model.md"
STAGES = ("collection", "storage", "processing", "modeling", "deployment", "monitoring")
BUILDERS = {"ecommerce": ecommerce, "healthcare": healthcare}
DOC_MARK = {"ecommerce": "E", "healthcare": "H"}  # how the threat model's check(s) column names an example
PASSED = AssetCheckKey(AssetKey(["ecommerce", "recommender_model"]), "training_run_tracked")
FAILED = AssetCheckKey(AssetKey(["ecommerce", "feedback_drift"]), "drift_below_error")
COUNTS = ("items", "checks_passed", "checks_failed", "checks_never_evaluated")


@dataclass(frozen=True)
class DocRow:
    """One checklist row of the threat model's stage tables."""

    stage: str
    item: str
    checks: str  # the check(s) column

    def check_names(self, example: str) -> set[str]:
        """The backticked names in the check(s) column that concern `example`: a column written as
        "E: ... H: ..." (sentence by sentence) is split by example; otherwise it concerns both."""
        parts = re.split(r"(?:^|\.\s+)([EH]):\s", self.checks)
        if len(parts) > 1:
            return set(
                re.findall(r"`(\w+)`", dict(zip(parts[1::2], parts[2::2], strict=True))[DOC_MARK[example]])
            )
        return set(re.findall(r"`(\w+)`", self.checks))


def table_rows(text: str) -> list[list[str]]:
    """The cells of the body rows of the (first) Markdown table in `text`."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines[2:]]


def threat_model_rows() -> list[DocRow]:
    """The checklist rows of the threat model's stage tables, in order."""
    sections = re.split(r"^## ", THREAT_MODEL.read_text(), flags=re.MULTILINE)
    by_stage = {section.splitlines()[0].strip().lower(): section for section in sections}
    return [DocRow(stage, cells[0], cells[2]) for stage in STAGES for cells in table_rows(by_stage[stage])]


def as_dicts(markdown: str) -> list[dict[str, str]]:
    """A Markdown table's rows, each keyed by the header's column names."""
    header = [cell.strip() for cell in markdown.splitlines()[0].strip("|").split(" | ")]
    return [dict(zip(header, row, strict=True)) for row in table_rows(markdown)]


@pytest.fixture(scope="module")
def locations(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Definitions]:
    home, trust = RuntimeHome(tmp_path_factory.mktemp("home")), TrustStore(tmp_path_factory.mktemp("trust"))
    return {name: module.build_definitions(home, trust) for name, module in BUILDERS.items()}


def test_the_checklist_is_the_threat_models_24_items_in_stage_order():
    documented = [(row.stage, row.item) for row in threat_model_rows()]
    assert [(control.stage, control.item) for control in CHECKLIST] == documented
    assert len(CHECKLIST) == 24


@pytest.mark.skipif(not DESIGN.exists(), reason=f"no design document at {DESIGN}")
def test_the_checklist_has_the_design_documents_wording_in_its_order():
    section = DESIGN.read_text().split("\n## 4.", 1)[1].split("\n## ", 1)[0]
    designed = [tuple(cells[:2]) for cells in table_rows(section)]
    assert [(control.stage, control.item) for control in CHECKLIST] == designed


@pytest.mark.parametrize("example", EXAMPLES)
def test_every_check_the_checklist_names_is_defined_in_the_location(example, locations):
    defined = locations[example].resolve_asset_graph().asset_check_keys
    assert [key.to_user_string() for key in listed_checks(example) if key not in defined] == []


@pytest.mark.parametrize("example", EXAMPLES)
def test_the_threat_model_names_the_same_checks_for_each_item(example, locations):
    """Per item: the checks the checklist lists are those the threat model names for the example (of the
    names it backticks, those that are checks of this location), and both say where code enforces the rest."""
    defined = {key.name for key in locations[example].resolve_asset_graph().asset_check_keys}
    for control, row in zip(CHECKLIST, threat_model_rows(), strict=True):
        coverage = control.coverage[example]
        assert {key.name for key in coverage.checks} == row.check_names(example) & defined, control.item
        assert bool(coverage.in_code) == ("enforced in code" in row.checks.lower()), control.item


@pytest.mark.parametrize("example", EXAMPLES)
def test_the_nightly_audit_refreshes_the_view_and_no_other_job_runs_it(example, locations):
    jobs = [job for job in locations[example].resolve_all_job_defs() if not job.name.startswith("__")]
    running = [job.name for job in jobs if controls_key(example) in job.asset_layer.selected_asset_keys]
    assert running == [f"{example}_audit"]  # (Dagster's implicit `__ASSET_JOB` holds every asset)


def check_name(key: AssetCheckKey) -> str:
    """How the view names a check: `asset:check`."""
    return f"{key.asset_key.path[-1]}:{key.name}"


def record_evaluation(instance: DagsterInstance, key: AssetCheckKey, *, passed: bool) -> str:
    """Evaluate `key` in a run of a stand-in for its asset; the run's id."""

    @asset(key=key.asset_key, check_specs=[AssetCheckSpec(key.name, asset=key.asset_key)])
    def stand_in() -> MaterializeResult:
        return MaterializeResult(check_results=[AssetCheckResult(check_name=key.name, passed=passed)])

    return materialize([stand_in], instance=instance).run_id


def test_the_view_reports_what_the_instance_recorded(locations):
    audit = locations["ecommerce"].resolve_job_def("ecommerce_audit")
    with DagsterInstance.ephemeral() as instance:
        runs = {PASSED: record_evaluation(instance, PASSED, passed=True)}
        runs[FAILED] = record_evaluation(instance, FAILED, passed=False)
        result = audit.get_subset(asset_selection={controls_key("ecommerce")}).execute_in_process(
            instance=instance
        )
    metadata = result.asset_materializations_for_node("ecommerce__controls")[0].metadata
    checks = {row["check"]: row for row in as_dicts(metadata["checks"].value)}
    assert checks.keys() == {check_name(key) for key in listed_checks("ecommerce")}
    for key, result_text in ((PASSED, "passed"), (FAILED, "failed")):
        row = checks.pop(check_name(key))
        assert (row["last result"], row["severity"]) == (result_text, "ERROR")
        assert runs[key] in row["run"] and row["evaluated (UTC)"].endswith("+00:00")
    assert {row["last result"] for row in checks.values()} == {"never evaluated"}

    items = {row["checklist item"]: row["last result"] for row in as_dicts(metadata["controls"].value)}
    assert len(items) == 24
    assert items["track training inputs and configuration"] == "passed"
    failed = "failed: feedback_drift:drift_below_error"
    assert (
        items["data and concept drift"] == items["separate trusted and untrusted retraining data"] == failed
    )
    assert items["isolate model execution"] == "not a check"
    assert items["verify artifact integrity"] == "never evaluated"
    counts = {name: metadata[name].value for name in COUNTS}
    assert counts == dict(zip(COUNTS, (24, 1, 1, len(checks)), strict=True))


def test_a_checklist_check_the_location_lacks_fails_the_view_by_name(locations):
    graph = locations["healthcare"].resolve_asset_graph()
    missing = AssetCheckKey(AssetKey(["healthcare", "diagnostic_model"]), "robust_to_fgsm")
    specs = [graph.get_check_spec(key) for key in graph.asset_check_keys if key != missing]
    with DagsterInstance.ephemeral() as instance, pytest.raises(LookupError, match=missing.to_user_string()):
        materialize([controls_view("healthcare", specs)], instance=instance)
