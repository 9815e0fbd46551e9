"""What users do in one period: the browse-cart-buy funnel, in sessions.

Each user's share of the period's interactions follows their activity and the
time their account exists in the window; each interaction picks an item among
a popularity-biased set shown to the user by softmax of affinity, and goes as
deep into the funnel (view, add to cart, purchase) as affinity makes likely,
until exactly `cfg.events` events. The events of a user are grouped into
sessions (events 30 s to 10 min apart, sessions more than 30 min apart) and
laid out in the window; `simulate_activity` returns them sorted by time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from examples.ecommerce.world.config import MS_PER_DAY, WorldConfig, random_stream
from examples.ecommerce.world.population import LATENT_DIM, Population

EXPOSURE = 256  # items a user is ever shown, drawn by popularity
USER_BLOCK = 2048  # users whose exposure is drawn from one RNG stream (never depends on size)
CHOICE_SHARPNESS = 2.0  # weight of affinity in a user's choice among the items shown

CART_BIAS, CART_SLOPE = -1.9, 0.6  # logit of add-to-cart after a view
BUY_BIAS, BUY_SLOPE = -0.6, 0.5  # logit of purchase after add-to-cart
SESSION_BREAK = 0.25  # chance that an interaction opens a new session
EVENT_GAP_MS = (30_000, 600_000)  # between two events of a session
SESSION_GAP_MS = 30 * 60_000 + 1_000  # more than 30 min between sessions of a user
BUDGET_MS_PER_INTERACTION = 1_800_000  # caps heavy users so their sessions fit the window

EVENT_TYPES = ("view", "add_to_cart", "purchase")


@dataclass(frozen=True, eq=False)
class Events:
    """Activity events of one period, sorted by time."""

    user: np.ndarray
    item: np.ndarray
    stage: np.ndarray  # index into EVENT_TYPES
    time_ms: np.ndarray
    session: np.ndarray


def simulate_activity(
    pop: Population,
    cfg: WorldConfig,
    available_from: np.ndarray,
    end_ms: int,
    rng: np.random.Generator,
) -> Events:
    """The period's `cfg.events` events; each user is active from `available_from` until `end_ms`."""
    weights = _activity_weights(pop, cfg, available_from, end_ms)
    users, items, stages = _interactions(pop, cfg, weights, rng)
    return _schedule(users, items, stages, available_from, end_ms, rng)


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
        shown_draws = random_stream(seed, "exposure", block).random((USER_BLOCK, EXPOSURE))
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
) -> Events:
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
    return Events(
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


def _grouped_cumsum(values: np.ndarray, group_start: np.ndarray) -> np.ndarray:
    """Cumulative sum that restarts wherever `group_start` is true."""
    total = np.cumsum(values)
    starts = np.flatnonzero(group_start)
    before = (total - values)[starts]
    return total - np.repeat(before, np.diff(np.r_[starts, len(values)]))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))
