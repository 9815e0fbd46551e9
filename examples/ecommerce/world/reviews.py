"""Who reviews what, with which rating, and the words they write.

`choose_reviews` picks (user, item) pairs of the period weighted by how far the
user went in the funnel, each reviewed at most once after the user's last
event on it, with a rating that follows affinity and is cut to a J-shaped
distribution; the text's tone follows the rating except for ~8 % of reviews.
`compose_review` writes a title and text in a tone from phrase banks, as a
pure function of the uniforms it is given.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from examples.ecommerce.world.activity import Events
from examples.ecommerce.world.population import Population

RATING_SHARES = (0.10, 0.07, 0.12, 0.26, 0.45)  # J-shaped, as on real shops
RATING_NOISE = 0.6
TEXT_NOISE = 0.08  # share of reviews whose text sentiment disagrees with the rating
REVIEW_PROPENSITY = np.array([0.3, 2.0, 10.0])  # by deepest stage: view, cart, purchase
REVIEW_DELAY_MS = 36 * 3_600_000

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
TEXT_DRAWS = 2 + 4 * len(SENTENCE_COUNTS)  # uniforms consumed per review


@dataclass(frozen=True, eq=False)
class Reviews:
    """Reviews of one period, sorted by time."""

    user: np.ndarray
    item: np.ndarray
    rating: np.ndarray
    tone: np.ndarray  # the sentiment its text is written with
    time_ms: np.ndarray


def choose_reviews(
    pop: Population, ev: Events, n_reviews: int, end_ms: int, rng: np.random.Generator
) -> Reviews:
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
    return Reviews(*(a[by_time] for a in (users, items, rating, tone, time_ms)))


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
