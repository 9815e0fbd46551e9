"""The healthcare lifecycle from DICOM to a served, signed CNN, and controlled retraining.

One pipeline instance (900 studies a window) is shared and advanced in
order: the first model is trained, checked and promoted; retraining is
refused without a reviewer's approval, or with one for another dataset; an
approved retraining that misses a clinical minimum is not promoted; an
approved one that passes becomes v2. A second instance whose imaging source
stamps a trigger patch on lesion studies shows the backdoor check stopping
promotion.
"""

import json

import pytest
from dagster import AssetKey, build_asset_check_context
from fastapi.testclient import TestClient

from assets.healthcare.deployment import not_worse_than_champion
from assets.healthcare.modeling import TRAINING_SET_KEY, DiagnosticSettings
from assets.promotion import load_champion, release_check
from domain.healthcare.release import ARCHITECTURES, MODEL_NAME
from examples.healthcare.attacks.backdoor import poison_inbox
from examples.healthcare.clinic import MODEL_STUDIES, SMALL_SETTINGS, SMALL_THRESHOLDS, Clinic
from examples.healthcare.studies.dicom import dicom_bytes
from examples.healthcare.studies.model import CohortConfig
from examples.healthcare.studies.plan import plan_studies
from examples.runs import checks, materialized, metadata
from pipelines import healthcare
from resources.model_files import save_model_dir
from resources.retraining_approval import sign_retraining_approval
from resources.runtime import RuntimeHome
from resources.tables import ModelDir
from serving.healthcare import create_diagnostic_app
from tests.serving import api_key_access

pytestmark = pytest.mark.slow

CHAMPION = AssetKey(["healthcare", "champion_model"])


@pytest.fixture(scope="module")
def clinic(tmp_path_factory):
    home = tmp_path_factory.mktemp("healthcare") / "home"
    clinic = Clinic(home, studies=MODEL_STUDIES)
    clinic.first_run = clinic.lifecycle()
    yield clinic


def failed(result) -> dict[str, bool]:
    return {k: v for k, v in checks(result).items() if not v}


def released(clinic: Clinic) -> list[int]:
    return clinic.defs.resources["releases"].versions(MODEL_NAME)


def failure_messages(result) -> str:
    """What the failed steps said (the errors they raised)."""
    return "\n".join(
        e.event_specific_data.error.message
        for e in result.all_events
        if e.is_step_failure and e.event_specific_data
    )


def test_first_model_is_trained_measured_and_promoted_signed(clinic):
    result = clinic.first_run
    assert result.success, failed(result)
    model = metadata(result, "diagnostic_model")
    for name in ("auc", "sensitivity", "specificity"):
        assert 0 <= model[name] <= 1
    assert model["auc"] >= SMALL_SETTINGS.min_auc
    assert checks(result)["diagnostic_model:no_backdoor_in_training_data"]
    assert checks(result)["diagnostic_model:robust_to_fgsm"]
    assert checks(result)[
        "training_set:labels_agree_with_reference_grader"
    ]  # the baseline's grader, on clean data
    champion = metadata(result, "champion_model")
    assert champion["release_version"] == 1 and champion["signer"].startswith("ecdsa-p256:")
    run_id = model["mlflow_run_id"]
    logged = {d["name"]: d["digest"] for d in clinic.defs.resources["tracking"].run_inputs(run_id)}
    assert logged == {"healthcare/training_set": clinic.ledger.latest("healthcare/training_set").digest}


def test_the_server_diagnoses_a_study_with_the_champion(clinic):
    import base64

    study = plan_studies(CohortConfig(seed=11, studies=4), 0)[0]
    access, auth = api_key_access(("diagnose",))
    with TestClient(
        create_diagnostic_app(RuntimeHome(clinic.home), clinic.trust, access), headers=auth
    ) as client:
        answer = client.post("/diagnose", json={"dicom": base64.b64encode(dicom_bytes(study)).decode()})
    assert answer.status_code == 200, answer.text
    assert answer.json()["model_version"] == 1 and 0 <= answer.json()["lesion_probability"] <= 1


def test_retraining_without_an_approval_is_refused(clinic):
    clinic.feedback(cycle=1, studies=300)
    feedback = clinic.run("healthcare_feedback")
    assert feedback.success, failed(feedback)
    assert metadata(feedback, "training_set")["untrusted_studies"] > 0
    result = clinic.run("healthcare_retraining")
    assert not result.success
    assert "needs a signed approval and there is none" in failure_messages(result)
    assert "diagnostic_model" not in materialized(result) and released(clinic) == [1]


def test_an_approval_for_another_dataset_is_refused(clinic):
    approval = sign_retraining_approval(
        MODEL_NAME, "blake3:" + "0" * 64, "dr-review", clinic.reviewer_key("retraining")
    )
    clinic.defs.resources["retraining_approvals"].record(approval)
    result = clinic.run("healthcare_retraining")
    assert not result.success
    assert "not for this dataset" in failure_messages(result)
    assert released(clinic) == [1]


def test_an_approved_retraining_that_misses_a_minimum_is_not_promoted(clinic):
    clinic.approve_retraining(reviewer="dr-review")
    strict_settings = DiagnosticSettings(**(SMALL_THRESHOLDS | {"min_auc": 0.999}))
    strict = healthcare.build_definitions(
        RuntimeHome(clinic.home), clinic.trust, diagnostic_settings=strict_settings
    )
    result = clinic.run("healthcare_retraining", defs=strict)
    assert "diagnostic_model" in materialized(result)  # the approval let training run
    assert failed(result).keys() == {"diagnostic_model:meets_clinical_minimums"}
    assert "champion_model" not in materialized(result) and released(clinic) == [1]


def test_an_approved_retraining_is_promoted_as_v2_and_audited(clinic):
    result = clinic.run("healthcare_retraining")
    assert result.success, failed(result)
    assert metadata(result, "diagnostic_model")["approved_by"] == "dr-review"
    assert metadata(result, "champion_model")["release_version"] == 2
    audit = clinic.run("healthcare_audit")
    assert audit.success, failed(audit)
    lineage = metadata(audit, "retraining_audit")["lineage"]
    approved = clinic.ledger.latest(TRAINING_SET_KEY.to_user_string()).digest
    assert [v["release_version"] for v in lineage] == [1, 2]
    assert lineage[-1]["training_set_digest"] == approved


def test_a_challenger_whose_threshold_hides_lesions_keeps_its_auc_and_is_still_refused(clinic, tmp_path):
    """The champion's own weights with a decision threshold moved up: ranking, hence AUC, is
    unchanged, but most lesions are now called normal in every subgroup."""
    releases = clinic.defs.resources["releases"]
    champion = load_champion(releases, clinic.trust, MODEL_NAME, ARCHITECTURES)
    training = clinic.stored_table(TRAINING_SET_KEY.to_user_string())
    check = not_worse_than_champion

    def verdict(threshold: float):
        directory = save_model_dir(
            champion.module, champion.config | {"threshold": threshold}, tmp_path / str(threshold)
        )
        return check(
            build_asset_check_context(),
            clinic.settings,
            releases,
            clinic.trust,
            ModelDir(directory),
            training,
        )

    same = verdict(champion.config["threshold"])
    assert same.passed and same.metadata["worse_subgroups"].value == []
    hiding = verdict(0.999)
    assert hiding.metadata["challenger_auc"].value == pytest.approx(hiding.metadata["champion_auc"].value)
    assert not hiding.passed
    assert "modality=CT:sensitivity" in hiding.metadata["worse_subgroups"].value


def test_a_rollback_stays_refused_until_an_operator_acknowledges_it(clinic):
    releases = clinic.defs.resources["releases"]
    pointer = releases.current(MODEL_NAME).parent / "current.json"
    pointer.write_text(json.dumps({"version": 1}))  # v1 is validly signed, but v2 is on record
    check = release_check(CHAMPION, MODEL_NAME, ARCHITECTURES)
    result = check(build_asset_check_context(), releases, clinic.trust)
    assert not result.passed and "rollback" in result.description
    assert "older than version 2" in result.description
    pointer.write_text(json.dumps({"version": 2}))
    assert not check(build_asset_check_context(), releases, clinic.trust).passed  # the alarm stays raised
    assert clinic.acknowledge_alarms("pointer restored to v2 and checked") == 1
    assert check(build_asset_check_context(), releases, clinic.trust).passed


def test_a_trigger_patch_on_lesion_studies_is_flagged_before_promotion(tmp_path_factory):
    home = tmp_path_factory.mktemp("backdoor") / "home"
    clinic = Clinic(home, studies=MODEL_STUDIES)
    poisoned = poison_inbox(clinic, 0.08)
    result = clinic.lifecycle()
    assert poisoned >= 20
    assert "diagnostic_model" in materialized(result)
    assert failed(result).keys() >= {"diagnostic_model:no_backdoor_in_training_data"}
    assert "champion_model" not in materialized(result)
