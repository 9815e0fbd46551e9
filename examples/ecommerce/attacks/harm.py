"""ATTACK SIMULATION — harm: what an e-commerce attack did to the released recommender.

Measured through the released model the servers would load (signature,
digests and trust store verified), against the release the same shop trains
without the attack, over the real users both know.
"""

from __future__ import annotations

from domain.ecommerce.ranking_metrics import exposed_users
from domain.ecommerce.recommender import IdIndex
from domain.ecommerce.release import ARCHITECTURES, MODEL_NAME
from examples.attacks.harm import Effect, HarmProbe, paired_effect, released_model
from examples.ecommerce.attacks.pipeline import one_release
from examples.ecommerce.shop import Shop


def exposure_lift(item: str) -> HarmProbe:
    """Real users shown `item` in their top-10 by the attacked release and not by the clean one, net."""

    def effect(attacked: Shop, clean: Shop | None) -> Effect:
        models = [released_model(shop, MODEL_NAME, ARCHITECTURES) for shop in (clean, attacked)]
        indexes = [IdIndex.from_dict(model.config["id_index"]) for model in models]
        users = sorted(set(indexes[0].users) & set(indexes[1].users))  # the fake accounts are not users
        shown = [exposed_users(m.module, i, item, users) for m, i in zip(models, indexes, strict=True)]
        return paired_effect(f"exposure of {item}", ~shown[0], ~shown[1])

    return HarmProbe(f"real users newly shown {item} in their top-10", effect, one_release)
