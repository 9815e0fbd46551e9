"""Size, clock and random streams of one simulated shop.

`WorldConfig` fixes the seed, the number of events per period and the window
that opens period 0; the rest of the simulator measures time in milliseconds
since `EPOCH` and draws all its randomness from `random_stream`, one
independent numpy stream per purpose (and period or block) of the seed, so the
same configuration always produces the same records.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np

MS_PER_DAY = 86_400_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
PERIOD_OFFSET = 1 << 16  # seeds must be non-negative; periods may be negative


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


def epoch_ms(moment: datetime) -> int:
    """Milliseconds from `EPOCH` to `moment`."""
    return (moment - EPOCH) // timedelta(milliseconds=1)


_STREAMS = ("population", "activity", "exposure", "text", "ids")


def random_stream(seed: int, stream: str, *parts: int) -> np.random.Generator:
    """An independent RNG stream for one purpose (and period or block) of one seed."""
    entropy = [seed, _STREAMS.index(stream), *(p + PERIOD_OFFSET for p in parts)]
    return np.random.default_rng(entropy)
