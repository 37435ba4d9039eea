"""Statistics that compare conditions on the same prompts: a paired cluster bootstrap, ratios of
shifts, and a declared family of comparisons corrected with :func:`~reptune.evaluation.stats.holm`.

Scores are arrays of shape ``(prompts, seeds, answers)``: one row per prompt (the unit of
resampling), one column per training seed of the condition (1 for conditions without training,
such as base or steered) and one entry per answer (greedy plus samples). A 1-D array is read as
``(prompts,)`` (one seed, one answer), a 2-D array as ``(prompts, answers)`` (one seed); stack
seeds with ``np.stack(per_seed, axis=1)``. NaN marks a missing answer.

**The bootstrap.** Each resample draws the prompts with replacement *and*, independently for each
condition, its training seeds with replacement (prompts and seeds are crossed: every seed answers
every prompt, so resampling prompts alone would hide the seed-to-seed variation). Answers are
averaged within a prompt and seed, not resampled. The interval therefore holds the variation
between prompts and between training seeds. With a single seed the seed draw is trivial and the
method is the ordinary paired (cluster) bootstrap over prompts.

Example:
    >>> cmp = paired_comparison(tuned_scores, base_scores)
    >>> cmp.difference, cmp.low, cmp.high, cmp.p_value, cmp.effect_size
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from .stats import HolmResult, holm

__all__ = [
    "as_score_table",
    "PairedComparison",
    "paired_comparison",
    "sign_flip_p_value",
    "ShiftRatio",
    "shift_ratio",
    "compare_family",
]

#: Exact sign-flip enumeration up to this many prompts (2**16 sign patterns); Monte Carlo above.
EXACT_SIGN_FLIP_MAX = 16


def as_score_table(scores, name: str = "scores") -> np.ndarray:
    """``scores`` as a float array ``(prompts, seeds, answers)``, checked.

    Example:
        >>> as_score_table([[0.1, 0.3], [0.5, 0.4]]).shape  # 2 prompts, 1 seed, 2 answers
        (2, 1, 2)
    """
    arr = np.asarray(scores, dtype=float)
    if arr.ndim == 1:
        arr = arr[:, None, None]
    elif arr.ndim == 2:
        arr = arr[:, None, :]
    elif arr.ndim != 3:
        raise ValueError(
            f"{name} must have shape (prompts,), (prompts, answers) or "
            f"(prompts, seeds, answers), got {arr.shape}"
        )
    if arr.shape[0] < 2:
        raise ValueError(f"{name}: a paired bootstrap needs at least 2 prompts, got {arr.shape[0]}")
    if np.isinf(arr).any():
        raise ValueError(f"{name} holds infinite scores; score every answer with a finite value")
    empty = np.isnan(arr).all(axis=2)
    if empty.any():
        prompt, seed = map(int, np.argwhere(empty)[0])
        raise ValueError(
            f"{name}: prompt {prompt}, seed {seed} has no scored answer (all NaN); "
            "drop that prompt from every condition or score its answers"
        )
    return arr


def _seed_means(scores, name: str) -> np.ndarray:
    """Per-prompt, per-seed means over answers: ``(prompts, seeds)``."""
    return np.nanmean(as_score_table(scores, name), axis=2)


def _resampled_means(means: np.ndarray, prompt_weights: np.ndarray, rng) -> np.ndarray:
    """Mean of ``means`` (prompts, seeds) under each resample: prompt weights (B, prompts) are
    given (shared by paired conditions); seed weights are drawn here for this condition."""
    n_seeds = means.shape[1]
    seed_weights = rng.multinomial(n_seeds, np.full(n_seeds, 1 / n_seeds), prompt_weights.shape[0])
    return np.einsum("bi,is,bs->b", prompt_weights, means, seed_weights / n_seeds)


def _prompt_weights(n_prompts: int, n_resamples: int, rng) -> np.ndarray:
    counts = rng.multinomial(n_prompts, np.full(n_prompts, 1 / n_prompts), n_resamples)
    return counts / n_prompts


def sign_flip_p_value(
    differences: Sequence[float], n_resamples: int = 9999, seed: int = 0
) -> float:
    """Two-sided paired sign-flip (permutation) p-value of ``mean(differences) == 0``.

    Under the null each per-prompt difference is symmetric around 0, so its sign is arbitrary. The
    p-value is the share of sign patterns whose ``|mean|`` reaches the observed one: every pattern
    up to :data:`EXACT_SIGN_FLIP_MAX` prompts (exact), else ``n_resamples`` random patterns with
    the ``(k + 1) / (n + 1)`` correction.

    Example:
        >>> sign_flip_p_value([1.0, 2.0, 3.0])  # 2 of the 8 patterns reach |mean| = 2
        0.25
    """
    d = np.asarray(differences, dtype=float)
    if d.ndim != 1 or d.size < 1 or not np.isfinite(d).all():
        raise ValueError("sign_flip_p_value needs a 1-D array of finite per-prompt differences")
    observed = abs(d.mean())
    tolerance = 1e-12 * max(1.0, float(np.abs(d).max()))
    if d.size <= EXACT_SIGN_FLIP_MAX:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=d.size)))
        return float(np.mean(np.abs(signs @ d / d.size) >= observed - tolerance))
    rng = np.random.default_rng(seed)
    signs = rng.choice((1.0, -1.0), size=(n_resamples, d.size))
    hits = int(np.sum(np.abs(signs @ d / d.size) >= observed - tolerance))
    return (hits + 1) / (n_resamples + 1)


@dataclass(frozen=True)
class PairedComparison:
    """A condition minus a reference on the same prompts, with its paired bootstrap interval.

    ``difference`` is the mean over prompts of (condition - reference), each averaged over its
    seeds and answers. ``p_value`` inverts the percentile bootstrap (two-sided; seed variance
    inside); ``p_sign_flip`` is the sign-flip test of the per-prompt differences (prompts only).
    ``effect_size`` is Cohen's d_z: ``difference / sd`` of the per-prompt differences.

    Example:
        >>> str(paired_comparison(tuned, base))
        '+0.120 [+0.050, +0.190] p=0.0012 d_z=0.41 (n=120 prompts, 3 seeds vs 1)'
    """

    difference: float
    low: float
    high: float
    p_value: float
    p_sign_flip: float
    effect_size: float
    sd_difference: float
    n_prompts: int
    n_seeds: int
    n_reference_seeds: int
    confidence: float
    n_resamples: int

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def significant(self) -> bool:
        """True when the interval excludes zero (before any multiplicity correction)."""
        return not (self.low <= 0.0 <= self.high)

    def __str__(self) -> str:
        return (
            f"{self.difference:+.3f} [{self.low:+.3f}, {self.high:+.3f}] "
            f"p={self.p_value:.2g} d_z={self.effect_size:.2f} (n={self.n_prompts} prompts, "
            f"{self.n_seeds} seeds vs {self.n_reference_seeds})"
        )


def _percentile_interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1 - confidence) / 2
    low, high = np.quantile(values, [tail, 1 - tail])
    return float(low), float(high)


def _snap(bound: float, estimate: float) -> float:
    """``estimate`` when ``bound`` differs from it only by rounding (a point interval)."""
    return estimate if abs(bound - estimate) <= 1e-12 * max(1.0, abs(estimate)) else bound


def _bootstrap_p_value(values: np.ndarray) -> float:
    """Two-sided p-value from the bootstrap distribution: twice the smaller share of resamples on
    either side of 0 (with the ``+1`` correction), capped at 1."""
    below = (np.sum(values <= 0) + 1) / (values.size + 1)
    above = (np.sum(values >= 0) + 1) / (values.size + 1)
    return float(min(1.0, 2 * min(below, above)))


def _check_confidence(confidence: float, n_resamples: int) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    if n_resamples < 100:
        raise ValueError(f"use at least 100 bootstrap resamples, got {n_resamples}")


def paired_comparison(
    condition,
    reference,
    *,
    confidence: float = 0.95,
    n_resamples: int = 9999,
    seed: int = 0,
) -> PairedComparison:
    """Condition minus reference on the same prompts: mean difference, percentile interval from
    the prompt-and-seed bootstrap (see the module notes), p-values and Cohen's d_z.

    ``condition`` and ``reference`` are score tables (see :func:`as_score_table`) with the same
    prompts in the same order; their seed and answer counts may differ.

    Example:
        >>> tuned = np.stack([scores_seed0, scores_seed1, scores_seed2], axis=1)  # (n, 3, answers)
        >>> paired_comparison(tuned, base_scores).p_value
    """
    _check_confidence(confidence, n_resamples)
    cond, ref = _seed_means(condition, "condition"), _seed_means(reference, "reference")
    if cond.shape[0] != ref.shape[0]:
        raise ValueError(
            f"condition has {cond.shape[0]} prompts, reference {ref.shape[0]}: "
            "score both on the same prompts"
        )
    per_prompt = cond.mean(axis=1) - ref.mean(axis=1)
    rng = np.random.default_rng(seed)
    weights = _prompt_weights(per_prompt.size, n_resamples, rng)
    boot = _resampled_means(cond, weights, rng) - _resampled_means(ref, weights, rng)
    low, high = _percentile_interval(boot, confidence)
    difference = float(per_prompt.mean())
    sd = float(per_prompt.std(ddof=1))
    return PairedComparison(
        difference=difference,
        low=_snap(low, difference),
        high=_snap(high, difference),
        p_value=_bootstrap_p_value(boot),
        p_sign_flip=sign_flip_p_value(per_prompt, n_resamples, seed),
        effect_size=_cohen_dz(difference, sd),
        sd_difference=sd,
        n_prompts=int(per_prompt.size),
        n_seeds=int(cond.shape[1]),
        n_reference_seeds=int(ref.shape[1]),
        confidence=confidence,
        n_resamples=n_resamples,
    )


def _cohen_dz(mean: float, sd: float) -> float:
    if sd > 1e-12 * max(1.0, abs(mean)):
        return mean / sd
    return 0.0 if abs(mean) <= 1e-12 else math.copysign(math.inf, mean)


@dataclass(frozen=True)
class ShiftRatio:
    """``(condition - reference) / (target - reference)`` with a paired bootstrap interval.

    When the denominator's own interval includes 0 the ratio is unstable (Fieller: its interval is
    unbounded); then ``low``/``high`` are ``-inf``/``+inf``, ``stable`` is False and ``note``
    says why.

    Example:
        >>> share = shift_ratio(tuned, base, steered)  # share of the steered shift
        >>> share.value, share.low, share.high, share.note
    """

    value: float
    low: float
    high: float
    numerator: float
    denominator: float
    denominator_low: float
    denominator_high: float
    stable: bool
    note: str
    n_prompts: int
    confidence: float

    def as_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        text = f"{100 * self.value:.0f}% [{100 * self.low:.0f}, {100 * self.high:.0f}]"
        return text if self.stable else f"{text} ({self.note})"


def shift_ratio(
    condition,
    reference,
    target,
    *,
    confidence: float = 0.95,
    n_resamples: int = 9999,
    seed: int = 0,
) -> ShiftRatio:
    """The share of the target's shift that the condition reaches, e.g. ``(tuned - base) /
    (steered - base)``, bootstrapped jointly: the same prompt resamples for all three tables,
    each table's seeds resampled on their own; the ratio of resampled mean shifts gives the
    percentile interval.

    Example:
        >>> shift_ratio(tuned, base, steered).value  # 1.0: as far as steering moves it
    """
    _check_confidence(confidence, n_resamples)
    tables = [
        _seed_means(x, name)
        for x, name in ((condition, "condition"), (reference, "reference"), (target, "target"))
    ]
    if len({t.shape[0] for t in tables}) != 1:
        raise ValueError(
            "condition, reference and target must be scored on the same prompts; "
            f"got {[t.shape[0] for t in tables]} prompts"
        )
    cond, ref, tgt = tables
    numerator = float(cond.mean() - ref.mean())
    denominator = float(tgt.mean() - ref.mean())
    rng = np.random.default_rng(seed)
    weights = _prompt_weights(cond.shape[0], n_resamples, rng)
    boot_ref = _resampled_means(ref, weights, rng)
    boot_num = _resampled_means(cond, weights, rng) - boot_ref
    boot_den = _resampled_means(tgt, weights, rng) - boot_ref
    den_low, den_high = _percentile_interval(boot_den, confidence)
    stable = not (den_low <= 0.0 <= den_high) and denominator != 0.0
    value = numerator / denominator if denominator != 0.0 else math.nan
    if stable:
        low, high = _percentile_interval(boot_num / boot_den, confidence)
        low, high, note = _snap(low, value), _snap(high, value), ""
    else:
        low, high = -math.inf, math.inf
        note = (
            f"undefined: the denominator's {100 * confidence:.0f}% interval "
            f"[{den_low:+.3f}, {den_high:+.3f}] includes 0"
        )
    return ShiftRatio(
        value,
        low,
        high,
        numerator,
        denominator,
        den_low,
        den_high,
        stable,
        note,
        int(cond.shape[0]),
        confidence,
    )


def compare_family(
    scores: Mapping[str, object],
    comparisons: Sequence[tuple[str, str]],
    *,
    alpha: float = 0.05,
    confidence: float = 0.95,
    n_resamples: int = 9999,
    seed: int = 0,
) -> dict[tuple[str, str], tuple[PairedComparison, HolmResult]]:
    """Every declared ``(condition, reference)`` comparison with its Holm-adjusted p-value.

    ``scores`` maps a condition name to its score table; the family is exactly ``comparisons``,
    corrected together on the bootstrap p-values.

    Example:
        >>> family = compare_family({"base": b, "steered": s, "tuned": t},
        ...                         [("tuned", "base"), ("tuned", "steered"), ("steered", "base")])
        >>> family[("tuned", "base")][1].reject
    """
    unknown = sorted({name for pair in comparisons for name in pair} - set(scores))
    if unknown:
        raise ValueError(
            f"comparisons name conditions without scores: {unknown}; scored: {sorted(scores)}"
        )
    if len(set(comparisons)) != len(comparisons):
        raise ValueError("a comparison is declared twice; declare each (condition, reference) once")
    results = {
        pair: paired_comparison(
            scores[pair[0]],
            scores[pair[1]],
            confidence=confidence,
            n_resamples=n_resamples,
            seed=seed,
        )
        for pair in comparisons
    }
    corrected = holm({f"{a} vs {b}": r.p_value for (a, b), r in results.items()}, alpha)
    return {pair: (results[pair], h) for pair, h in zip(results, corrected)}
