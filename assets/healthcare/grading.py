"""A second opinion on training labels from a grader that only ever saw the trusted reference window.

`reference_grader` is built with the baseline; `labels_agree_with_reference_grader`
holds every training set to the evidence it finds against clean labels, and
`training_label_issues` to how many labels it contradicts outright.
See `domain.healthcare.reference_grader` for why this finds a backdoor the
diagnostic model has learnt.
"""

import numpy as np
import pandas as pd
import torch
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetIn,
    Definitions,
    MetadataValue,
    asset,
    asset_check,
)

from assets.healthcare.collection import FALSE_ALARM_RATE, REFERENCE_NOTES_KEY, REFERENCE_STUDIES_KEY
from assets.healthcare.modeling import GRADER_KEY, OWNER, TRAINING_SET_KEY, DiagnosticSettings, subgroup_table
from assets.healthcare.processing import labelled_images
from domain.healthcare import reference_grader as grading
from domain.healthcare.transforms import image_array
from resources.code_approval import CodeApprovals, code_digest
from resources.scratch import ScratchSpace
from resources.tables import ModelDir, TableFile


@asset(
    key=GRADER_KEY,
    ins={"studies": AssetIn(key=REFERENCE_STUDIES_KEY), "notes": AssetIn(key=REFERENCE_NOTES_KEY)},
    group_name="modeling",
    io_manager_key="model_io_manager",
    code_version=code_digest(grading.fit_grader),
    kinds={"pytorch", "safetensors"},
    owners=[OWNER],
)
def reference_grader(
    context: AssetExecutionContext,
    diagnostic_settings: DiagnosticSettings,
    approvals: CodeApprovals,
    scratch: ScratchSpace,
    studies: TableFile,
    notes: TableFile,
) -> ModelDir:
    """Lesion CNNs cross-fitted on the reviewed reference window, with what their scores say of each label.

    Built once per baseline from the reference window only, so no later window
    (and no trigger that first appears in one) can shape it. Each reference
    study is scored by the fold that did not see it; that out-of-fold evidence
    is the yardstick of `labels_agree_with_reference_grader`.
    """
    torch.set_num_threads(diagnostic_settings.torch_threads)
    frame = labelled_images(context, approvals, studies, notes)
    grader, calibration = grading.fit_grader(
        image_array(frame),
        frame["label"].to_numpy(),
        frame["patient_pseudonym"],
        diagnostic_settings.train_config(),
        fgsm_epsilon=diagnostic_settings.fgsm_epsilon,
        subgroups=frame[diagnostic_settings.subgroups],
    )
    directory = scratch.path("reference_grader")
    grading.save_grader(grader, calibration, directory)
    context.add_output_metadata(
        {
            "reference_studies": len(frame),
            "folds": grading.FOLDS,
            "score_bins": len(calibration.edges) + 1,
            **{
                f"{n}_mean_evidence": float(calibration.shares(n) @ calibration.ratios(n))
                for n in grading.LABELS
            },
            **{f"{name}_design_effect": deff for name, deff in calibration.design_effects.items()},
            **{f"fold_{k}_fgsm_accuracy_drop": r["accuracy_drop"] for k, r in enumerate(calibration.fgsm)},
        }
    )
    return ModelDir(path=directory, details={})


@asset_check(
    asset=TRAINING_SET_KEY,
    name="labels_agree_with_reference_grader",
    blocking=True,
    additional_ins={"grader": AssetIn(key=GRADER_KEY)},
)
def labels_agree_with_reference_grader(
    context: AssetCheckExecutionContext, table: TableFile, grader: ModelDir
) -> AssetCheckResult:
    """The reference grader finds no more evidence against this training set's labels than against clean ones.

    Catches lesion studies relabelled normal (with a backdoor trigger of any
    shape, or none) and normals relabelled lesion, whether or not the
    diagnostic model learns a trigger: the grader never saw this data. For
    each label, the mean likelihood ratio of the grader's scores for the
    other label is tested one-sided against the same on the reference, out
    of fold, the false-alarm rate split over the two labels (OWASP LLM04,
    MITRE ATLAS AML.T0020 / AML.T0018).
    """
    calibration, frame, probabilities = _graded(table, grader)
    labels = frame["label"].to_numpy()
    found = grading.disagreements(calibration, probabilities, labels, false_alarm_rate=FALSE_ALARM_RATE)
    against = grading.evidence_against(calibration, probabilities, labels)
    metadata = {
        "most_contradicted_studies": MetadataValue.json(
            frame["study_uid"][np.argsort(-against)][:20].tolist()
        )
    }
    for d in found:
        metadata |= {f"{d.label}_{k}": v for k, v in d.test.metadata().items()}
        metadata |= {
            f"{d.label}_mean_evidence": d.mean_evidence,
            f"{d.label}_reference_mean_evidence": d.reference_mean_evidence,
        }
        metadata[f"{d.label}_design_effect"] = calibration.design_effects[d.label]
    failed = [
        f"studies {d.label.replace('_', ' ')}: mean likelihood ratio against it {d.mean_evidence:.3f}, "
        f"reference {d.reference_mean_evidence:.3f}, limit {d.reference_mean_evidence + d.test.limit:.3f}"
        for d in found
        if not d.test.passed
    ]
    return AssetCheckResult(
        passed=not failed,
        severity=AssetCheckSeverity.ERROR,
        description="; ".join(failed)
        or "No more evidence against the labels than clean ones show, for either.",
        metadata=metadata,
    )


@asset_check(
    asset=TRAINING_SET_KEY,
    name="training_label_issues",
    blocking=True,
    additional_ins={"grader": AssetIn(key=GRADER_KEY)},
)
def training_label_issues(
    context: AssetCheckExecutionContext, table: TableFile, grader: ModelDir
) -> AssetCheckResult:
    """The reference grader confidently contradicts no more of this training set's labels than of clean ones.

    Cleanlab's confident learning on each grader fold's scores (out of sample
    here, out of fold on the reference, with the confidence thresholds the
    reference set, so both shares count the same thing), the share of contradicted labels
    tested one-sided against the reference's at both sizes, overall and in
    each subgroup the grader was calibrated on (`DiagnosticSettings.subgroups`),
    so lesions of one modality relabelled normal cannot hide in the average.
    Catches flipped diagnoses and mislabelled studies whose report was forged
    to match, and names them; the grader never saw this data, so a model that
    learnt the poison cannot hide it (OWASP LLM04, MITRE ATLAS AML.T0020).
    """
    if "thresholds" not in grading.load_calibration(grader.path).label_issues:
        return AssetCheckResult(
            passed=False,
            severity=AssetCheckSeverity.ERROR,
            description="The reference grader has no label-issue reference (it predates this check's "
            "fixed thresholds): rematerialise reference_grader.",
        )
    calibration, frame, probabilities = _graded(table, grader)
    columns = list(calibration.label_issues.get("subgroups", {}))
    found = grading.label_issues(
        calibration, probabilities, frame["label"].to_numpy(), frame[columns] if columns else None,
        false_alarm_rate=FALSE_ALARM_RATE,
    )  # fmt: skip
    reference = calibration.label_issues
    failed = [s.name for s in found.subgroups if not s.test.passed]
    return AssetCheckResult(
        passed=found.passed,
        severity=AssetCheckSeverity.ERROR,
        description=(
            f"{found.share:.1%} of the labels contradicted, reference {reference['share']:.1%}, "
            f"limit {reference['share'] + found.test.limit:.1%}"
            + (f"; more than the reference's in {', '.join(failed)}" if failed else "")
        ),
        metadata={
            "issue_share": found.share,
            "reference_share": reference["share"],
            "contradicted_by_every_fold": int(found.flagged.sum()),
            **found.test.metadata(),
            "subgroups_tested": len(found.subgroups),
            "subgroups_failed": MetadataValue.json(failed),
            "subgroups": MetadataValue.md(subgroup_table(found.subgroups, "contradicted")),
            "unseen_subgroups": MetadataValue.json(found.unseen_subgroups),
            "examples": MetadataValue.json(frame["study_uid"][found.flagged][:20].tolist()),
        },
    )


def _graded(table: TableFile, grader: ModelDir) -> tuple[grading.Calibration, pd.DataFrame, np.ndarray]:
    """The grader's calibration, the training set's studies (with the subgroup columns the grader
    was calibrated on), and each fold's lesion probability for them."""
    model, calibration = grading.load_grader(grader.path)
    subgroups = list(calibration.label_issues.get("subgroups", {}))
    frame = pd.read_parquet(table.path, columns=["study_uid", "label", "image", *subgroups])
    return calibration, frame, model.fold_probabilities(image_array(frame))


defs = Definitions(
    assets=[reference_grader], asset_checks=[labels_agree_with_reference_grader, training_label_issues]
)
