"""The world outside the pipeline: a deterministic synthetic e-commerce shop.

The shop has users and items with latent taste vectors, users who browse in
sessions (view, add to cart, purchase) and reviewers who rate and describe what
they bought. Everything is drawn with numpy from the seed, so the same
`WorldConfig` always produces byte-identical records, and the work is
vectorised so that a million events take seconds.

What the data is built to contain, so that the pipeline has something real to
learn and to guard:

- **Taste.** A user is shown a popularity-biased set of items and picks among
  them by softmax of user-item affinity, so choices follow
  softmax(affinity + log popularity): a matrix-factorisation recommender can
  beat a popularity baseline.
- **A funnel.** Roughly 70 % views, 20 % add-to-cart, 10 % purchases; carts
  and purchases are likelier for items the user likes.
- **Sessions.** Events of a session are 30 s to 10 min apart; sessions of one
  user are more than 30 min apart.
- **Accounts.** Most accounts are months to years old; about 2 % were opened
  inside the current window (fake accounts of a shilling attack stand out
  against that).
- **Reviews.** Reviewers rate items they interacted with, the rating follows
  affinity, and the text's sentiment follows the rating with ~8 % noise.

A world is one *period* of activity (a window of `days` days) of one fixed
*population*: `build_world(cfg, period=-1)` is the week before
`build_world(cfg)`, with the same users and items.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np

LATENT_DIM = 8
EXPOSURE = 256  # items a user is ever shown, drawn by popularity
USER_BLOCK = 2048  # users whose exposure is drawn from one RNG stream (never depends on size)
CHOICE_SHARPNESS = 2.0  # weight of affinity in a user's choice among the items shown
POPULARITY_EXPONENT = 0.8  # Zipf exponent of item popularity

CART_BIAS, CART_SLOPE = -1.9, 0.6  # logit of add-to-cart after a view
BUY_BIAS, BUY_SLOPE = -0.6, 0.5  # logit of purchase after add-to-cart
SESSION_BREAK = 0.25  # chance that an interaction opens a new session
EVENT_GAP_MS = (30_000, 600_000)  # between two events of a session
SESSION_GAP_MS = 30 * 60_000 + 1_000  # more than 30 min between sessions of a user
BUDGET_MS_PER_INTERACTION = 1_800_000  # caps heavy users so their sessions fit the window

NEW_ACCOUNT_SHARE = 0.02
WEB_SHARE = 0.6
PLATFORMS = ("web", "mobile")

RATING_SHARES = (0.10, 0.07, 0.12, 0.26, 0.45)  # J-shaped, as on real shops
RATING_NOISE = 0.6
TEXT_NOISE = 0.08  # share of reviews whose text sentiment disagrees with the rating
REVIEW_PROPENSITY = np.array([0.3, 2.0, 10.0])  # by deepest stage: view, cart, purchase
REVIEW_DELAY_MS = 36 * 3_600_000
REVIEW_ID_BASE, REVIEW_ID_STRIDE = 50_000_000, 1_000_000  # review ids unique across periods

EVENT_TYPES = ("view", "add_to_cart", "purchase")
CHUNK = 50_000  # records formatted per step by the generators
MS_PER_DAY = 86_400_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MASK48 = np.uint64((1 << 48) - 1)
_PERIOD_OFFSET = 1 << 16  # seeds must be non-negative; periods may be negative

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

# Phrase banks indexed by tone 1 (angry) .. 5 (delighted); "{cat}" is the item's category.
SENTENCES = {
    1: (
        "Terrible {cat}, it broke after {n} days.",
        "Complete waste of money.",
        "Worst {cat} I have ever bought.",
        "Do not buy this {cat}.",
        "It stopped working and support was useless.",
        "Very disappointed, I am returning it.",
        "Awful quality, cheap plastic everywhere.",
    ),
    2: (
        "Not great, the {cat} feels cheap.",
        "Disappointed with the quality.",
        "It works but it is not worth the price.",
        "The {cat} is flimsy and poorly made.",
        "Not as described and rather poor.",
        "I expected better for the money.",
    ),
    3: (
        "It is okay for the price.",
        "The {cat} does the job, nothing special.",
        "Average quality, some good points and some bad.",
        "Decent, but the finish could be better.",
        "Not bad, not great either.",
        "Fine for occasional use.",
    ),
    4: (
        "Good {cat}, it works well.",
        "Pretty happy with it overall.",
        "Solid build and good value.",
        "Not bad at all for the money.",
        "Does what it says, I would recommend it.",
        "Nice {cat}, and it arrived quickly.",
    ),
    5: (
        "Excellent {cat}, I love it!",
        "Absolutely perfect, the best purchase this year.",
        "Great quality and it works perfectly.",
        "Highly recommend this {cat}.",
        "Fantastic value, it exceeded my expectations.",
        "I love how well made this {cat} is.",
    ),
}
TITLES = {
    1: ("Terrible", "Waste of money", "Broke quickly", "Avoid this {cat}", "Very disappointed"),
    2: ("Not great", "Disappointing", "Poor quality", "Not worth it"),
    3: ("Okay", "Does the job", "Average {cat}", "Mixed feelings"),
    4: ("Good value", "Pretty good", "Solid {cat}", "Happy with it"),
    5: ("Love it", "Excellent", "Perfect {cat}", "Best purchase", "Great {cat}"),
}
FILLERS = (
    "I bought this {cat} as a gift.",
    "It arrived in {n} days.",
    "I have used the {cat} for {n} weeks now.",
    "Ordered it during the sale.",
    "The {cat} came in a plain box.",
    "I compared it with two other options first.",
)
# Which bank a sentence of a review with a given tone comes from (banks 1..5).
TONE_MIX = {
    1: (0.7, 0.3, 0.0, 0.0, 0.0),
    2: (0.25, 0.6, 0.15, 0.0, 0.0),
    3: (0.0, 0.15, 0.7, 0.15, 0.0),
    4: (0.0, 0.0, 0.15, 0.6, 0.25),
    5: (0.0, 0.0, 0.0, 0.3, 0.7),
}
SENTENCE_COUNTS = (0.2, 0.3, 0.25, 0.15, 0.1)  # P(1..5 sentences)
FILLER_SHARE = 0.25
# Tones a noisy review may take instead of its rating's: those of another sentiment class.
OTHER_CLASS_TONES = {1: (3, 4, 5), 2: (3, 4, 5), 3: (1, 2, 4, 5), 4: (1, 2, 3), 5: (1, 2, 3)}
_TEXT_DRAWS = 2 + 4 * len(SENTENCE_COUNTS)  # uniforms consumed per review


@dataclass(frozen=True)
class WorldConfig:
    """Size and randomness of one simulated shop; `start` opens period 0."""

    seed: int = 7
    events: int = 1_000_000
    start: datetime = datetime(2026, 11, 1, tzinfo=UTC)
    days: int = 7

    def __post_init__(self) -> None:
        if self.seed < 0 or self.events < 1 or self.days < 1:
            raise ValueError("seed must be >= 0, events >= 1 and days >= 1")
        if self.start.utcoffset() != timedelta(0):
            raise ValueError("start must be a timezone-aware UTC datetime")

    @property
    def n_users(self) -> int:
        return max(50, self.events // 50)

    @property
    def n_items(self) -> int:
        return max(40, self.events // 500)

    @property
    def n_reviews(self) -> int:
        return max(40, self.events // 50)


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


@dataclass(frozen=True, eq=False)
class _Events:
    """Activity events of one period, sorted by time."""

    user: np.ndarray
    item: np.ndarray
    stage: np.ndarray  # index into EVENT_TYPES
    time_ms: np.ndarray
    session: np.ndarray


@dataclass(frozen=True, eq=False)
class _Reviews:
    """Reviews of one period, sorted by time."""

    user: np.ndarray
    item: np.ndarray
    rating: np.ndarray
    tone: np.ndarray  # the sentiment its text is written with
    time_ms: np.ndarray


@dataclass(frozen=True, eq=False)
class World:
    """One period of the shop: its population and what happened in the window."""

    config: WorldConfig
    period: int
    population: Population
    window_start: datetime
    window_end: datetime
    _events: _Events
    _reviews: _Reviews

    @property
    def n_events(self) -> int:
        return len(self._events.time_ms)

    @property
    def n_reviews(self) -> int:
        return len(self._reviews.time_ms)

    def platform_of(self, user_id: str) -> str:
        """The platform ("web" or "mobile") a user shops on."""
        return PLATFORMS[self.population.user_platform[user_index(user_id)]]

    def activity_events(self) -> Iterator[dict]:
        """Activity event payloads in event-time order, formatted chunk by chunk."""
        ev, pop = self._events, self.population
        users, items, created = _user_ids(pop), _item_ids(pop), _account_dates(pop)
        prices = pop.item_price.tolist()
        for lo in range(0, self.n_events, CHUNK):
            span = slice(lo, lo + CHUNK)
            numbers = np.arange(lo, min(lo + CHUNK, self.n_events), dtype=np.uint64)
            event_ids = _scrambled_ids("e", numbers, self.config.seed, self.period, tag=1)
            sessions = _scrambled_ids(
                "s", ev.session[span].astype(np.uint64), self.config.seed, self.period, tag=2
            )
            rows = zip(
                event_ids,
                ev.stage[span].tolist(),
                ev.user[span].tolist(),
                ev.item[span].tolist(),
                sessions,
                _iso_ms(ev.time_ms[span]),
                strict=True,
            )
            for event_id, stage, user, item, session, time in rows:
                yield {
                    "event_id": event_id,
                    "event_type": EVENT_TYPES[stage],
                    "user_id": users[user],
                    "item_id": items[item],
                    "session_id": session,
                    "event_time": time,
                    "price": prices[item],
                    "account_created": created[user],
                }

    def reviews(self) -> Iterator[dict]:
        """Review payloads in review-time order; texts are composed chunk by chunk."""
        rv, pop = self._reviews, self.population
        users, items, created = _user_ids(pop), _item_ids(pop), _account_dates(pop)
        first_id = REVIEW_ID_BASE + self.period * REVIEW_ID_STRIDE
        for chunk, lo in enumerate(range(0, self.n_reviews, CHUNK)):
            span = slice(lo, lo + CHUNK)
            draws = _rng(self.config.seed, "text", self.period, chunk).random(
                (len(rv.time_ms[span]), _TEXT_DRAWS)
            )
            rows = zip(
                rv.user[span].tolist(),
                rv.item[span].tolist(),
                rv.rating[span].tolist(),
                rv.tone[span].tolist(),
                _iso_ms(rv.time_ms[span]),
                draws,
                strict=True,
            )
            for offset, (user, item, rating, tone, time, u) in enumerate(rows):
                category = CATEGORIES[pop.item_category[item]][0]
                title, text = compose_review(tone, category, u)
                yield {
                    "review_id": f"r{first_id + lo + offset:08d}",
                    "user_id": users[user],
                    "item_id": items[item],
                    "rating": rating,
                    "title": title,
                    "text": text,
                    "review_time": time,
                    "account_created": created[user],
                }


def build_world(cfg: WorldConfig, period: int = 0) -> World:
    """Simulate period `period` (a window of `cfg.days` days) of the shop of `cfg`."""
    periods = REVIEW_ID_BASE // REVIEW_ID_STRIDE  # review ids stay unique in -50 <= period < 50
    if not -periods <= period < periods:
        raise ValueError(f"period must be in [{-periods}, {periods})")
    if cfg.n_reviews >= REVIEW_ID_STRIDE:
        raise ValueError("too many reviews per period for the review id scheme")
    pop = build_population(cfg)
    window_start = cfg.start + period * timedelta(days=cfg.days)
    window_end = window_start + timedelta(days=cfg.days)
    start_ms, end_ms = _epoch_ms(window_start), _epoch_ms(window_end)
    rng = _rng(cfg.seed, "activity", period)
    available_from = np.maximum(pop.user_created_ms, start_ms)
    weights = _activity_weights(pop, cfg, available_from, end_ms)
    users, items, stages = _interactions(pop, cfg, weights, rng)
    events = _schedule(users, items, stages, available_from, end_ms, rng)
    reviews = _choose_reviews(pop, events, cfg.n_reviews, end_ms, rng)
    return World(cfg, period, pop, window_start, window_end, events, reviews)


def build_population(cfg: WorldConfig) -> Population:
    """Draw users and items; depends on the seed and sizes only, never on the period."""
    rng = _rng(cfg.seed, "population")
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
    start_ms = _epoch_ms(cfg.start)
    age_days = np.clip(rng.lognormal(np.log(400.0), 0.9, size=cfg.n_users), 1.0, 3650.0)
    created = start_ms - (age_days * MS_PER_DAY).astype(np.int64)
    is_new = rng.random(cfg.n_users) < NEW_ACCOUNT_SHARE
    inside = start_ms + (rng.random(cfg.n_users) * 0.9 * cfg.days * MS_PER_DAY).astype(np.int64)
    return np.where(is_new, inside, created)


def _activity_weights(
    pop: Population, cfg: WorldConfig, available_from: np.ndarray, end_ms: int
) -> np.ndarray:
    """Share of the period's interactions per user, capped so each user's sessions fit."""
    available = np.clip(end_ms - available_from, 0, None).astype(np.float64)
    weights = pop.user_activity * available / (cfg.days * MS_PER_DAY)
    capacity = available / BUDGET_MS_PER_INTERACTION
    expected_interactions = cfg.events / 1.45
    for _ in range(4):  # capping raises the others' share: repeat until it settles
        weights = np.minimum(weights, capacity * weights.sum() / expected_interactions)
    return weights / weights.sum()


def _interactions(
    pop: Population, cfg: WorldConfig, weights: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw (user, item, funnel depth) interactions until exactly `cfg.events` events.

    Every interaction has at least one event, so `cfg.events` candidates are
    always enough; the candidates are i.i.d., so keeping a prefix is unbiased.
    Returned sorted by user.
    """
    n = cfg.events
    users = rng.choice(len(weights), size=n, p=weights)
    items = _choose_items(pop, users, rng.random(n), cfg.seed)
    affinity = pop.affinity(users, items)
    cart = rng.random(n) < _sigmoid(CART_BIAS + CART_SLOPE * affinity)
    buy = cart & (rng.random(n) < _sigmoid(BUY_BIAS + BUY_SLOPE * affinity))
    stages = (1 + cart + buy).astype(np.int8)
    total = np.cumsum(stages)
    last = int(np.searchsorted(total, n))
    stages = stages[: last + 1]
    stages[-1] -= total[last] - n
    order = np.argsort(users[: last + 1], kind="stable")
    return users[order].astype(np.int32), items[order].astype(np.int32), stages[order]


def _choose_items(pop: Population, users: np.ndarray, uniforms: np.ndarray, seed: int) -> np.ndarray:
    """Each user picks among the items shown to them by softmax of affinity."""
    items = np.empty(len(users), dtype=np.int64)
    order = np.argsort(users, kind="stable")
    sorted_users = users[order]
    popularity_cdf = np.cumsum(pop.item_popularity)
    popularity_cdf[-1] = 1.0
    n_items = len(popularity_cdf)
    for block in range(-(-len(pop.user_vectors) // USER_BLOCK)):
        first = block * USER_BLOCK
        lo, hi = np.searchsorted(sorted_users, [first, first + USER_BLOCK])
        shown_draws = _rng(seed, "exposure", block).random((USER_BLOCK, EXPOSURE))
        shown = np.minimum(np.searchsorted(popularity_cdf, shown_draws), n_items - 1)
        block_users = np.arange(first, min(first + USER_BLOCK, len(pop.user_vectors)))
        shown = shown[: len(block_users)]
        affinity = np.einsum("bd,bkd->bk", pop.user_vectors[block_users], pop.item_vectors[shown]) / np.sqrt(
            LATENT_DIM
        )
        weight = np.exp(CHOICE_SHARPNESS * (affinity - affinity.max(axis=1, keepdims=True)))
        cdf = np.cumsum(weight, axis=1) / weight.sum(axis=1, keepdims=True)
        cdf[:, -1] = 1.0
        rows = sorted_users[lo:hi] - first
        # one searchsorted over all rows: row r's cdf is shifted into (r, r + 1]
        flat = np.searchsorted(
            (cdf + np.arange(len(cdf))[:, None]).ravel(),
            uniforms[order[lo:hi]] + rows,
            side="right",
        )
        pick = np.minimum(flat - rows * EXPOSURE, EXPOSURE - 1)
        items[order[lo:hi]] = shown[rows, pick]
    return items


def _schedule(
    users: np.ndarray,
    items: np.ndarray,
    stages: np.ndarray,
    available_from: np.ndarray,
    end_ms: int,
    rng: np.random.Generator,
) -> _Events:
    """Group each user's interactions into sessions and place them in time.

    Inside a session, events follow 30 s - 10 min apart; a user's sessions are
    laid out in their available time with random free spacing between them
    (a Dirichlet split of the slack), always more than 30 min apart.
    """
    first_of_user = np.r_[True, users[1:] != users[:-1]]
    int_session = np.cumsum(first_of_user | (rng.random(len(users)) < SESSION_BREAK)) - 1
    interaction = np.repeat(np.arange(len(users)), stages)
    stage = np.arange(len(interaction)) - np.repeat(np.cumsum(stages) - stages, stages)
    session = int_session[interaction]
    opens = np.r_[True, session[1:] != session[:-1]]
    gaps = rng.integers(EVENT_GAP_MS[0], EVENT_GAP_MS[1] + 1, size=len(session))
    gaps[opens] = 0
    offset = _grouped_cumsum(gaps, opens)
    duration = offset[np.r_[opens[1:], True]]
    session_user = users[np.r_[True, int_session[1:] != int_session[:-1]]]
    session_start = _place_sessions(session_user, duration, available_from, end_ms, rng)
    time_ms = session_start[session] + offset
    order = np.argsort(time_ms, kind="stable")
    return _Events(
        user=users[interaction][order],
        item=items[interaction][order],
        stage=stage[order].astype(np.int8),
        time_ms=time_ms[order],
        session=session[order].astype(np.int64),
    )


def _place_sessions(
    session_user: np.ndarray,
    duration: np.ndarray,
    available_from: np.ndarray,
    end_ms: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Start time of every session (sessions are grouped by user, in order)."""
    n_users = len(available_from)
    first = np.r_[True, session_user[1:] != session_user[:-1]]
    index_in_user = _grouped_cumsum(np.ones(len(first), dtype=np.int64), first) - 1
    count = np.bincount(session_user, minlength=n_users)
    busy = np.bincount(session_user, weights=duration, minlength=n_users)
    required = busy + np.clip(count - 1, 0, None) * SESSION_GAP_MS
    slack = (end_ms - 1 - available_from) - required
    if (slack[count > 0] < 0).any():
        raise ValueError("window too short for the activity of its busiest users")
    spacing = rng.exponential(size=len(session_user))
    tail = rng.exponential(size=n_users)
    spacing_total = np.bincount(session_user, weights=spacing, minlength=n_users) + tail
    free_before = _grouped_cumsum(spacing, first) / spacing_total[session_user]
    busy_before = _grouped_cumsum(duration, first) - duration
    return (
        available_from[session_user]
        + np.floor(free_before * slack[session_user]).astype(np.int64)
        + busy_before
        + index_in_user * SESSION_GAP_MS
    )


def _choose_reviews(
    pop: Population, ev: _Events, n_reviews: int, end_ms: int, rng: np.random.Generator
) -> _Reviews:
    """Pick reviewed (user, item) pairs, weighted by how far the user went in the funnel.

    Each pair is reviewed at most once, after the user's last event on it;
    ratings follow affinity and are cut to a J-shaped distribution.
    """
    key = ev.user.astype(np.int64) * len(pop.item_vectors) + ev.item
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    starts = np.flatnonzero(np.r_[True, sorted_key[1:] != sorted_key[:-1]])
    deepest = np.maximum.reduceat(ev.stage[order], starts)
    latest = np.maximum.reduceat(ev.time_ms[order], starts)
    n = min(n_reviews, len(starts))
    # weighted sampling without replacement (Efraimidis-Spirakis exponential keys)
    keys = rng.exponential(size=len(starts)) / REVIEW_PROPENSITY[deepest]
    chosen = np.sort(np.argpartition(keys, n - 1)[:n])
    pairs = starts[chosen]
    users, items, seen = ev.user[order][pairs], ev.item[order][pairs], latest[chosen]
    delay = rng.exponential(REVIEW_DELAY_MS, size=n)
    room = (end_ms - 1 - seen).astype(np.float64)
    delay = np.where(delay < room, delay, room * rng.random(n))
    latent = pop.affinity(users, items) + rng.normal(0.0, RATING_NOISE, size=n)
    cuts = np.quantile(latent, np.cumsum(RATING_SHARES)[:-1])
    rating = (1 + np.searchsorted(cuts, latent)).astype(np.int8)
    tone = _noisy_tone(rating, rng)
    time_ms = seen + delay.astype(np.int64)
    by_time = np.argsort(time_ms, kind="stable")
    return _Reviews(*(a[by_time] for a in (users, items, rating, tone, time_ms)))


def _noisy_tone(rating: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The tone each review is written in: its rating's, or for a few another class's."""
    noisy = rng.random(len(rating)) < TEXT_NOISE
    pick = rng.random(len(rating))
    tone = rating.copy()
    for stars, others in OTHER_CLASS_TONES.items():
        swap = noisy & (rating == stars)
        tone[swap] = np.asarray(others)[(pick[swap] * len(others)).astype(int)]
    return tone


def compose_review(tone: int, category: str, u: np.ndarray) -> tuple[str, str]:
    """Title and text of a review written in `tone` (1..5) about a `category` item.

    `u` holds the uniforms that decide every choice, so a review is a pure
    function of its draws.
    """
    title = _pick(TITLES[tone], u[0]).format(cat=category)
    n_sentences = 1 + _draw(SENTENCE_COUNTS, u[1])
    sentences = []
    for j in range(n_sentences):
        filler, bank, phrase, number = u[2 + 4 * j : 6 + 4 * j]
        if j > 0 and filler < FILLER_SHARE:  # a review opens with an opinion
            template = _pick(FILLERS, phrase)
        else:
            template = _pick(SENTENCES[1 + _draw(TONE_MIX[tone], bank)], phrase)
        sentences.append(template.format(cat=category, n=2 + int(number * 12)))
    return title, " ".join(sentences)


def user_index(user_id: str) -> int:
    """Population index of a "u%07d" user id."""
    return int(user_id[1:])


def item_index(item_id: str) -> int:
    """Population index of an "i%06d" item id."""
    return int(item_id[1:])


def _pick(options: tuple[str, ...], u: float) -> str:
    """One of `options`, uniformly by the uniform `u`."""
    return options[min(int(u * len(options)), len(options) - 1)]


def _draw(probabilities: tuple[float, ...], u: float) -> int:
    """Index drawn from `probabilities` by the uniform `u`."""
    for index, p in enumerate(probabilities):
        u -= p
        if u < 0:
            return index
    return max(i for i, p in enumerate(probabilities) if p > 0)  # u rounded past the total


def _user_ids(pop: Population) -> list[str]:
    return [f"u{i:07d}" for i in range(len(pop.user_vectors))]


def _item_ids(pop: Population) -> list[str]:
    return [f"i{i:06d}" for i in range(len(pop.item_vectors))]


def _account_dates(pop: Population) -> list[str]:
    return np.datetime_as_string(pop.user_created_ms.astype("datetime64[ms]"), unit="D").tolist()


def _iso_ms(time_ms: np.ndarray) -> list[str]:
    """ISO-8601 UTC with milliseconds and "Z"."""
    text = np.datetime_as_string(time_ms.astype("datetime64[ms]"), unit="ms")
    return [t + "Z" for t in text.tolist()]


def _scrambled_ids(prefix: str, numbers: np.ndarray, seed: int, period: int, tag: int) -> list[str]:
    """Random-looking 12-hex ids, unique across periods: a keyed bijection on 48 bits."""
    keys = _rng(seed, "ids", tag).integers(1 << 48, size=3, dtype=np.uint64)
    x = (np.uint64((period + _PERIOD_OFFSET) % 256) << np.uint64(40)) | numbers
    x = (x ^ keys[0]) & _MASK48
    x = (x * (keys[1] | np.uint64(1))) & _MASK48
    x ^= x >> np.uint64(23)
    x = (x * (keys[2] | np.uint64(1))) & _MASK48
    x ^= x >> np.uint64(19)
    return [f"{prefix}{v:012x}" for v in x.tolist()]


def _grouped_cumsum(values: np.ndarray, group_start: np.ndarray) -> np.ndarray:
    """Cumulative sum that restarts wherever `group_start` is true."""
    total = np.cumsum(values)
    starts = np.flatnonzero(group_start)
    before = (total - values)[starts]
    return total - np.repeat(before, np.diff(np.r_[starts, len(values)]))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _epoch_ms(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(milliseconds=1)


_STREAMS = ("population", "activity", "exposure", "text", "ids")


def _rng(seed: int, stream: str, *parts: int) -> np.random.Generator:
    """An independent RNG stream for one purpose (and period or block) of one seed."""
    entropy = [seed, _STREAMS.index(stream), *(p + _PERIOD_OFFSET for p in parts)]
    return np.random.default_rng(entropy)
