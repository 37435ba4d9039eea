"""Paired cluster bootstrap, sign-flip test, shift ratios, Holm and the minimum detectable effect
against closed forms and hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from reptune.evaluation.paired import (
    as_score_table,
    compare_family,
    paired_comparison,
    shift_ratio,
    sign_flip_p_value,
)
from reptune.evaluation.stats import holm, minimum_detectable_effect

Z95 = 1.959963984540054


def test_constant_differences_give_a_point_interval():
    base = np.linspace(0.0, 1.0, 30)
    cmp = paired_comparison(base + 0.25, base, n_resamples=500)
    assert cmp.difference == pytest.approx(0.25)
    assert cmp.low == pytest.approx(0.25) and cmp.high == pytest.approx(0.25)
    assert cmp.effect_size == math.inf
    assert cmp.p_value == pytest.approx(2 / 501)  # every resample above 0


def test_normal_differences_match_the_closed_form_interval():
    rng = np.random.default_rng(7)
    n, sd = 400, 0.5
    base = rng.uniform(0, 1, n)
    diff = rng.normal(0.1, sd, n)
    cmp = paired_comparison(base + diff, base, n_resamples=4000, seed=1)
    half = Z95 * diff.std(ddof=1) / math.sqrt(n)
    assert cmp.difference == pytest.approx(diff.mean())
    assert cmp.low == pytest.approx(diff.mean() - half, abs=0.1 * half)
    assert cmp.high == pytest.approx(diff.mean() + half, abs=0.1 * half)
    assert cmp.effect_size == pytest.approx(diff.mean() / diff.std(ddof=1))
    assert cmp.sd_difference == pytest.approx(diff.std(ddof=1))


def test_answers_are_averaged_within_a_prompt():
    # Two answers per prompt: their mean is what is compared.
    cond = np.array([[1.0, 3.0], [2.0, 2.0], [0.0, 4.0]])
    ref = np.array([1.0, 1.0, 1.0])
    assert paired_comparison(cond, ref, n_resamples=200).difference == pytest.approx(1.0)
    # A missing answer (NaN) is left out of its prompt's mean.
    cond_nan = np.array([[1.0, np.nan], [2.0, 2.0], [0.0, 4.0]])
    assert paired_comparison(cond_nan, ref, n_resamples=200).difference == pytest.approx(
        ((1 + 2 + 2) / 3) - 1
    )


def test_seed_variance_is_inside_the_interval():
    # Every prompt gets the same difference within a seed, but seeds disagree: resampling prompts
    # alone would give a zero-width interval.
    n = 50
    seed_effects = np.array([-0.3, 0.0, 0.3])
    cond = np.zeros((n, 3, 1)) + seed_effects[None, :, None] + 0.1
    base = np.zeros(n)
    cmp = paired_comparison(cond, base, n_resamples=2000)
    assert cmp.difference == pytest.approx(0.1)
    assert cmp.high - cmp.low > 0.3  # the mean of 3 resampled seeds spans about +-0.3
    assert cmp.low < 0 < cmp.high and not cmp.significant
    assert (cmp.n_seeds, cmp.n_reference_seeds) == (3, 1)
    one_seed = paired_comparison(cond[:, 1:2] + 0.1, base, n_resamples=2000)
    assert one_seed.high - one_seed.low == pytest.approx(0.0, abs=1e-12)


def test_sign_flip_p_value_enumerates_exactly():
    # d = (1, 2, 3): |mean| >= 2 only for (+,+,+) and (-,-,-): 2 / 8.
    assert sign_flip_p_value([1.0, 2.0, 3.0]) == 0.25
    # d = (1, -1, 2): |sum| = 2 observed. Patterns and |sum|: +++ 2, ++- 2, +-+ 4, +-- 0,
    # -++ 0, -+- 4, --+ 2, --- 2: 6 of 8 reach 2.
    assert sign_flip_p_value([1.0, -1.0, 2.0]) == 0.75
    # d = (3, 1, 1, 1): mean 1.5; |sum| >= 6 for ++++ and ---- only: 2 / 16.
    assert sign_flip_p_value([3.0, 1.0, 1.0, 1.0]) == 2 / 16


def test_sign_flip_monte_carlo_for_many_prompts():
    rng = np.random.default_rng(0)
    null = rng.normal(0, 1, 200)
    assert sign_flip_p_value(null, n_resamples=2000) > 0.05 or abs(null.mean()) > 0.13
    assert sign_flip_p_value(null + 1.0, n_resamples=2000) == pytest.approx(1 / 2001)


def test_shift_ratio_known_answer():
    rng = np.random.default_rng(3)
    n = 60
    base = rng.uniform(0, 1, n)
    steered = base + rng.uniform(0.2, 0.6, n)
    tuned = base + 0.5 * (steered - base)  # exactly half of the steered shift on every prompt
    share = shift_ratio(tuned, base, steered, n_resamples=1000)
    assert share.value == pytest.approx(0.5)
    assert share.low == pytest.approx(0.5) and share.high == pytest.approx(0.5)
    assert share.stable and share.note == ""


def test_shift_ratio_interval_matches_delta_method():
    rng = np.random.default_rng(11)
    n = 400
    base = np.zeros(n)
    steered = rng.normal(1.0, 0.3, n)
    tuned = rng.normal(0.6, 0.3, n)  # independent of steered
    share = shift_ratio(tuned, base, steered, n_resamples=4000, seed=2)
    num, den = tuned.mean(), steered.mean()
    ratio = num / den
    se = abs(ratio) * math.sqrt(
        (tuned.std(ddof=1) / num) ** 2 / n + (steered.std(ddof=1) / den) ** 2 / n
    )
    assert share.value == pytest.approx(ratio)
    assert share.low == pytest.approx(ratio - Z95 * se, abs=0.15 * Z95 * se)
    assert share.high == pytest.approx(ratio + Z95 * se, abs=0.15 * Z95 * se)


def test_shift_ratio_flags_a_denominator_around_zero():
    rng = np.random.default_rng(5)
    base = np.zeros(40)
    steered = rng.normal(0.0, 1.0, 40)
    steered -= steered.mean() - 0.01
    share = shift_ratio(base + 0.3, base, steered, n_resamples=1000)
    assert not share.stable
    assert (share.low, share.high) == (-math.inf, math.inf)
    assert "includes 0" in share.note


def test_holm_matches_hand_computation():
    # Sorted: 0.005 (x4 = 0.02), 0.01 (x3 = 0.03), 0.03 (x2 = 0.06), 0.04 (x1 -> max 0.06).
    results = holm({"a": 0.04, "b": 0.005, "c": 0.03, "d": 0.01})
    adjusted = {r.name: r.p_adjusted for r in results}
    assert adjusted == pytest.approx({"a": 0.06, "b": 0.02, "c": 0.06, "d": 0.03})
    assert [r.reject for r in results] == [False, True, False, True]
    # Capped at 1, order of a plain sequence kept.
    assert [r.p_adjusted for r in holm([0.6, 0.5])] == pytest.approx([1.0, 1.0])


def test_holm_rejects_bad_input():
    with pytest.raises(ValueError, match="at least one"):
        holm([])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        holm([0.2, 1.5])


def test_compare_family_corrects_the_declared_comparisons():
    rng = np.random.default_rng(2)
    base = rng.uniform(0, 1, 40)
    scores = {"base": base, "steered": base + 0.3, "tuned": base + rng.normal(0, 0.2, 40)}
    family = compare_family(scores, [("steered", "base"), ("tuned", "base")], n_resamples=500)
    steered, holm_steered = family[("steered", "base")]
    tuned, holm_tuned = family[("tuned", "base")]
    assert steered.difference == pytest.approx(0.3)
    expected = holm({"s": steered.p_value, "t": tuned.p_value})
    assert holm_steered.p_adjusted == pytest.approx(expected[0].p_adjusted)
    assert holm_tuned.p_adjusted == pytest.approx(expected[1].p_adjusted)
    with pytest.raises(ValueError, match="without scores"):
        compare_family(scores, [("sft", "base")])


def test_minimum_detectable_effect_hand_check():
    # (1.959964 + 0.841621) * 0.5 / sqrt(64) = 0.175099
    assert minimum_detectable_effect(0.5, 64) == pytest.approx(2.801585 * 0.5 / 8, abs=1e-6)
    assert minimum_detectable_effect(1.0, 100, alpha=0.05, power=0.5) == pytest.approx(Z95 / 10)
    with pytest.raises(ValueError, match="at least 2"):
        minimum_detectable_effect(1.0, 1)


def test_bad_score_tables_are_refused():
    with pytest.raises(ValueError, match="same prompts"):
        paired_comparison(np.zeros(5), np.zeros(6))
    with pytest.raises(ValueError, match="no scored answer"):
        as_score_table(np.array([[1.0, 2.0], [np.nan, np.nan]]))
    with pytest.raises(ValueError, match="shape"):
        as_score_table(np.zeros((2, 2, 2, 2)))
    with pytest.raises(ValueError, match="at least 2 prompts"):
        as_score_table([1.0])
