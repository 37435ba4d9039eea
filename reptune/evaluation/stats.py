"""Intervals: Wilson score intervals for rates, bootstrap intervals for means and for paired
differences; Holm's correction and the minimum detectable paired difference."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import binomtest, bootstrap, norm

__all__ = [
    "Rate",
    "wilson_interval",
    "rate",
    "Mean",
    "mean_interval",
    "PairedDifference",
    "paired_bootstrap",
    "HolmResult",
    "holm",
    "minimum_detectable_effect",
]


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for ``k`` successes out of ``n`` (``(nan, nan)`` when ``n == 0``).

    Example:
        >>> low, high = wilson_interval(81, 100)  # (0.722, 0.875)
    """
    if n < 0 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return (math.nan, math.nan)
    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return (float(ci.low), float(ci.high))


@dataclass(frozen=True)
class Rate:
    """A proportion ``k / n`` with its Wilson interval.

    Example:
        >>> rate(81, 100).as_dict()["low"]
    """

    k: int
    n: int
    value: float
    low: float
    high: float
    confidence: float = 0.95

    def as_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        return f"{100 * self.value:.1f}% [{100 * self.low:.1f}, {100 * self.high:.1f}] (n={self.n})"


def rate(k: int, n: int, confidence: float = 0.95) -> Rate:
    """The :class:`Rate` ``k / n`` with its Wilson interval.

    Example:
        >>> str(rate(162, 200))
        '81.0% [75.0, 85.8] (n=200)'
    """
    low, high = wilson_interval(k, n, confidence)
    return Rate(int(k), int(n), k / n if n else math.nan, low, high, confidence)


@dataclass(frozen=True)
class Mean:
    """A mean with its bootstrap interval.

    Example:
        >>> str(mean_interval([0.2, 0.4, 0.9]))
    """

    value: float
    low: float
    high: float
    n: int
    confidence: float = 0.95

    def as_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}] (n={self.n})"


def mean_interval(
    values: Sequence[float], confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0
) -> Mean:
    """The mean of ``values`` with a percentile bootstrap interval (scipy).

    A single value or identical values give a point interval.

    Example:
        >>> m = mean_interval([0.1, 0.5, 0.7, 0.2])
        >>> m.low <= m.value <= m.high
        True
    """
    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        raise ValueError("mean_interval needs at least one value")
    mean = float(arr.mean())
    if arr.size < 2 or np.all(arr == arr[0]):
        return Mean(mean, mean, mean, int(arr.size), confidence)
    ci = bootstrap(
        (arr,),
        np.mean,
        n_resamples=n_resamples,
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(seed),
    ).confidence_interval
    return Mean(mean, float(ci.low), float(ci.high), int(arr.size), confidence)


@dataclass(frozen=True)
class PairedDifference:
    """A statistic of model B minus the same statistic of model A, with a bootstrap interval.

    Example:
        >>> diff = paired_bootstrap((a, b), mean_difference)
        >>> diff.estimate, diff.low, diff.high, diff.significant
    """

    estimate: float
    low: float
    high: float
    standard_error: float
    n: int
    confidence: float
    method: str

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def significant(self) -> bool:
        """True when the interval excludes zero."""
        return not (self.low <= 0.0 <= self.high)


def paired_bootstrap(
    data: Sequence[Sequence[float]],
    statistic: Callable[..., np.ndarray],
    *,
    n_resamples: int = 9999,
    confidence: float = 0.95,
    method: str = "BCa",
    seed: int = 0,
) -> PairedDifference:
    """Bootstrap interval of ``statistic(*data)`` resampling the *units* (columns) jointly.

    ``data`` holds equally long arrays measured on the same units (e.g. per-window NLL of two
    models); ``statistic`` takes them and an ``axis`` keyword (vectorised, as in
    :func:`scipy.stats.bootstrap`). Resampling keeps the pairing, so the interval reflects the
    variation between units, not between models.

    Example:
        >>> diff = paired_bootstrap((a, b), lambda a, b, axis=-1: (b - a).mean(axis=axis))
    """
    arrays = [np.asarray(x, dtype=float) for x in data]
    n = len(arrays[0])
    if any(len(x) != n for x in arrays):
        raise ValueError("paired data must have the same length for every sample")
    if n < 2:
        raise ValueError(f"a bootstrap needs at least 2 paired units, got {n}")
    estimate = float(statistic(*arrays, axis=-1))
    with warnings.catch_warnings():
        # BCa warns and returns NaN on degenerate data (all resamples equal); handled below.
        warnings.simplefilter("ignore")
        result = bootstrap(
            arrays,
            statistic,
            paired=True,
            vectorized=True,
            n_resamples=n_resamples,
            confidence_level=confidence,
            method=method,
            rng=np.random.default_rng(seed),
        )
    low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    if math.isnan(low) or math.isnan(high):
        # Every resample gives the same value (e.g. identical models): the interval is a point.
        low = high = estimate
    return PairedDifference(
        estimate, low, high, float(result.standard_error), n, confidence, method
    )


@dataclass(frozen=True)
class HolmResult:
    """One comparison of a family after Holm's step-down correction.

    Example:
        >>> [r.reject for r in holm({"a": 0.01, "b": 0.04, "c": 0.03})]
    """

    name: str
    p_value: float
    p_adjusted: float
    reject: bool

    def as_dict(self) -> dict:
        return asdict(self)


def holm(p_values: Mapping[str, float] | Sequence[float], alpha: float = 0.05) -> list[HolmResult]:
    """Holm's step-down correction over a declared family of comparisons (input order kept).

    Sorted ascending, the k-th smallest of m p-values is multiplied by ``m - k + 1``; adjusted
    values are made non-decreasing in that order and capped at 1; a comparison is rejected when
    its adjusted p-value is at most ``alpha`` (family-wise error rate ``alpha``).

    Example:
        >>> [round(r.p_adjusted, 2) for r in holm([0.01, 0.04, 0.03])]
        [0.03, 0.06, 0.06]
    """
    if isinstance(p_values, Mapping):
        names, values = list(p_values), list(p_values.values())
    else:
        values = list(p_values)
        names = [str(i) for i in range(len(values))]
    if not values:
        raise ValueError("holm needs at least one p-value (declare the family of comparisons)")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    p = np.asarray(values, dtype=float)
    if np.isnan(p).any() or (p < 0).any() or (p > 1).any():
        raise ValueError(f"p-values must lie in [0, 1], got {values}")
    m = p.size
    order = np.argsort(p, kind="stable")
    stepped = np.maximum.accumulate((m - np.arange(m)) * p[order])
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(stepped, 1.0)
    return [
        HolmResult(n, float(v), float(a), bool(a <= alpha)) for n, v, a in zip(names, p, adjusted)
    ]


def minimum_detectable_effect(
    sd_difference: float, n_prompts: int, alpha: float = 0.05, power: float = 0.8
) -> float:
    """Smallest true mean paired difference a two-sided test at ``alpha`` detects with ``power``.

    ``(z_{1 - alpha/2} + z_{power}) * sd / sqrt(n)``: the normal approximation of the paired test,
    with ``sd`` the standard deviation of the per-prompt differences (seed- and answer-averaged,
    e.g. :attr:`PairedComparison.sd_difference`) and ``n`` the number of prompts. At
    alpha 0.05 and power 0.8 the factor is 2.80. It ignores seed variance and the t correction,
    so it is a lower bound for small n or noisy seeds.

    Example:
        >>> round(minimum_detectable_effect(1.0, 100), 4)
        0.2802
    """
    if n_prompts < 2:
        raise ValueError(f"need at least 2 prompts, got {n_prompts}")
    if not (sd_difference >= 0 and math.isfinite(sd_difference)):
        raise ValueError(f"sd_difference must be finite and >= 0, got {sd_difference}")
    if not (0 < alpha < 1 and 0 < power < 1):
        raise ValueError(f"alpha and power must lie in (0, 1), got {alpha}, {power}")
    factor = norm.ppf(1 - alpha / 2) + norm.ppf(power)
    return float(factor * sd_difference / math.sqrt(n_prompts))
