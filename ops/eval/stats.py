"""`opsctl eval` statistics (stdlib only): the accuracy interval, latency quantiles, and what majority
voting should score on an upstream whose samples are right with probability p."""

from __future__ import annotations

import math
from functools import lru_cache

Z95 = 1.959963984540054  # two-sided 95% normal quantile


def wilson(correct: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (95% by default).

    Unlike the textbook p +- z*sqrt(p(1-p)/n) it stays inside [0, 1] and is not zero-width at 0 or n
    correct, which matters at the sample sizes an operator runs (50-200 answers).
    """
    if n <= 0:
        raise ValueError("no scored answer")
    if not 0 <= correct <= n:
        raise ValueError(f"{correct} correct out of {n}")
    p = correct / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def nearest_rank(values: list[float], q: float) -> float | None:
    """The nearest-rank q-quantile (the smallest value with at least q of them at or below it)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def _compositions(total: int, parts: int):
    """Every tuple of `parts` non-negative integers summing to `total`."""
    if parts == 1:
        yield (total,)
        return
    for first in range(total + 1):
        for rest in _compositions(total - first, parts - 1):
            yield (first, *rest)


@lru_cache(maxsize=64)
def majority_vote_accuracy(p: float, k: int, wrong_values: int) -> float:
    """P(the right answer wins a plurality vote over k samples), exactly.

    Each sample is right with probability p, else one of `wrong_values` wrong answers, each equally
    likely. The vote goes to the most frequent answer; a tie at the top is won by each tied answer
    with equal probability (optillm 0.3.12's majority_voting keeps the first one seen: with samples
    drawn independently, each tied answer is the first seen with equal probability). Computed by
    enumerating the multinomial counts (right, wrong_1, ..., wrong_W): C(k+W, W) terms.
    """
    if not 0 <= p <= 1 or k < 1 or wrong_values < 1:
        raise ValueError("need 0 <= p <= 1, k >= 1, wrong_values >= 1")
    q = (1 - p) / wrong_values
    log_fact = [math.lgamma(i + 1) for i in range(k + 1)]
    total = 0.0
    for right in range(1, k + 1):
        for wrongs in _compositions(k - right, wrong_values):
            top = max(wrongs)
            if top > right:
                continue
            ties = sum(1 for w in wrongs if w == right)
            log_ways = log_fact[k] - log_fact[right] - sum(log_fact[w] for w in wrongs)
            prob = math.exp(log_ways) * p ** right * math.prod(q ** w for w in wrongs)
            total += prob / (1 + ties)
    return total
