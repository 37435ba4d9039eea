"""Paired comparison of two 0/1 outcomes on the same items: the exact McNemar test, a paired
bootstrap interval of the difference in rates, and the smallest difference the test can see.

Example:
    >>> cmp = paired_binary([1, 1, 0, 1], [0, 1, 0, 0])
    >>> cmp["difference"], cmp["p_value"]
    (-0.5, 0.5)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import binomtest

from .stats import minimum_detectable_effect, paired_bootstrap

__all__ = ["mcnemar_exact", "paired_binary"]

#: Standard deviation assumed for the MDE when the observed one is 0 (no discordant item):
#: the largest a single 0/1 difference can have around a mean of 0 with half the items discordant.
PLANNING_SD = 0.5


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts (items where only A, or only
    B, scored 1): a binomial test of ``only_b`` out of the discordant items at 1/2.

    Example:
        >>> round(mcnemar_exact(0, 6), 4)
        0.0312
    """
    if only_a < 0 or only_b < 0:
        raise ValueError(f"discordant counts must be >= 0, got {only_a}, {only_b}")
    if only_a + only_b == 0:
        return 1.0
    return float(binomtest(only_b, only_a + only_b, 0.5).pvalue)


def paired_binary(
    a: Sequence[float], b: Sequence[float], *, confidence: float = 0.95, seed: int = 0
) -> dict:
    """B's rate minus A's on the same items: rates, difference with a paired percentile-bootstrap
    interval, the exact McNemar p-value and the minimum detectable difference (alpha 0.05, power
    0.8; with the observed sd of the item differences, or :data:`PLANNING_SD` when it is 0).

    Example:
        >>> paired_binary([1, 0, 1, 1], [0, 0, 1, 0])["only_a"]
        2
    """
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(
            f"paired outcomes need two equally long 1-d lists, got {x.shape}, {y.shape}"
        )
    if not np.isin(np.concatenate([x, y]), (0.0, 1.0)).all():
        raise ValueError("paired_binary takes 0/1 outcomes")
    n = len(x)
    only_a, only_b = int(((x == 1) & (y == 0)).sum()), int(((x == 0) & (y == 1)).sum())
    diff = paired_bootstrap(
        (x, y),
        lambda u, v, axis=-1: (v - u).mean(axis=axis),
        n_resamples=2000,
        confidence=confidence,
        method="percentile",
        seed=seed,
    )
    sd = float(np.std(y - x, ddof=1)) if n > 1 else 0.0
    return {
        "n": n,
        "rate_a": float(x.mean()),
        "rate_b": float(y.mean()),
        "difference": float(y.mean() - x.mean()),
        "low": diff.low,
        "high": diff.high,
        "only_a": only_a,
        "only_b": only_b,
        "p_value": mcnemar_exact(only_a, only_b),
        "mde": minimum_detectable_effect(sd if sd > 0 else PLANNING_SD, n),
    }
