"""The attack lab reads its scorecard from the runs: switch a control off and the attack is missed."""

import json

import pytest
from dagster import DagsterInstance

from examples.attacks.__main__ import main as lab_main
from examples.attacks.__main__ import run_attack_lab
from examples.attacks.lab import fresh_home
from examples.attacks.scorecard import markdown, merge, run_lab, summary
from examples.runs import checks, metadata, operator_key_file, reviewers_folder, trust_folder
from resources.runtime import RuntimeHome
from resources.trust_store import TrustStore

pytestmark = pytest.mark.slow

SCENARIO = "ecommerce/label-flipping"
CONTROL = "scored_reviews:sentiment_label_issues"
# The documented schema (docs/threat-model.md): versions of the scorecard are compared on these.
ATTACK_FIELDS = {"attack", "example", "detected", "stage", "check", "materialised_before_stop", "seconds"}


def test_flipped_sentiment_labels_are_caught_by_the_label_issue_check(tmp_path):
    card = run_lab("ecommerce", tmp_path, only=[SCENARIO], seeds=[])
    [row] = card["attacks"]
    assert ATTACK_FIELDS <= row.keys()
    assert row["detected"] is True
    assert (row["stage"], row["check"]) == ("processing", CONTROL)
    assert "scored_reviews" in row["materialised_before_stop"]
    assert "recommender_model" not in row["materialised_before_stop"]
    assert card["clean_runs"] == {
        "seeds": 0,
        "scale": 1,
        "failed_checks": 0,
        "failures": [],
        "warnings": [],
        "false_alarms": {},
    }
    assert json.loads(json.dumps(card)) == card


def test_with_that_control_switched_off_the_scorecard_asset_reports_the_attack_missed(tmp_path):
    result = run_attack_lab(
        "ecommerce",
        DagsterInstance.ephemeral(),
        RuntimeHome(tmp_path / "home"),
        TrustStore(tmp_path / "trust"),
        scenarios=[SCENARIO],
        clean_seeds=[],
        switched_off=[CONTROL],
    )
    [row] = result.output_for_node("ecommerce__security_scorecard")["attacks"]
    assert row["detected"] is False and row["check"] is None and row["controls_failed"] == []
    # Nothing else stopped it: the flipped labels went all the way into a released model.
    assert "champion_model" in row["materialised_before_stop"]
    assert checks(result) == {
        "security_scorecard:every_attack_detected": False,
        "security_scorecard:clean_runs_pass": True,
    }
    table = metadata(result, "security_scorecard")["scorecard"]
    assert f"| {SCENARIO} | label flipping | **MISSED** |" in table


def test_an_unknown_scenario_is_refused_with_the_list_of_names(capsys):
    assert lab_main(["attack", "ecommerce/no-such-attack"]) == 2
    assert "ecommerce/rollback" in capsys.readouterr().err


def _card(example: str, failures: list[str], warnings: list[str]) -> dict:
    alarms: dict[str, int] = {}
    for failure in failures:
        check = failure.split(": ", 1)[1]
        alarms[check] = alarms.get(check, 0) + 1
    return {
        "schema_version": 2,
        "attacks": [],
        "clean_runs": {
            "seeds": 10,
            "scale": 1,
            "failed_checks": len(failures),
            "failures": failures,
            "warnings": warnings,
            "false_alarms": alarms,
        },
    }


def test_false_alarms_are_counted_per_check_across_examples_and_warnings_kept_apart():
    card = merge(
        [
            _card(
                "ecommerce", ["2: training_interactions:distribution_matches_reference"], ["3: events:mix"]
            ),
            _card(
                "healthcare", ["2: diagnostic_model:robust_to_fgsm", "5: diagnostic_model:robust_to_fgsm"], []
            ),
        ]
    )
    assert card["clean_runs"]["false_alarms"] == {
        "training_interactions:distribution_matches_reference": 1,
        "diagnostic_model:robust_to_fgsm": 2,
    }
    assert card["clean_runs"]["failed_checks"] == 3 and card["clean_runs"]["warnings"] == ["3: events:mix"]
    table = markdown(card)
    assert "| `diagnostic_model:robust_to_fgsm` | 2 |" in table and "1 warnings" in table
    assert "3 blocking checks failed on clean runs over 10 seeds" in summary(card)


def test_a_fresh_home_starts_without_the_previous_runs_trust_store(tmp_path):
    """A second `make scorecard` must not find the first one's batch sequences and call them replays."""
    home = tmp_path / "clean-1"
    (home / "ledger").mkdir(parents=True)
    trust_folder(home).mkdir()
    (trust_folder(home) / "sources.json").write_text("{}")
    operator_key_file(home).write_bytes(b"key")
    reviewers_folder(home).mkdir()
    assert fresh_home(home) == home
    assert list(home.iterdir()) == []
    assert not trust_folder(home).exists() and not operator_key_file(home).exists()
    assert not reviewers_folder(home).exists()
