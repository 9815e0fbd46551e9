"""The security checklist as data, and a `controls` view per example built from the instance's check results.

`CHECKLIST` holds the checklist's 24 items in order (`docs/threat-model.md`
explains each): per example, the asset checks that report the item, and the
modules that enforce what no check records. `controls_view(example)` is the
asset that shows, for each item, those checks' severity and their last
evaluation as the Dagster instance recorded it.
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial

from dagster import (
    AssetCheckKey,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    MaterializeResult,
    MetadataValue,
    asset,
)
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecord

from assets.checks.markdown import markdown_table

OWNER = "team:security"
EXAMPLES = ("ecommerce", "healthcare")
NEVER = "never evaluated"


@dataclass(frozen=True)
class Coverage:
    """How one example meets a checklist item: asset checks, and modules enforcing what no check records."""

    checks: tuple[AssetCheckKey, ...] = ()
    in_code: str = ""  # e.g. "resources/store.py"; empty when the checks cover the whole item

    def describe(self, severity: Mapping[AssetCheckKey, str]) -> str:
        """The checks as `asset:check`, WARN ones marked, then the enforcing modules."""
        names = [f"{_name(key)} (WARN)" if severity[key] == "WARN" else _name(key) for key in self.checks]
        return "; ".join([*names, *([f"enforced in code: {self.in_code}"] if self.in_code else [])])


@dataclass(frozen=True)
class Control:
    """One checklist item: its lifecycle stage, its wording, and how each example covers it."""

    stage: str
    item: str
    coverage: Mapping[str, Coverage]


def _coverage(example: str, checks: Mapping[str, Sequence[str]], in_code: str = "") -> Coverage:
    """`checks` maps a check name to the assets of `example` it runs on."""
    keys = (
        AssetCheckKey(AssetKey([example, asset]), name) for name, assets in checks.items() for asset in assets
    )
    return Coverage(tuple(keys), in_code)


def _both(checks: Mapping[str, Sequence[str]], in_code: str = "") -> dict[str, Coverage]:
    """The same checks, on assets of the same names, in both examples."""
    return {example: _coverage(example, checks, in_code) for example in EXAMPLES}


def _on(check: str, assets: Mapping[str, str]) -> dict[str, Coverage]:
    """One check, on each example's own asset (`assets` maps an example to its asset's name)."""
    return {example: _coverage(example, {check: [asset]}) for example, asset in assets.items()}


def _each(ecommerce: Coverage, healthcare: Coverage) -> dict[str, Coverage]:
    """Each example's own coverage."""
    return {"ecommerce": ecommerce, "healthcare": healthcare}


_ecommerce = partial(_coverage, "ecommerce")
_healthcare = partial(_coverage, "healthcare")

E_COLLECTED = ("activity_events", "product_reviews")
E_FEEDBACK = ("feedback_events", "feedback_reviews")
E_PROCESSED = ("sessions", "interactions", "scored_reviews", "item_features")
H_COLLECTED = ("imaging_studies", "clinical_notes")
H_FEEDBACK = ("feedback_studies", "feedback_notes")
H_PROCESSED = ("study_images", "note_findings")
MODEL = {"ecommerce": "recommender_model", "healthcare": "diagnostic_model"}
DRIFT_REPORT = {"ecommerce": "feedback_drift", "healthcare": "metadata_drift"}
AUDITS = {"store_matches_ledger": ["integrity_audit"], "ledger_chain_intact": ["integrity_audit"]}
RELEASE = {"release_loads_securely": ["champion_model"]}
PROVENANCE = _each(
    _ecommerce({"provenance_recorded": E_PROCESSED}), _healthcare({"provenance_recorded": H_PROCESSED})
)
LOAD_TIME = "resources/io_managers.py (load-time digest refusal)"

CHECKLIST: tuple[Control, ...] = (
    Control(
        "collection",
        "validate and sanitise all incoming data",
        _each(
            _ecommerce(
                {"records_accounted": E_COLLECTED, "expectations_met": E_COLLECTED},
                "domain/ecommerce/records.py, assets/batches.py (per-record quarantine)",
            ),
            _healthcare(
                {
                    "records_accounted": H_COLLECTED,
                    "expectations_met": H_COLLECTED,
                    "studies_deidentified": ["imaging_studies", "feedback_studies"],
                },
                "domain/healthcare/dicom.py, deidentify.py, text_phi.py (per-record quarantine)",
            ),
        ),
    ),
    Control(
        "collection",
        "authenticate and rate-limit sources",
        _each(
            _ecommerce(
                {
                    "batches_authenticated": E_COLLECTED + E_FEEDBACK,
                    "sources_within_rate_limits": E_COLLECTED + E_FEEDBACK,
                }
            ),
            _healthcare(
                {
                    "batches_authenticated": H_COLLECTED + H_FEEDBACK,
                    "sources_within_rate_limits": H_COLLECTED + H_FEEDBACK,
                }
            ),
        ),
    ),
    Control(
        "collection",
        "monitor anomalous patterns, sudden shifts",
        _each(
            _ecommerce(
                {
                    "volume_within_baseline": E_COLLECTED,
                    "new_accounts_within_baseline": E_COLLECTED,
                    "no_near_duplicate_burst": ["product_reviews"],
                    "no_item_push": ["activity_events"],
                    "event_type_shares_stable": ["activity_events", "feedback_events"],
                    "rating_shares_stable": ["product_reviews"],
                }
            ),
            _healthcare(
                {
                    "volume_within_baseline": H_COLLECTED,
                    "modality_shares_stable": ["imaging_studies"],
                    "label_mismatches_within_baseline": ["clinical_notes"],
                    "label_share_within_baseline": ["clinical_notes"],
                }
            ),
        ),
    ),
    Control(
        "collection",
        "log provenance and source metadata",
        _each(
            _ecommerce({"provenance_recorded": E_PROCESSED}, "assets/batches.py (per-batch ledger entries)"),
            _healthcare({"provenance_recorded": H_PROCESSED}, "assets/batches.py (per-batch ledger entries)"),
        ),
    ),
    Control("storage", "least-privilege access", _both({}, "resources/store.py (StoreAccessError)")),
    Control("storage", "encryption at rest and in transit", _both({}, "resources/segmented_aead.py")),
    Control(
        "storage",
        "monitor unauthorised changes",
        _each(
            _ecommerce({"stored_digest_matches_ledger": E_COLLECTED + E_PROCESSED, **AUDITS}, LOAD_TIME),
            _healthcare(
                {"stored_digest_matches_ledger": (*H_COLLECTED, *H_PROCESSED, "training_set"), **AUDITS},
                LOAD_TIME,
            ),
        ),
    ),
    Control(
        "storage", "avoid insecure deserialisation", _both(RELEASE, "resources/io_managers.py, loader.py")
    ),
    Control(
        "processing",
        "secure processing scripts and Spark jobs",
        PROVENANCE,
    ),
    Control(
        "processing",
        "integrity checks between stages",
        _each(
            _ecommerce(
                {"stored_digest_matches_ledger": E_PROCESSED, "expectations_met": E_PROCESSED}, LOAD_TIME
            ),
            _healthcare(
                {
                    "stored_digest_matches_ledger": (*H_PROCESSED, "training_set"),
                    "expectations_met": (*H_PROCESSED, "training_set"),
                },
                LOAD_TIME,
            ),
        ),
    ),
    Control(
        "processing",
        "restrict modification rights to transformation logic",
        _both({}, "resources/code_approval.py (CodeNotApproved)"),
    ),
    Control(
        "processing",
        "version data and code",
        PROVENANCE,
    ),
    Control(
        "modeling",
        "validate training data distributions",
        _each(
            _ecommerce(
                {
                    "label_balance_matches_reference": ["training_interactions", "feedback_interactions"],
                    "distribution_matches_reference": ["training_interactions", "feedback_interactions"],
                    "sentiment_label_issues": ["scored_reviews"],
                }
            ),
            _healthcare(
                {
                    "training_label_issues": ["training_set"],
                    "expectations_met": ["training_set"],
                    "label_share_within_baseline": ["clinical_notes", "feedback_notes"],
                    "label_shares_within_baseline": ["study_images", "training_set"],
                    "patients_in_one_split": ["study_images"],
                }
            ),
        ),
    ),
    Control(
        "modeling",
        "test for unexpected behaviour and backdoors",
        _each(
            _ecommerce(
                {
                    "beats_popularity_baseline": ["recommender_model"],
                    "shilling_sensitivity_within_limit": ["recommender_model"],
                }
            ),
            _healthcare(
                {
                    "labels_agree_with_reference_grader": ["training_set"],
                    "no_backdoor_in_training_data": ["diagnostic_model"],
                    "meets_clinical_minimums": ["diagnostic_model"],
                }
            ),
        ),
    ),
    Control("modeling", "track training inputs and configuration", _on("training_run_tracked", MODEL)),
    Control(
        "modeling",
        "adversarial and robustness testing",
        _each(
            _ecommerce({"shilling_sensitivity_within_limit": ["recommender_model"]}),
            _healthcare({"robust_to_fgsm": ["diagnostic_model"]}),
        ),
    ),
    Control("deployment", "verify artifact integrity", _both(RELEASE)),
    Control("deployment", "secure model loading", _both(RELEASE, "resources/loader.py (at server start)")),
    Control(
        "deployment",
        "restrict who can update deployed models",
        _both({**RELEASE, "retraining_audit_clean": ["retraining_audit"]}),
    ),
    Control("deployment", "isolate model execution", _both({}, "serving/worker.py")),
    Control("monitoring", "data and concept drift", _on("drift_below_error", DRIFT_REPORT)),
    Control(
        "monitoring",
        "validate feedback before retraining",
        _each(
            _ecommerce(
                {
                    "batches_authenticated": E_FEEDBACK,
                    "sources_within_rate_limits": E_FEEDBACK,
                    "records_accounted": E_FEEDBACK,
                    "volume_within_baseline": ["feedback_events"],
                    "new_accounts_within_baseline": ["feedback_events"],
                    "no_item_push": ["feedback_events"],
                    "event_type_shares_stable": ["feedback_events"],
                    "no_near_duplicate_burst": ["feedback_reviews"],
                    "distribution_matches_reference": ["feedback_interactions"],
                }
            ),
            _healthcare(
                {
                    "batches_authenticated": H_FEEDBACK,
                    "sources_within_rate_limits": H_FEEDBACK,
                    "records_accounted": H_FEEDBACK,
                    "volume_within_baseline": ["feedback_studies"],
                    "studies_deidentified": ["feedback_studies"],
                    "label_mismatches_within_baseline": ["feedback_notes"],
                    "label_share_within_baseline": ["feedback_notes"],
                    "feedback_within_training_distribution": ["feedback_images"],
                    "no_out_of_distribution_studies": ["training_set"],
                }
            ),
        ),
    ),
    Control(
        "monitoring",
        "separate trusted and untrusted retraining data",
        _each(
            _ecommerce(
                {
                    "untrusted_share_within_cap": ["training_interactions"],
                    "drift_below_error": ["feedback_drift"],
                    "not_worse_than_champion": ["recommender_model"],
                }
            ),
            _healthcare(
                {
                    "untrusted_share_within_cap": ["training_set"],
                    "drift_below_error": ["metadata_drift"],
                    "not_worse_than_champion": ["diagnostic_model"],
                }
            ),
        ),
    ),
    Control(
        "monitoring",
        "audit retraining regularly",
        _each(
            _ecommerce(
                {
                    "retraining_audit_clean": ["retraining_audit"],
                    **AUDITS,
                    "not_worse_than_champion": ["recommender_model"],
                }
            ),
            _healthcare(
                {
                    "retraining_audit_clean": ["retraining_audit"],
                    **AUDITS,
                    "not_worse_than_champion": ["diagnostic_model"],
                }
            ),
        ),
    ),
)


def listed_checks(example: str) -> list[AssetCheckKey]:
    """Every check the checklist names for `example`, once each, in checklist order."""
    return list(dict.fromkeys(key for control in CHECKLIST for key in control.coverage[example].checks))


def _name(key: AssetCheckKey) -> str:
    return f"{key.asset_key.path[-1]}:{key.name}"


@dataclass(frozen=True)
class Evaluation:
    """A check's last evaluation as the instance recorded it."""

    passed: bool
    at: str  # UTC, ISO 8601
    run_id: str

    @classmethod
    def of(cls, record: AssetCheckExecutionRecord) -> "Evaluation":
        at = datetime.fromtimestamp(record.event.timestamp, UTC).isoformat(timespec="seconds")
        return cls(record.evaluation.passed, at, record.run_id)

    @property
    def result(self) -> str:
        return "passed" if self.passed else "failed"

    @property
    def run(self) -> str:
        """A link to the run in the UI; a check reported outside a run has none."""
        return f"[{self.run_id[:8]}](/runs/{self.run_id})" if self.run_id else "(no run)"


def _outcome(keys: Sequence[AssetCheckKey], last: Mapping[AssetCheckKey, Evaluation]) -> str:
    """An item's result: passed only when every one of its checks last passed."""
    if not keys:
        return "not a check"
    failed = [_name(key) for key in keys if key in last and not last[key].passed]
    unevaluated = sum(key not in last for key in keys)
    if failed:
        return f"failed: {', '.join(failed)}"
    if unevaluated == len(keys):
        return NEVER
    return "passed" if not unevaluated else f"passed; {unevaluated} of {len(keys)} {NEVER}"


def _severities(keys: Iterable[AssetCheckKey], severity: Mapping[AssetCheckKey, str]) -> str:
    return ", ".join(dict.fromkeys(severity[key] for key in keys)) or "-"


def items_table(
    example: str, severity: Mapping[AssetCheckKey, str], last: Mapping[AssetCheckKey, Evaluation]
) -> str:
    """One row per checklist item: its checks, their severity, and the newest of their evaluations."""
    rows = []
    for number, control in enumerate(CHECKLIST, 1):
        coverage = control.coverage[example]
        newest = max((last[k] for k in coverage.checks if k in last), key=lambda e: e.at, default=None)
        rows.append(
            [
                number,
                control.stage,
                control.item,
                coverage.describe(severity),
                _severities(coverage.checks, severity),
                _outcome(coverage.checks, last),
                newest.at if newest else "-",
                newest.run if newest else "-",
            ]
        )
    columns = [
        "#",
        "stage",
        "checklist item",
        "check(s)",
        "severity",
        "last result",
        "last evaluated (UTC)",
        "run",
    ]
    return markdown_table(columns, rows, text_columns=len(columns))


def checks_table(
    example: str, severity: Mapping[AssetCheckKey, str], last: Mapping[AssetCheckKey, Evaluation]
) -> str:
    """One row per check: the checklist items it reports, and its own last evaluation."""
    rows = []
    for key in listed_checks(example):
        items = [str(n) for n, control in enumerate(CHECKLIST, 1) if key in control.coverage[example].checks]
        evaluation = last.get(key)
        rows.append(
            [
                _name(key),
                severity[key],
                ", ".join(items),
                evaluation.result if evaluation else NEVER,
                evaluation.at if evaluation else "-",
                evaluation.run if evaluation else "-",
            ]
        )
    columns = ["check", "severity", "checklist items", "last result", "evaluated (UTC)", "run"]
    return markdown_table(columns, rows, text_columns=len(columns))


def controls_key(example: str) -> AssetKey:
    return AssetKey([example, "controls"])


def controls_view(example: str, checks: Iterable[AssetCheckSpec]) -> AssetsDefinition:
    """`example`'s `controls` asset over the `checks` its location defines, each check's last evaluation
    read from the instance when it runs."""
    defined = {spec.key: spec for spec in checks}

    # The in-process executor runs the highest priority first: in the audit job this view comes last,
    # after the audit's own checks have been evaluated.
    @asset(
        key=controls_key(example),
        group_name="security",
        owners=[OWNER],
        kinds={"python"},
        op_tags={"dagster/priority": "-1"},
    )
    def controls(context: AssetExecutionContext) -> MaterializeResult:
        """The security checklist's 24 items, each with its checks' severity and last evaluation.

        Protects against a control silently switched off, or never evaluated,
        going unnoticed: every result comes from the check evaluations the
        Dagster instance recorded, never from this code, so a check that did
        not run shows as "never evaluated" and a failed one as failed. It
        fails only if the checklist names a check this location does not define.
        """
        keys = listed_checks(example)
        undefined = [key.to_user_string() for key in keys if key not in defined]
        if undefined:
            raise LookupError(
                f"assets/controls.py's CHECKLIST names checks that {example} does not define: "
                f"{', '.join(undefined)}. Correct the CHECKLIST entry, or restore the check it names."
            )
        severity = {key: "ERROR" if defined[key].blocking else "WARN" for key in keys}
        summaries = context.instance.event_log_storage.get_asset_check_summary_records(keys)
        last = {
            key: Evaluation.of(summary.last_completed_check_execution_record)
            for key, summary in summaries.items()
            if summary.last_completed_check_execution_record
        }
        failed = sum(not evaluation.passed for evaluation in last.values())
        return MaterializeResult(
            metadata={
                "controls": MetadataValue.md(items_table(example, severity, last)),
                "checks": MetadataValue.md(checks_table(example, severity, last)),
                "items": len(CHECKLIST),
                "checks_passed": len(last) - failed,
                "checks_failed": failed,
                "checks_never_evaluated": len(keys) - len(last),
            }
        )

    return controls
