"""One period of the shop: `build_world` simulates it, `World` formats its records.

`build_world` draws the population, the period's activity and its reviews in
a fixed order of random streams; `World` turns the resulting arrays into the
payloads the sources send (activity events, reviews), chunk by chunk, with
user and item ids, ISO timestamps, account dates and random-looking event and
session ids that are unique across periods.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

from examples.ecommerce.world.activity import EVENT_TYPES, Events, simulate_activity
from examples.ecommerce.world.config import PERIOD_OFFSET, WorldConfig, epoch_ms, random_stream
from examples.ecommerce.world.population import CATEGORIES, PLATFORMS, Population, build_population
from examples.ecommerce.world.reviews import TEXT_DRAWS, Reviews, choose_reviews, compose_review

REVIEW_ID_BASE, REVIEW_ID_STRIDE = 50_000_000, 1_000_000  # review ids unique across periods
CHUNK = 50_000  # records formatted per step by the generators
_MASK48 = np.uint64((1 << 48) - 1)


@dataclass(frozen=True, eq=False)
class World:
    """One period of the shop: its population and what happened in the window."""

    config: WorldConfig
    period: int
    population: Population
    window_start: datetime
    window_end: datetime
    _events: Events
    _reviews: Reviews

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
            draws = random_stream(self.config.seed, "text", self.period, chunk).random(
                (len(rv.time_ms[span]), TEXT_DRAWS)
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
    start_ms, end_ms = epoch_ms(window_start), epoch_ms(window_end)
    rng = random_stream(cfg.seed, "activity", period)
    available_from = np.maximum(pop.user_created_ms, start_ms)
    events = simulate_activity(pop, cfg, available_from, end_ms, rng)
    reviews = choose_reviews(pop, events, cfg.n_reviews, end_ms, rng)
    return World(cfg, period, pop, window_start, window_end, events, reviews)


def user_index(user_id: str) -> int:
    """Population index of a "u%07d" user id."""
    return int(user_id[1:])


def item_index(item_id: str) -> int:
    """Population index of an "i%06d" item id."""
    return int(item_id[1:])


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
    keys = random_stream(seed, "ids", tag).integers(1 << 48, size=3, dtype=np.uint64)
    x = (np.uint64((period + PERIOD_OFFSET) % 256) << np.uint64(40)) | numbers
    x = (x ^ keys[0]) & _MASK48
    x = (x * (keys[1] | np.uint64(1))) & _MASK48
    x ^= x >> np.uint64(23)
    x = (x * (keys[2] | np.uint64(1))) & _MASK48
    x ^= x >> np.uint64(19)
    return [f"{prefix}{v:012x}" for v in x.tolist()]
