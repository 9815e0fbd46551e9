"""Distribution checks: a collected window against the trusted baseline.

Drift is always measured against the baseline a human trusted, never
against the previous batch, so an attacker cannot walk the distribution
somewhere else in steps that each look small.
"""

import numpy as np


def psi(expected: dict[str, float], actual: dict[str, float], floor: float = 1e-4) -> float:
    """Population stability index between two categorical share tables.

    Below 0.1 is usually read as stable, 0.1-0.25 as a moderate shift,
    above 0.25 as a large one.
    """
    keys = sorted(set(expected) | set(actual))
    e = np.array([max(expected.get(k, 0.0), floor) for k in keys])
    a = np.array([max(actual.get(k, 0.0), floor) for k in keys])
    return float(np.sum((a - e) * np.log(a / e)))
