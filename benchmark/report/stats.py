"""Small statistics for the leaderboard: confidence intervals of accuracies measured on few test points."""
from __future__ import annotations

import math


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion ``successes / n``, as fractions in [0, 1].

    ``z = 1.96`` gives the 95% interval. Unlike the normal approximation it stays inside [0, 1] and is sensible at
    0 or n successes and for small n (Wilson 1927; Brown, Cai & DasGupta 2001, https://doi.org/10.1214/ss/1009213286).
    With ``n == 0`` nothing is known: (0, 1).
    """
    if n < 0 or not 0 <= successes <= max(n, 0):
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    lo = 0.0 if successes == 0 else max(0.0, centre - half)
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return lo, hi
