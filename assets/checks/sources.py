"""Check factories for any collection asset fed by signed source batches (both examples).

Each factory returns blocking ERROR checks: when one fails, nothing
downstream of the collected table runs. Evidence (which batches, which
sources, which reasons) goes into the check's metadata.
"""

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetIn,
    AssetKey,
    MetadataValue,
    asset_check,
)

from assets.checks.evidence import intake_report
from assets.checks.markdown import markdown_table
from domain.distribution import histogram_shift

MAX_QUARANTINE_SHARE = 0.05
MAX_VOLUME_RATIO = 5.0
WARN_PSI = 0.1  # the usual "moderate shift" mark, shown beside the calibrated limit


def source_checks(key: AssetKey, *, allow_empty: bool = False) -> list[AssetChecksDefinition]:
    """Authentication, rate limits and record accounting for one collected table.

    `allow_empty` accepts a window in which nothing arrived (feedback may be quiet).
    """

    @asset_check(asset=key, name="batches_authenticated", blocking=True)
    def batches_authenticated(context: AssetCheckExecutionContext) -> AssetCheckResult:
        """Every batch came from a registered source, signed by its key, unaltered.

        Protects against forged, unsigned and tampered batches and unknown
        sources (OWASP LLM04, MITRE ATLAS AML.T0020).
        """
        report = intake_report(context, key)
        refused = [b for b in report.refused_batches if not b["reason"].startswith("rate limit")]
        return AssetCheckResult(
            passed=report.unauthenticated_batches == 0,
            severity=AssetCheckSeverity.ERROR,
            metadata={
                "refused_batches": len(refused),
                "refusals": MetadataValue.json(refused[:20]),
                "batches_accepted": report.batches_accepted,
            },
        )

    @asset_check(asset=key, name="sources_within_rate_limits", blocking=True)
    def sources_within_rate_limits(context: AssetCheckExecutionContext) -> AssetCheckResult:
        """No source sent more records per hour than the registry allows it (flooding)."""
        report = intake_report(context, key)
        limited = [b for b in report.refused_batches if b["reason"].startswith("rate limit")]
        return AssetCheckResult(
            passed=report.rate_limited_batches == 0,
            severity=AssetCheckSeverity.ERROR,
            metadata={
                "rate_limited_batches": len(limited),
                "batches": MetadataValue.json(limited[:20]),
            },
        )

    @asset_check(asset=key, name="records_accounted", blocking=True)
    def records_accounted(context: AssetCheckExecutionContext) -> AssetCheckResult:
        """received = accepted + quarantined, and the quarantine stays a small share.

        Protects against silent loss of records and against a source that
        floods the pipeline with junk to hide or displace real data.
        """
        report = intake_report(context, key)
        received, accepted, quarantined = report.received, report.accepted, report.quarantined
        share = quarantined / received if received else 0.0
        balanced = received == accepted + quarantined
        return AssetCheckResult(
            passed=(bool(received) or allow_empty) and balanced and share <= MAX_QUARANTINE_SHARE,
            severity=AssetCheckSeverity.ERROR,
            description=None
            if received or allow_empty
            else "No records arrived: generate data with `make data`.",
            metadata={
                "received": received,
                "accepted": accepted,
                "quarantined": quarantined,
                "balanced": balanced,
                "quarantine_share": share,
                "max_quarantine_share": MAX_QUARANTINE_SHARE,
                "reasons": MetadataValue.json(report.quarantine_reasons),
            },
        )

    return [batches_authenticated, sources_within_rate_limits, records_accounted]


def volume_check(key: AssetKey, baseline: AssetKey, section: str) -> AssetChecksDefinition:
    """Blocking check of each source's volume against its rate in the trusted baseline's `section`."""

    @asset_check(
        asset=key,
        name="volume_within_baseline",
        blocking=True,
        additional_ins={"baseline": AssetIn(key=baseline)},
    )
    def volume_within_baseline(context: AssetCheckExecutionContext, baseline: dict) -> AssetCheckResult:
        """Each source's records per hour stay within a multiple of its trusted rate.

        Catches a compromised or spoofed source injecting volume (a bot farm,
        a poisoning campaign) that still fits the hard rate limit.
        """
        rates = intake_report(context, key).per_source
        trusted = baseline[section]["per_source"]
        ratios = {
            source: stats["records_per_hour"] / max(trusted.get(source, {}).get("records_per_hour", 0), 1)
            for source, stats in rates.items()
        }
        spikes = {s: r for s, r in ratios.items() if r > MAX_VOLUME_RATIO}
        return AssetCheckResult(
            passed=not spikes,
            severity=AssetCheckSeverity.ERROR,
            metadata={
                **{f"ratio_to_baseline[{source}]": float(ratio) for source, ratio in sorted(ratios.items())},
                "highest_ratio": float(max(ratios.values(), default=0.0)),
                "sources_over": MetadataValue.json(sorted(spikes)),
                "max_ratio": MAX_VOLUME_RATIO,
            },
        )

    return volume_within_baseline


def mix_check(
    key: AssetKey, baseline: AssetKey, section: str, field: str, *, blocking: bool = False
) -> AssetChecksDefinition:
    """Check that a categorical mix keeps its baseline shape, within what a clean window of its size shows.

    Calibrated like every statistical limit here (`domain.distribution`):
    PSI against the null of a window as large as this one drawn from the
    baseline's shares. `blocking` makes it stop the run (ERROR); otherwise
    it warns. The PSI rule of thumb (0.1) is kept in the metadata as context.
    """
    severity = AssetCheckSeverity.ERROR if blocking else AssetCheckSeverity.WARN

    @asset_check(
        asset=key,
        name=f"{field}_stable",
        blocking=blocking,
        additional_ins={"baseline": AssetIn(key=baseline)},
        description=f"The {field.removesuffix('_shares').replace('_', ' ')} mix stays within what a trusted "
        "window of this size shows: views turned into purchases a few points a week, injected studies of "
        "one modality or a wave of one rating move it (OWASP LLM04, MITRE ATLAS AML.T0020).",
    )
    def mix_stable(context: AssetCheckExecutionContext, baseline: dict) -> AssetCheckResult:
        report = intake_report(context, key)
        if report.accepted == 0:
            return AssetCheckResult(
                passed=True, severity=severity, description="Nothing arrived in this window."
            )
        actual = report.profile.get(field, {})
        trusted = baseline[section]["profile"]
        test = histogram_shift(field, trusted[field], trusted["rows"], actual, report.accepted)
        return AssetCheckResult(
            passed=test.passed,
            severity=severity,
            metadata={
                **test.metadata(),
                "rule_of_thumb_psi": WARN_PSI,
                **{f"share[{value}]": float(share) for value, share in sorted(actual.items())},
                "shares": MetadataValue.md(_shares_table(trusted[field], actual)),
            },
        )

    return mix_stable


def _shares_table(baseline: dict[str, float], window: dict[str, float]) -> str:
    values = sorted(set(baseline) | set(window))
    rows = ([v, f"{baseline.get(v, 0.0):.3f}", f"{window.get(v, 0.0):.3f}"] for v in values)
    return markdown_table(["value", "trusted baseline", "this window"], rows)
