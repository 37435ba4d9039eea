"""Does a scorer agree with human labels? Agreement with a 95% interval and a headline rule.

The metric follows the labels:

- two label values (e.g. fluent 1 / degenerate 0): **AUROC**, the chance that a randomly drawn
  higher-labelled item outscores a lower-labelled one (ties count half); chance = 0.5. Interval:
  percentile bootstrap resampling each label group apart (:func:`scipy.stats.bootstrap`).
- more label values (e.g. -1 / 0 / +1): **Spearman** rank correlation; chance = 0. Interval:
  percentile bootstrap over the (score, label) pairs.
- ``metric="accuracy"`` with a ``threshold`` on two label values: the share of items on the
  right side of the threshold, with a Wilson interval; chance = the majority label's share.

**Headline rule**: a scorer *agrees* when the interval's lower bound lies above the chance bar
(``low > bar``). A scorer that does not agree must not enter a headline: :func:`headline_scorers`
drops it and :func:`require_agreement` raises. Scores are flipped for scorers where lower is
better; ``nan`` scores are dropped and counted. :func:`agreement_by_group` breaks the same metric
down by group (e.g. by the condition that generated each answer).

Example:
    >>> result = agreement([0.9, 0.8, 0.7, 0.2, 0.1, 0.3] * 5, [1, 1, 1, 0, 0, 0] * 5)
    >>> result.metric, result.value, result.passes
    ('auroc', 1.0, True)
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import bootstrap, spearmanr

from ..stats import wilson_interval
from .base import Scorer

__all__ = [
    "Agreement",
    "agreement",
    "agreement_by_group",
    "validate_scorer",
    "headline_scorers",
    "require_agreement",
    "auroc",
]

METRICS = ("auroc", "spearman", "accuracy")


@dataclass(frozen=True)
class Agreement:
    """A scorer's agreement with labels: ``value`` in ``[low, high]`` against the chance ``bar``.

    Example:
        >>> str(agreement([1.0, 0.0] * 10, [1, 0] * 10))
        'auroc 1.000 [1.000, 1.000] vs chance 0.500, n=20: agrees'
    """

    metric: str
    value: float
    low: float
    high: float
    n: int
    bar: float
    n_dropped: int = 0
    confidence: float = 0.95
    scorer: str = ""

    @property
    def passes(self) -> bool:
        """True when the interval's lower bound lies above the chance bar."""
        return self.low > self.bar

    def as_dict(self) -> dict:
        return {**asdict(self), "passes": self.passes}

    def __str__(self) -> str:
        verdict = "agrees" if self.passes else "does NOT agree (kept out of headlines)"
        dropped = f", {self.n_dropped} unscored" if self.n_dropped else ""
        return (
            f"{self.metric} {self.value:.3f} [{self.low:.3f}, {self.high:.3f}] vs chance "
            f"{self.bar:.3f}, n={self.n}{dropped}: {verdict}"
        )


def auroc(high_scores, low_scores, axis: int = -1):
    """P(a score of the higher-labelled group > one of the lower group), ties counting half.

    Vectorised over leading axes (as :func:`scipy.stats.bootstrap` needs).

    Example:
        >>> float(auroc([3.0, 2.0], [1.0, 2.0]))
        0.875
    """
    a = np.moveaxis(np.asarray(high_scores, dtype=float), axis, -1)[..., :, None]
    b = np.moveaxis(np.asarray(low_scores, dtype=float), axis, -1)[..., None, :]
    return ((a > b) + 0.5 * (a == b)).mean(axis=(-2, -1))


def _spearman(x, y):
    return spearmanr(x, y).statistic


def _bootstrap(data, statistic, paired, confidence, seed, vectorized):
    ci = bootstrap(
        data,
        statistic,
        paired=paired,
        vectorized=vectorized,
        n_resamples=2000,
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(seed),
    ).confidence_interval
    return float(ci.low), float(ci.high)


def _oriented(scores, labels, higher_is_better: bool):
    """Scores flipped so higher is better, with their labels; ``nan`` scores dropped, counted."""
    if len(scores) != len(labels):
        raise ValueError(f"got {len(scores)} scores but {len(labels)} labels")
    s = np.asarray(scores, dtype=float) * (1.0 if higher_is_better else -1.0)
    y = np.asarray(labels, dtype=float)
    keep = ~np.isnan(s)
    return s[keep], y[keep], int((~keep).sum())


def agreement(
    scores: Sequence[float],
    labels: Sequence[float],
    *,
    higher_is_better: bool = True,
    metric: str | None = None,
    threshold: float | None = None,
    confidence: float = 0.95,
    seed: int = 0,
    scorer: str = "",
) -> Agreement:
    """Agreement of ``scores`` with ``labels`` (higher label = more of what the scorer rewards).

    Example:
        >>> agreement([0.1, 0.5, 0.9] * 10, [-1, 0, 1] * 10).metric
        'spearman'
    """
    s, y, dropped = _oriented(scores, labels, higher_is_better)
    levels = np.unique(y)
    if len(levels) < 2:
        raise ValueError("labels need at least two different values to measure agreement")
    metric = metric or ("auroc" if len(levels) == 2 else "spearman")
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    if metric != "spearman" and len(levels) != 2:
        raise ValueError(f"{metric} needs two label values, got {levels.tolist()}")
    common = dict(n=len(s), n_dropped=dropped, confidence=confidence, scorer=scorer)
    if metric == "auroc":
        high, low = s[y == levels[1]], s[y == levels[0]]
        ci = _bootstrap((high, low), auroc, False, confidence, seed, True)
        return Agreement("auroc", float(auroc(high, low)), *ci, bar=0.5, **common)
    if metric == "spearman":
        ci = _bootstrap((s, y), _spearman, True, confidence, seed, False)
        return Agreement("spearman", float(_spearman(s, y)), *ci, bar=0.0, **common)
    if threshold is None:
        raise ValueError("metric='accuracy' needs threshold=<score above which the label is high>")
    cut = threshold if higher_is_better else -threshold
    correct = int(((s > cut) == (y == levels[1])).sum())
    low, high = wilson_interval(correct, len(s), confidence)
    majority = max((y == levels[1]).mean(), (y == levels[0]).mean())
    return Agreement("accuracy", correct / len(s), low, high, bar=float(majority), **common)


def agreement_by_group(
    scores: Sequence[float],
    labels: Sequence[float],
    groups: Sequence[str],
    *,
    metric: str,
    higher_is_better: bool = True,
    confidence: float = 0.95,
    seed: int = 0,
) -> list[dict]:
    """:func:`agreement`'s ``metric`` (``"auroc"`` or ``"spearman"``) within each group, in the
    order groups first appear: one dict each with ``group``, ``n`` (scored items), ``metric``,
    ``value``, ``low``, ``high`` and ``note``; None where not computable, and the note says why.

    A group whose labels all share one value has no AUROC or Spearman: it is skipped. The
    interval is :func:`agreement`'s bootstrap; where a label value has one item (AUROC) or a
    resample has no Spearman (one label value or constant scores), the value comes without one.

    Example:
        >>> rows = agreement_by_group([3, 1, 2, 2], [1, 0, 1, 1], "aabb", metric="auroc")
        >>> rows[0]["value"], rows[1]["note"]
        (1.0, 'every label is 1: auroc undefined, skipped')
    """
    if metric not in ("auroc", "spearman"):
        raise ValueError(f"metric must be 'auroc' or 'spearman' per group, got {metric!r}")
    if len(groups) != len(scores):
        raise ValueError(f"got {len(scores)} scores but {len(groups)} groups")
    rows = []
    for group in dict.fromkeys(groups):
        members = [i for i, g in enumerate(groups) if g == group]
        s, y, _ = _oriented(
            [scores[i] for i in members], [labels[i] for i in members], higher_is_better
        )
        rows.append({"group": group, **_group_agreement(s, y, metric, confidence, seed)})
    return rows


def _group_agreement(s, y, metric: str, confidence: float, seed: int) -> dict:
    row = {"n": len(s), "metric": metric, "value": None, "low": None, "high": None, "note": ""}
    levels = np.unique(y)
    if len(levels) < 2:
        what = f"every label is {levels[0]:g}" if len(levels) else "no scored item"
        return row | {"note": f"{what}: {metric} undefined, skipped"}
    if metric == "auroc" and len(levels) != 2:
        raise ValueError(f"auroc needs two label values, got {levels.tolist()}")
    by_rank = metric == "auroc"
    data = (s[y == levels[1]], s[y == levels[0]]) if by_rank else (s, y)
    statistic = auroc if by_rank else _spearman
    with warnings.catch_warnings():  # constant inputs and degenerate resamples give nan
        warnings.simplefilter("ignore")
        value = float(statistic(*data))
        if math.isnan(value):
            return row | {"note": f"constant scores: {metric} undefined"}
        try:
            low, high = _bootstrap(data, statistic, not by_rank, confidence, seed, by_rank)
        except ValueError:  # scipy cannot resample a sample of one item
            return row | {"value": value, "note": "a label value has one item: no interval"}
    if math.isnan(low) or math.isnan(high):
        note = f"some resamples have one label value or constant scores, so no {metric}"
        return row | {"value": value, "note": f"{note}: no interval"}
    return row | {"value": value, "low": low, "high": high}


def validate_scorer(
    scorer: Scorer,
    prompts: Sequence[str],
    answers: Sequence[str],
    labels: Sequence[float],
    **kwargs,
) -> Agreement:
    """Run ``scorer`` on labelled answers and measure its :func:`agreement` with the labels.

    Example:
        >>> result = validate_scorer(VaderSentiment(), prompts, texts, labels)  # doctest: +SKIP
        >>> result.passes  # doctest: +SKIP
        True
    """
    scores = scorer.score(prompts, answers)
    return agreement(
        scores, labels, higher_is_better=scorer.higher_is_better, scorer=scorer.name, **kwargs
    )


def headline_scorers(scorers: Sequence[Scorer], agreements: Sequence[Agreement]) -> list[Scorer]:
    """The scorers whose agreement passes (the only ones a headline may use).

    Example:
        >>> headline_scorers([vader, self_judge], [agree_vader, agree_self])  # doctest: +SKIP
        [VaderSentiment('VADER compound (vaderSentiment 3.3.2)')]
    """
    if len(scorers) != len(agreements):
        raise ValueError("give one agreement per scorer")
    return [s for s, a in zip(scorers, agreements) if a.passes]


def require_agreement(result: Agreement) -> None:
    """Raise ValueError when ``result`` does not pass the headline rule.

    Example:
        >>> require_agreement(agreement([1.0, 0.0] * 10, [1, 0] * 10))
    """
    if not result.passes or math.isnan(result.low):
        raise ValueError(
            f"scorer {result.scorer or '(unnamed)'} does not agree with the labels: {result}; "
            "it must not enter a headline"
        )
