"""Noise on accuracies: a 95% interval for one accuracy, and a paired comparison of two models on the
same items. Pure functions on 0/1 outcomes."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

Z95 = 1.959963984540054  # two-sided 95% normal quantile


def wilson(correct: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion: unlike p ± z·se it stays within [0, 1] and keeps its
    coverage near 0 and 1 (LAMBADA-like tasks, chance-level models)."""
    if n == 0:
        return 0.0, 1.0
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar_p(lost: int, gained: int) -> float:
    """Exact two-sided McNemar test: the chance of a split of the discordant items at least this uneven
    if either model were as likely to win each one (binomial, p = 1/2)."""
    n = lost + gained
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(lost, gained) + 1)) / 2**n
    return min(1.0, 2 * tail)


def paired(reference: Sequence[int], other: Sequence[int], z: float = Z95) -> dict:
    """``other`` against ``reference`` on the same items (0/1 each): the accuracy difference with a 95%
    interval (the normal interval of the mean of per-item differences), the items each model alone got
    right, McNemar's p, and a verdict: "within noise" unless p < 0.05."""
    if len(reference) != len(other) or not reference:
        raise ValueError("paired outcomes need the same, non-empty list of items")
    n = len(reference)
    lost = sum(1 for r, o in zip(reference, other, strict=True) if r and not o)
    gained = sum(1 for r, o in zip(reference, other, strict=True) if o and not r)
    diff = (gained - lost) / n
    var = (gained + lost) / n - diff * diff  # variance of the per-item differences (each -1, 0 or +1)
    half = z * math.sqrt(max(var, 0.0) / n)
    p = mcnemar_p(lost, gained)
    verdict = "within noise" if p >= 0.05 else ("a drop" if diff < 0 else "a gain")
    return {"diff": diff, "ci": [diff - half, diff + half], "lost": lost, "gained": gained, "items": n,
            "p_value": p, "verdict": verdict}


def mean_interval(values: Sequence[float], z: float = Z95) -> tuple[float, float, float]:
    """(mean, low, high): the normal 95% interval of the mean of ``values``."""
    n = len(values)
    if n == 0:
        raise ValueError("no values")
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
    half = z * math.sqrt(var / n)
    return mean, mean - half, mean + half


def paired_bootstrap(reference: Sequence[float], other: Sequence[float], resamples: int = 2000,
                     seed: int = 0) -> dict:
    """``other`` − ``reference`` on the same items (a continuous measure, e.g. a per-token loss): the mean
    difference and its 95% percentile interval over ``resamples`` seeded resamplings of the items; "within noise"
    when the interval holds 0."""
    if len(reference) != len(other) or not reference:
        raise ValueError("paired values need the same, non-empty list of items")
    n = len(reference)
    diffs = [o - r for r, o in zip(reference, other, strict=True)]
    rng = random.Random(seed)
    means = sorted(sum(diffs[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples))
    low, high = means[int(0.025 * resamples)], means[min(resamples - 1, int(0.975 * resamples))]
    diff = sum(diffs) / n
    verdict = "within noise" if low <= 0 <= high else ("an increase" if diff > 0 else "a decrease")
    return {"diff": diff, "ci": [low, high], "items": n, "verdict": verdict}
