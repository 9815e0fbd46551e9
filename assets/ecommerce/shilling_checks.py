"""Blocking checks aimed at shilling campaigns on the e-commerce collection assets.

Fake accounts show up as a jump in the share of activity from young
accounts; templated reviews as bursts of near-identical texts on one item;
any campaign, old accounts and realistic profiles included, as one item
reaching more users, or more buyers, than the trusted reference allows.
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
from assets.checks.sources import volume_check
from domain.ecommerce.item_push import ItemReach, item_push_tests, read_item_reach
from resources.tables import TableFile

MAX_NEW_ACCOUNT_EXCESS = 0.05
TOP_ITEMS = 5  # items listed in the push check's metadata, worst first


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


def item_push_check(key: AssetKey, baseline: AssetKey) -> AssetChecksDefinition:
    """Blocking check that no item draws more users, or more buyers among them, than the reference allows."""

    @asset_check(
        asset=key,
        name="no_item_push",
        blocking=True,
        additional_ins={"baseline": AssetIn(key=baseline)},
    )
    def no_item_push(
        context: AssetCheckExecutionContext, table: TableFile, baseline: dict
    ) -> AssetCheckResult:
        """No item's reach (share of the window's users who touched it) or commitment (share of its
        users who carted or bought it) rises beyond what a clean window of this size shows.

        Protects against shilling that the account-age and review checks
        cannot see (OWASP LLM04 Data and Model Poisoning, MITRE ATLAS AML.T0020
        Poison Training Data): old or taken-over accounts buying one item
        without a review, fake profiles whose other items mimic real users'.
        Users are counted, not events, so one busy customer is one voice.
        Each limit comes from the share both windows would have in common if
        nothing moved, at both sizes, at a false-alarm rate of 0.1% split
        over every item and test (`domain.ecommerce.item_push`).
        """
        if intake_report(context, key).accepted == 0:
            return AssetCheckResult(passed=True, description="Nothing arrived in this window.")
        if "item_reach" not in baseline["activity"]:
            return AssetCheckResult(
                passed=False,
                severity=AssetCheckSeverity.ERROR,
                description="The trusted baseline has no per-item reach: rematerialise trusted_baseline.",
            )
        reference = ItemReach.from_dict(baseline["activity"]["item_reach"])
        current = read_item_reach(table.path)
        pushes = item_push_tests(reference, current)
        worst = pushes[0]
        top = [{"item": p.item, "passed": p.passed, "excess": round(p.excess, 4)} for p in pushes[:TOP_ITEMS]]
        return AssetCheckResult(
            passed=all(p.passed for p in pushes),
            severity=AssetCheckSeverity.ERROR,
            metadata={
                **worst.metadata(reference, current),
                "items_tested": len(pushes),
                "items_over_limit": sum(not p.passed for p in pushes),
                "top_items": MetadataValue.json(top),
            },
        )

    return no_item_push
