"""Wilson intervals against the closed form and published values; paired bootstrap."""

from __future__ import annotations

import math

import numpy as np
import pytest

from reptune.evaluation.stats import paired_bootstrap, rate, wilson_interval

Z95 = 1.959963984540054


def closed_form(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    # Wilson (1927): (p + z^2/2n +- z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)
    p = k / n
    center = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return center - half, center + half


@pytest.mark.parametrize("k,n", [(81, 100), (162, 200), (0, 10), (10, 10), (1, 3), (500, 1000)])
def test_wilson_matches_closed_form(k, n):
    low, high = wilson_interval(k, n)
    ref_low, ref_high = closed_form(k, n)
    assert low == pytest.approx(max(ref_low, 0.0), abs=1e-12)
    assert high == pytest.approx(min(ref_high, 1.0), abs=1e-12)


# Newcombe (1998), "Two-sided confidence intervals for the single proportion", Table I,
# method 3 (score interval without continuity correction).
@pytest.mark.parametrize(
    "k,n,low,high",
    [
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
        (29, 29, 0.8830, 1.0),
    ],
)
def test_wilson_textbook_values(k, n, low, high):
    got = wilson_interval(k, n)
    assert got == pytest.approx((low, high), abs=5e-5)


def test_rate_and_edge_cases():
    r = rate(162, 200)
    assert r.value == 0.81 and r.n == 200
    assert str(r) == "81.0% [75.0, 85.8] (n=200)"
    assert wilson_interval(5, 10, confidence=0.99)[0] < wilson_interval(5, 10)[0]
    empty = rate(0, 0)
    assert math.isnan(empty.value) and math.isnan(empty.low)
    with pytest.raises(ValueError):
        wilson_interval(11, 10)


def _mean_diff(a, b, axis=-1):
    return (b - a).mean(axis=axis)


def test_paired_bootstrap_interval_covers_the_shift():
    rng = np.random.default_rng(0)
    a = rng.normal(size=200)
    b = a + 0.3 + rng.normal(scale=0.1, size=200)
    diff = paired_bootstrap((a, b), _mean_diff, n_resamples=2000, seed=1)
    assert diff.low < 0.3 < diff.high
    assert diff.significant and diff.n == 200
    # Pairing matters: unpaired noise of the same size would give a far wider interval.
    assert diff.high - diff.low < 0.1
    again = paired_bootstrap((a, b), _mean_diff, n_resamples=2000, seed=1)
    assert again == diff


def test_paired_bootstrap_identical_samples_and_errors():
    a = np.arange(10.0)
    same = paired_bootstrap((a, a), _mean_diff, n_resamples=200)
    assert (same.estimate, same.low, same.high) == (0.0, 0.0, 0.0)
    assert not same.significant
    with pytest.raises(ValueError, match="same length"):
        paired_bootstrap((a, a[:5]), _mean_diff)
    with pytest.raises(ValueError, match="at least 2"):
        paired_bootstrap(([1.0], [2.0]), _mean_diff)
