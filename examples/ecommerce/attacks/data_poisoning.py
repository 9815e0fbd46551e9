"""ATTACK SIMULATION — data poisoning: a shilling campaign for one unpopular item.

Fake accounts, opened in the days before, each view, add to cart and buy the
target item and leave it a five-star review written from the same template.
The sources are honest: they sign what the fake users did.
"""

from datetime import UTC, datetime, timedelta

from examples.attacks.lab import Scenario
from examples.ecommerce.attacks.harm import exposure_lift
from examples.ecommerce.shop import Shop
from examples.ecommerce.sources import iso_z

TARGET_ITEM = "i000003"
FAKE_ACCOUNT_SHARE = 0.03  # of the window's users
PRAISE = ["amazing", "fantastic", "incredible", "superb", "wonderful"]


def _campaign(shop: Shop, share: float) -> tuple[list[dict], list[dict]]:
    real = shop.payloads("user-activity")
    review = shop.payloads("product-reviews", limit=1)[0]
    accounts = max(10, int(share * len({p["user_id"] for p in real})))
    events, reviews = [], []
    for n in range(accounts):
        template = real[(n * 97) % len(real)]
        start = datetime.fromisoformat(template["event_time"])
        user = f"u{8_500_000 + n}"
        opened = (start - timedelta(days=2)).astimezone(UTC).strftime("%Y-%m-%d")
        for step, kind in enumerate(("view", "add_to_cart", "purchase")):
            events.append(
                {
                    **template,
                    "event_id": f"shill{n:06d}{step}",
                    "event_type": kind,
                    "user_id": user,
                    "item_id": TARGET_ITEM,
                    "session_id": f"shill-{n}",
                    "event_time": iso_z(start + timedelta(seconds=40 * step)),
                    "account_created": opened,
                }
            )
        reviews.append(
            {
                **review,
                "review_id": f"r-shill-{n}",
                "user_id": user,
                "item_id": TARGET_ITEM,
                "rating": 5,
                "title": "Best purchase ever",
                "text": f"Absolutely {PRAISE[n % 5]} product, five stars, works perfectly, "
                "buy it now you will not regret it",
                "review_time": iso_z(start + timedelta(minutes=5)),
                "account_created": opened,
            }
        )
    return events, reviews


def mount(shop: Shop, share: float = FAKE_ACCOUNT_SHARE) -> None:
    """Land the campaign, `share` fake accounts of the window's users, and run the lifecycle over it."""
    events, reviews = _campaign(shop, share)
    shop.land("web-clickstream", events, batch_id="web-clickstream-campaign-000001")
    shop.land("reviews-service", reviews, batch_id="reviews-service-campaign-000001")
    shop.lifecycle()


SCENARIO = Scenario(
    "ecommerce/data-poisoning",
    "data poisoning",
    f"{FAKE_ACCOUNT_SHARE:.0%} fake accounts buy one item and leave it templated five-star reviews",
    mount,
    harm=exposure_lift(TARGET_ITEM),
)
