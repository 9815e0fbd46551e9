"""Processing controls: approved code only, verified inputs, versioned outputs.

One clean run of the whole lifecycle is shared by the tests that only read
its results; tests that attack it work on their own pipeline instance.
"""

import pytest
import sqlalchemy as sa
from dagster import AssetKey

from domain.ecommerce import transforms
from examples.attacks.storage import flip_a_byte
from examples.ecommerce.attacks.processing_manipulation import biased_build_interactions
from examples.ecommerce.shop import Shop
from examples.runs import checks, materialized, metadata
from resources.code_approval import code_digest
from resources.digests import digest_file

pytestmark = pytest.mark.slow

COLLECTION = ["ecommerce/activity_events", "ecommerce/product_reviews"]
PROCESSING = [
    *COLLECTION,
    *(f"ecommerce/{name}" for name in ("sessions", "interactions", "scored_reviews", "item_features")),
]


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> tuple[Shop, object]:
    home = tmp_path_factory.mktemp("clean") / "home"
    shop = Shop(home)
    result = shop.run_selection(PROCESSING)
    yield shop, result


def test_clean_lifecycle_publishes_every_table_with_no_failed_check(clean):
    shop, result = clean
    assert result.success
    assert {"sessions", "interactions", "scored_reviews", "item_features"} <= materialized(result)
    assert all(checks(result).values())
    sessions = metadata(result, "sessions")
    assert sessions["rows"] == metadata(result, "activity_events")["accepted"]
    entry = shop.ledger.latest("ecommerce/interactions")
    assert entry.inputs == {"ecommerce/sessions": shop.ledger.latest("ecommerce/sessions").digest}
    assert entry.code_version == code_digest(transforms.build_interactions)


def test_previous_dvc_version_restores_with_a_matching_digest(clean, tmp_path):
    shop, _ = clean
    first = shop.ledger.latest("ecommerce/sessions")
    assert shop.run_selection(["ecommerce/sessions"]).success  # a second version
    second = shop.ledger.latest("ecommerce/sessions")
    assert second.path != first.path

    versioning = shop.defs.resources["versioning"]
    restored = versioning.restore(
        first.path.replace("/", "__"), first.details["dvc_md5"], tmp_path / "restored"
    )
    assert digest_file(restored) == first.stored_digest
    # Put back where it lived (the path is bound into its encryption), it decrypts and verifies.
    shop.store.local_path(first.path).unlink()
    restored.rename(shop.store.local_path(first.path))
    table = shop.store.read_verified(first.path, digest=first.digest, stored_digest=first.stored_digest)
    assert table[:4] == b"PAR1"


def test_altered_transformation_code_refuses_to_publish(home, monkeypatch):
    shop = Shop(home)
    shop.baseline()  # taken with the approved code, before the attacker's change
    monkeypatch.setattr(transforms, "build_interactions", biased_build_interactions)
    result = shop.run_selection(["ecommerce/activity_events", "ecommerce/sessions", "ecommerce/interactions"])

    assert "sessions" in materialized(result)
    assert "interactions" not in materialized(result)
    failure = next(e for e in result.all_events if e.is_step_failure and "interactions" in e.step_key)
    assert "is not approved" in str(failure.event_specific_data.error)
    assert shop.ledger.latest("ecommerce/interactions") is None  # nothing was published


def test_changed_byte_in_a_stored_table_is_caught_on_load_and_by_the_audit(home):
    shop = Shop(home)
    assert shop.run_selection(["ecommerce/activity_events"]).success
    entry = shop.ledger.latest("ecommerce/activity_events")
    flip_a_byte(shop, "ecommerce/activity_events")

    result = shop.run_selection(["ecommerce/sessions"])
    assert "sessions" not in materialized(result)
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "changed at rest" in str(failure.event_specific_data.error)

    audit = shop.run("ecommerce_audit")
    assert checks(audit)["integrity_audit:store_matches_ledger"] is False
    assert entry.path in str(metadata(audit, "integrity_audit")["findings"]["mismatched"])


def test_rewritten_ledger_entry_is_caught_by_the_audit(home):
    shop = Shop(home)
    assert shop.run_selection(["ecommerce/activity_events"]).success
    assert checks(shop.run("ecommerce_audit"))["integrity_audit:ledger_chain_intact"]
    with shop.ledger._db().begin() as conn:
        rewrite = "UPDATE ledger_entries SET run_id = 'x' WHERE subject = 'ecommerce/activity_events'"
        conn.execute(sa.text(rewrite))
    audit = shop.run("ecommerce_audit")
    assert checks(audit)["integrity_audit:ledger_chain_intact"] is False
    assert AssetKey(["ecommerce", "integrity_audit"]) in {
        e.asset_key for e in audit.get_asset_materialization_events()
    }
