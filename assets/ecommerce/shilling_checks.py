"""Blocking checks aimed at shilling campaigns on the e-commerce collection assets.

Fake accounts show up as a jump in the share of activity from young
accounts; templated reviews as bursts of near-identical texts on one item.
"""

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetIn,
    AssetKey,
    asset_check,
)

from assets.checks.evidence import intake_report
from assets.checks.sources import volume_check

MAX_NEW_ACCOUNT_EXCESS = 0.05


def baseline_checks(key: AssetKey, baseline: AssetKey, section: str) -> list[AssetChecksDefinition]:
    """Volume and new-account share against the trusted baseline.

    `section` names the profile's part of the baseline ("activity" or "reviews").
    """

    @asset_check(
        asset=key,
        name="new_accounts_within_baseline",
        blocking=True,
        additional_ins={"baseline": AssetIn(key=baseline)},
    )
    def new_accounts_within_baseline(context: AssetCheckExecutionContext, baseline: dict) -> AssetCheckResult:
        """The share of activity from accounts younger than a week stays near its baseline.

        Shilling campaigns run on freshly created accounts.
        """
        share = intake_report(context, key).profile.get("new_account_share", 0.0)
        trusted = baseline[section]["profile"]["new_account_share"]
        limit = trusted + max(MAX_NEW_ACCOUNT_EXCESS, trusted)
        return AssetCheckResult(
            passed=share <= limit,
            severity=AssetCheckSeverity.ERROR,
            metadata={"new_account_share": share, "baseline_share": trusted, "limit": limit},
        )

    return [volume_check(key, baseline, section), new_accounts_within_baseline]


def near_duplicate_check(key: AssetKey, baseline: AssetKey) -> AssetChecksDefinition:
    """Blocking check for bursts of near-identical reviews on one item (copy-paste campaigns)."""

    @asset_check(
        asset=key,
        name="no_near_duplicate_burst",
        blocking=True,
        additional_ins={"baseline": AssetIn(key=baseline)},
    )
    def no_near_duplicate_burst(context: AssetCheckExecutionContext, baseline: dict) -> AssetCheckResult:
        """No item received a burst of near-identical reviews beyond what the baseline shows.

        Copy-paste review campaigns (shilling) vary a word or two per review;
        MinHash over word shingles groups them per item.
        """
        profile = intake_report(context, key).profile
        largest = profile.get("largest_near_duplicate_cluster", 0)
        trusted = baseline["reviews"]["profile"]["largest_near_duplicate_cluster"]
        limit = max(2 * trusted, trusted + 5)
        return AssetCheckResult(
            passed=largest <= limit,
            severity=AssetCheckSeverity.ERROR,
            metadata={
                "largest_cluster": largest,
                "item": profile.get("largest_cluster_item", ""),
                "baseline_largest": trusted,
                "limit": limit,
            },
        )

    return no_near_duplicate_burst
