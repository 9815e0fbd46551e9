"""The healthcare attack lab's pipeline instance and the clean history its attacks start from."""

from __future__ import annotations

from pathlib import Path

from examples.healthcare.clinic import Clinic

# At 900 studies a window (the tests' size) a retrained CNN's AUC varies by about 0.1 from seed
# to seed, enough to fail the small clinic's minimums on clean data; 1,500 holds them.
LAB_STUDIES = 1_500
COLLECTION = ["healthcare/imaging_studies", "healthcare/clinical_notes"]


def pipeline(home: Path, scale: int = 1, **options) -> Clinic:
    """A fresh clinic large enough for every stage's controls, the CNN's included.

    `scale` multiplies the lab's window (`make scorecard SIZE=large` runs 3x).
    """
    return Clinic(home, studies=scale * LAB_STUDIES, **options)


def one_release(clinic: Clinic) -> None:
    """Baseline, then the lifecycle up to a signed v1."""
    assert clinic.lifecycle().success, "the clean lifecycle failed"


def retrain(clinic: Clinic) -> bool:
    """New studies validated into a training set, approved by a reviewer, retrained and promoted."""
    if not clinic.run("healthcare_feedback").success:
        return False
    clinic.approve_retraining(reviewer="lab-reviewer")
    return clinic.run("healthcare_retraining").success


def two_releases(clinic: Clinic) -> None:
    """v1, then a cycle of clean new studies retrained (with approval) into a signed v2."""
    one_release(clinic)
    clinic.feedback(cycle=1, studies=clinic.studies // 3)
    assert retrain(clinic), "the clean retraining failed"


def clean_lifecycle(clinic: Clinic) -> None:
    """Everything `make demo` runs: baseline, lifecycle, one approved retraining cycle, the audits."""
    clinic.lifecycle()
    clinic.feedback(cycle=1, studies=clinic.studies // 3)
    retrain(clinic)
    clinic.run("healthcare_audit")
