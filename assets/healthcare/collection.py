"""Collection: signed DICOM and report batches in, validated and de-identified tables out.

Two sources deliver signed file batches: the imaging archive (DICOM
studies) and the records system (XML reports with a coded label per study).
Each collection asset authenticates every batch, neutralises, validates and
de-identifies every file, quarantines what fails with a reason (never its
content), records each batch in the provenance ledger and compares the
window with the trusted baseline. The checks here stop the lifecycle
before processing when any of that fails.
"""

from collections.abc import Callable

import pandas as pd
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    Definitions,
    Failure,
    MetadataValue,
    ResourceParam,
    asset,
    asset_check,
)

from assets.batches import batch_recorder, finish_intake, replay_guard
from assets.checks.evidence import intake_report
from assets.checks.integrity import stored_digest_check
from assets.checks.schema import expectation_check
from assets.checks.sources import mix_check, source_checks, volume_check
from domain.accounting import IntakeReport, IntakeResult
from domain.distribution import DEFAULT_FALSE_ALARM_RATE, effective_size, share_shift
from domain.healthcare import ood
from domain.healthcare.deidentify import stored_study_problems
from domain.healthcare.expectations import NOTES_SUITE, STUDIES_SUITE
from domain.healthcare.file_batches import DICOM_TOPIC, NOTES_TOPIC, collect_notes, collect_studies
from domain.subgroups import label_shares
from resources.integrity import IntegrityLedger
from resources.keys import KeyProvider
from resources.scratch import ScratchSpace
from resources.sources import SourceRegistry
from resources.store import ArtifactStore
from resources.tables import TableFile
from resources.trust_store import TrustStore

STUDIES_KEY = AssetKey(["healthcare", "imaging_studies"])
NOTES_KEY = AssetKey(["healthcare", "clinical_notes"])
REFERENCE_STUDIES_KEY = AssetKey(["healthcare", "reference_studies"])
REFERENCE_NOTES_KEY = AssetKey(["healthcare", "reference_notes"])
BASELINE_KEY = AssetKey(["healthcare", "trusted_baseline"])
OWNER = "team:clinical-data"
PSEUDONYM_KEY_NAME = "pseudonym"  # names the keyed-pseudonym secret; only collection asks for it
FALSE_ALARM_RATE = DEFAULT_FALSE_ALARM_RATE  # per check, on clean data: the calibrated limits' one knob
# Label shares are kept per value of these acquisition columns; the subgroup checks
# (`DiagnosticSettings.subgroups`) test any of them. De-identification keeps no site,
# scanner, sex or age unless configured to (`retain_patient_characteristics`).
BASELINE_SUBGROUPS = ("modality", "body_part")

Collector = Callable[..., IntakeResult]
COLLECTORS: dict[str, tuple[str, Collector]] = {
    "studies": (DICOM_TOPIC, collect_studies),
    "notes": (NOTES_TOPIC, collect_notes),
}


def collect_window(
    context: AssetExecutionContext,
    window: str,
    kind: str,
    sources: SourceRegistry,
    key_provider: KeyProvider,
    ledger: IntegrityLedger,
    trust_store: ResourceParam[TrustStore],
    store: ArtifactStore,
    scratch: ScratchSpace,
) -> tuple[TableFile, IntakeResult]:
    """Collect one landing window (`reference`, `inbox`, `feedback`) of studies or notes."""
    topic, collect = COLLECTORS[kind]
    inbox = sources.landing_dir() / window
    dest = scratch.path(f"{context.asset_key.path[-1]}.parquet")
    result = collect(
        sources,
        inbox,
        dest,
        key_provider.secret(PSEUDONYM_KEY_NAME),
        replays=replay_guard(ledger, trust_store),
        on_batch=batch_recorder(context, ledger, sources, f"healthcare/batches/{topic}"),
    )
    finish_intake(context, result, inbox, topic, sources.retention, store, ledger, trust_store)
    return TableFile(path=dest, rows=result.accepted), result


def window_asset(key: AssetKey, *, group: str, window: str, kind: str, description: str):
    """An asset collecting one landing window of studies or notes through every intake control.

    The `reference` window is the human-reviewed yardstick: it is refused
    unless every batch authenticates and every file is valid (reports that
    disagree with their label occur naturally; their rate is part of the baseline).
    """

    @asset(
        key=key,
        group_name=group,
        kinds={"pydicom" if kind == "studies" else "xml", "parquet"},
        owners=[OWNER],
        description=description,
    )
    def _asset(
        context: AssetExecutionContext,
        sources: SourceRegistry,
        key_provider: KeyProvider,
        ledger: IntegrityLedger,
        trust_store: ResourceParam[TrustStore],
        store: ArtifactStore,
        scratch: ScratchSpace,
    ) -> TableFile:
        table, result = collect_window(
            context, window, kind, sources, key_provider, ledger, trust_store, store, scratch
        )
        unexpected = {r: n for r, n in result.reasons().items() if r != "label mismatch"}
        if window == "reference" and (not table.rows or unexpected):
            raise Failure(
                f"The reference window of {kind} is not clean ({table.rows} accepted, quarantined: "
                f"{result.reasons()}). A trusted reference must come from authenticated, valid data: "
                "regenerate it with `make data`."
            )
        return table

    return _asset


reference_studies = window_asset(
    REFERENCE_STUDIES_KEY,
    group="collection",
    window="reference",
    kind="studies",
    description="De-identified studies of the human-reviewed reference window: the yardstick for volume, "
    "modality mix and metadata drift. Refused unless every batch authenticates and every file is valid.",
)
reference_notes = window_asset(
    REFERENCE_NOTES_KEY,
    group="collection",
    window="reference",
    kind="notes",
    description="De-identified reports and labels of the reference window: the yardstick for label balance "
    "and the natural rate of report/label disagreements.",
)


@asset(
    key=BASELINE_KEY,
    ins={"studies": AssetIn(key=REFERENCE_STUDIES_KEY), "notes": AssetIn(key=REFERENCE_NOTES_KEY)},
    group_name="collection",
    io_manager_key="json_io_manager",
    kinds={"python", "json"},
    owners=[OWNER],
)
def trusted_baseline(context: AssetExecutionContext, studies: TableFile, notes: TableFile) -> dict:
    """Per-source volumes and profiles of the reference window that every new window is compared to.

    Measured against this, never against the previous window, so a slow walk
    of small steps cannot move the yardstick.
    """
    baseline = {}
    for section, key in (("studies", REFERENCE_STUDIES_KEY), ("notes", REFERENCE_NOTES_KEY)):
        event = context.instance.get_latest_materialization_event(key)
        report = IntakeReport.from_json(event.asset_materialization.metadata["intake_report"].value)
        baseline[section] = {
            "per_source": report.per_source,
            "profile": report.profile,
            "received": report.received,
            "accepted": report.accepted,
        }
    baseline["labels"] = label_shares(_labelled_acquisitions(studies, notes), BASELINE_SUBGROUPS)
    context.add_output_metadata({"studies": studies.rows, "notes": notes.rows})
    return baseline


def _labelled_acquisitions(studies: TableFile, notes: TableFile) -> pd.DataFrame:
    """Each reference study's label with its acquisition metadata (headers only, no pixels)."""
    link = ["study_uid", "patient_pseudonym"]
    frame = pd.read_parquet(studies.path, columns=[*link, "dicom"]).merge(
        pd.read_parquet(notes.path, columns=[*link, "label"]), on=link
    )
    acquired = pd.DataFrame([ood.acquisition_from_bytes(blob) for blob in frame["dicom"]], index=frame.index)
    return pd.concat([frame[["label"]], acquired[list(BASELINE_SUBGROUPS)]], axis=1)


imaging_studies = window_asset(
    STUDIES_KEY,
    group="collection",
    window="inbox",
    kind="studies",
    description="Authenticated, validated, de-identified DICOM studies from the imaging archive. "
    "Protects against forged or replayed batches, DICOM/executable polyglots (preamble zeroed), "
    "malformed, truncated or non-image files (quarantined with reasons) and PHI leaving the trust "
    "boundary (de-identified, then searched for every original identifying value).",
)
clinical_notes = window_asset(
    NOTES_KEY,
    group="collection",
    window="inbox",
    kind="notes",
    description="Authenticated, de-identified radiology reports, each with its coded label. XML is "
    "parsed with defusedxml (entity-expansion bombs and external entities are quarantined); a report "
    "whose diagnosis contradicts its coded label is quarantined as a label mismatch.",
)


QUIET = AssetCheckResult(passed=True, description="Nothing arrived in this window.")


def label_checks(key: AssetKey) -> list:
    """Blocking checks on a notes table: label balance and report/label agreement against the baseline."""

    @asset_check(
        asset=key, name="label_mismatches_within_baseline", blocking=True,
        additional_ins={"baseline": AssetIn(key=BASELINE_KEY)},
    )  # fmt: skip
    def label_mismatches_within_baseline(
        context: AssetCheckExecutionContext, baseline: dict
    ) -> AssetCheckResult:
        """Reports that contradict their coded label stay at the reference's natural rate.

        Each mismatch is quarantined with its reason; many of them mean labels
        were flipped or mislabelled studies injected (OWASP LLM04, MITRE ATLAS AML.T0020).
        """
        report = intake_report(context, key)
        if report.received == 0:
            return QUIET
        share = report.profile.get("label_mismatch_share", 1.0)
        trusted = baseline["notes"]["profile"]["label_mismatch_share"]
        test = share_shift(
            "label_mismatch_share", trusted, baseline["notes"]["received"], share, report.received,
            one_sided=True, false_alarm_rate=FALSE_ALARM_RATE,
        )  # fmt: skip
        return AssetCheckResult(
            passed=test.passed,
            severity=AssetCheckSeverity.ERROR,
            metadata={"mismatch_share": share, "baseline_share": trusted, **test.metadata()},
        )

    @asset_check(
        asset=key, name="label_share_within_baseline", blocking=True,
        additional_ins={"baseline": AssetIn(key=BASELINE_KEY)},
    )  # fmt: skip
    def label_share_within_baseline(context: AssetCheckExecutionContext, baseline: dict) -> AssetCheckResult:
        """The share of lesion labels stays near the reference's (injected or relabelled studies move it).

        The limit is what a clean window of this many reports exceeds one time
        in a thousand, counting a patient's studies as the correlated evidence
        they are (the reference's design effect, on both sides: the window under test cannot widen
        its own limit); `label_shares_within_baseline` at processing tests each subgroup (a flip
        aimed at one modality barely moves this overall share).
        """
        report = intake_report(context, key)
        if report.received == 0:
            return QUIET
        share = report.profile.get("positive_share", -1.0)
        trusted = baseline["notes"]["profile"]
        deff = trusted.get("design_effect", 1.0)
        test = share_shift(
            "positive_share", trusted["positive_share"], effective_size(baseline["notes"]["accepted"], deff),
            share, effective_size(report.accepted, deff), false_alarm_rate=FALSE_ALARM_RATE,
        )  # fmt: skip
        return AssetCheckResult(
            passed=test.passed,
            severity=AssetCheckSeverity.ERROR,
            metadata={
                "positive_share": share, "baseline_share": trusted["positive_share"],
                "design_effect": deff, **test.metadata(),
            },
        )  # fmt: skip

    return [label_mismatches_within_baseline, label_share_within_baseline]


def deidentified_check(key: AssetKey):
    """Blocking check that a studies table holds de-identified DICOM only."""

    @asset_check(asset=key, name="studies_deidentified", blocking=True)
    def studies_deidentified(context: AssetCheckExecutionContext, table: TableFile) -> AssetCheckResult:
        """Every stored study re-parses as de-identified: marker set, no PHI attribute, zero preamble.

        The collection run already searched each file for its original PHI
        values; this re-reads what was stored, so a defect in de-identification
        or a tampered table cannot hand PHI to processing.
        """
        problems = stored_study_problems(table.path)
        return AssetCheckResult(
            passed=not problems,
            severity=AssetCheckSeverity.ERROR,
            metadata={"studies": table.rows, "problems": MetadataValue.json(problems[:20])},
        )

    return studies_deidentified


defs = Definitions(
    assets=[reference_studies, reference_notes, trusted_baseline, imaging_studies, clinical_notes],
    asset_checks=[
        *source_checks(STUDIES_KEY),
        volume_check(STUDIES_KEY, BASELINE_KEY, "studies"),
        mix_check(STUDIES_KEY, BASELINE_KEY, "studies", "modality_shares"),
        deidentified_check(STUDIES_KEY),
        expectation_check(STUDIES_KEY, STUDIES_SUITE, engine="pandas"),
        stored_digest_check(STUDIES_KEY),
        *source_checks(NOTES_KEY),
        volume_check(NOTES_KEY, BASELINE_KEY, "notes"),
        *label_checks(NOTES_KEY),
        expectation_check(NOTES_KEY, NOTES_SUITE, engine="pandas"),
        stored_digest_check(NOTES_KEY),
    ],
)
