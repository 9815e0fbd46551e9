"""Who lives in the shop: users and items with latent taste vectors.

`build_population` draws the users (taste, heavy-tailed activity, platform,
account age: mostly months to years, about 2 % opened inside period 0) and the
items (category, price, Zipf-like popularity, a character near their
category's centroid) from the seed and sizes only, so every period of one
configuration sees the same population; `Population.affinity` is how much a
user likes an item, which drives choices, the funnel and ratings.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from examples.ecommerce.world.config import MS_PER_DAY, WorldConfig, epoch_ms, random_stream

LATENT_DIM = 8
POPULARITY_EXPONENT = 0.8  # Zipf exponent of item popularity
NEW_ACCOUNT_SHARE = 0.02
WEB_SHARE = 0.6
PLATFORMS = ("web", "mobile")

# (category, base price): the category words appear in reviews
CATEGORIES = (
    ("headphones", 79.0),
    ("kettle", 35.0),
    ("backpack", 55.0),
    ("desk lamp", 30.0),
    ("running shoes", 90.0),
    ("blender", 60.0),
    ("phone case", 15.0),
    ("coffee grinder", 45.0),
    ("yoga mat", 25.0),
    ("smartwatch", 180.0),
    ("board game", 30.0),
    ("water bottle", 18.0),
)


@dataclass(frozen=True, eq=False)
class Population:
    """Who lives in the shop: the same in every period of one seed."""

    user_vectors: np.ndarray  # (users, LATENT_DIM) taste
    user_activity: np.ndarray  # relative activity level (heavy-tailed)
    user_platform: np.ndarray  # index into PLATFORMS
    user_created_ms: np.ndarray  # account creation, ms since epoch
    item_vectors: np.ndarray  # (items, LATENT_DIM) character
    item_category: np.ndarray  # index into CATEGORIES
    item_price: np.ndarray  # 2 decimals, positive
    item_popularity: np.ndarray  # probabilities, Zipf-like

    def affinity(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """How much each user likes the paired item (about standard normal)."""
        dot = np.einsum("nd,nd->n", self.user_vectors[users], self.item_vectors[items])
        return dot / np.sqrt(LATENT_DIM)


def build_population(cfg: WorldConfig) -> Population:
    """Draw users and items; depends on the seed and sizes only, never on the period."""
    rng = random_stream(cfg.seed, "population")
    n_users, n_items = cfg.n_users, cfg.n_items
    centroids = rng.normal(size=(len(CATEGORIES), LATENT_DIM))
    category = rng.integers(len(CATEGORIES), size=n_items)
    item_vectors = 0.8 * centroids[category] + 0.6 * rng.normal(size=(n_items, LATENT_DIM))
    base_price = np.array([price for _, price in CATEGORIES])[category]
    price = np.floor(base_price * rng.lognormal(0.0, 0.35, size=n_items)) + 0.99
    rank = rng.permutation(n_items) + 1.0
    popularity = rank**-POPULARITY_EXPONENT
    return Population(
        user_vectors=rng.normal(size=(n_users, LATENT_DIM)),
        user_activity=rng.lognormal(0.0, 1.0, size=n_users),
        user_platform=(rng.random(n_users) >= WEB_SHARE).astype(np.int8),
        user_created_ms=_account_creation(cfg, rng),
        item_vectors=item_vectors,
        item_category=category,
        item_price=np.round(price, 2),
        item_popularity=popularity / popularity.sum(),
    )


def _account_creation(cfg: WorldConfig, rng: np.random.Generator) -> np.ndarray:
    """Account ages: mostly months to years; a few opened inside period 0."""
    start_ms = epoch_ms(cfg.start)
    age_days = np.clip(rng.lognormal(np.log(400.0), 0.9, size=cfg.n_users), 1.0, 3650.0)
    created = start_ms - (age_days * MS_PER_DAY).astype(np.int64)
    is_new = rng.random(cfg.n_users) < NEW_ACCOUNT_SHARE
    inside = start_ms + (rng.random(cfg.n_users) * 0.9 * cfg.days * MS_PER_DAY).astype(np.int64)
    return np.where(is_new, inside, created)
