"""Small statistics shared by the evaluation tools and benchmarks."""

from __future__ import annotations

import math


def wilson_interval(successes: int, trials: int, z: float = 1.959964) -> tuple[float, float]:
    """95 % (default z) Wilson score interval of a success rate, as fractions; (0, 1) for no trials.

    p_hat = k/n; centre = (p_hat + z^2/2n) / (1 + z^2/n);
    half width = z sqrt(p_hat (1 - p_hat)/n + z^2/4n^2) / (1 + z^2/n).
    """
    if trials <= 0:
        return 0.0, 1.0
    if not 0 <= successes <= trials:
        raise ValueError(f"{successes} successes out of {trials} trials")
    p_hat, z2 = successes / trials, z * z
    denominator = 1.0 + z2 / trials
    centre = (p_hat + z2 / (2 * trials)) / denominator
    half = z * math.sqrt(p_hat * (1 - p_hat) / trials + z2 / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def format_rate(successes: int, trials: int) -> str:
    """``k/n (p %, 95 % CI lo-hi %)``."""
    low, high = wilson_interval(successes, trials)
    rate = 100.0 * successes / trials if trials else float("nan")
    return f"{successes}/{trials} ({rate:.0f} %, 95 % CI {100 * low:.0f}-{100 * high:.0f} %)"
