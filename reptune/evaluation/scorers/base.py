"""The interface every independent scorer implements.

A scorer reads prompts and the answers given to them and returns one float per answer. Its
``name`` names the judge (shown as a report column), ``axis`` says which quality it measures
("behaviour", "fluency" or "relevance"), ``score_range`` bounds the raw scores and
``higher_is_better`` says which way is good. :meth:`Scorer.to_unit` maps raw scores onto
``[0, 1]`` with 1 = best, the scale AxBench's harmonic mean of behaviour, fluency and relevance
expects; each scorer documents its map. A score of ``nan`` means "no score" (e.g. a judge's
unparseable verdict); it stays ``nan`` under :meth:`Scorer.to_unit` and callers drop it.

Example:
    >>> from reptune.evaluation.scorers import VaderSentiment
    >>> scorer = VaderSentiment()
    >>> scorer.score(["Describe your day."], ["It was a wonderful day!"])  # doctest: +SKIP
    [0.6239]
    >>> scorer.to_unit([0.6239])  # doctest: +SKIP
    [0.81195]
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence

__all__ = ["AXES", "Scorer", "check_pairs", "linear_unit"]

AXES = ("behaviour", "fluency", "relevance")


def check_pairs(prompts: Sequence[str], answers: Sequence[str]) -> None:
    """Raise ValueError unless ``prompts`` and ``answers`` are equally long lists of strings.

    Example:
        >>> check_pairs(["Q?"], ["A."])
    """
    if isinstance(prompts, str) or isinstance(answers, str):
        raise ValueError("give lists of prompts and answers, not single strings")
    if len(prompts) != len(answers):
        raise ValueError(f"got {len(prompts)} prompts but {len(answers)} answers; give one each")
    for what, items in (("prompt", prompts), ("answer", answers)):
        bad = [i for i, x in enumerate(items) if not isinstance(x, str)]
        if bad:
            raise ValueError(f"{what} {bad[0]} is {type(items[bad[0]]).__name__}, not a string")


def linear_unit(value: float, low: float, high: float, higher_is_better: bool = True) -> float:
    """``value`` mapped linearly from ``[low, high]`` onto ``[0, 1]`` (flipped when lower is
    better), clipped to the interval; ``nan`` stays ``nan``.

    Example:
        >>> linear_unit(0.0, -1.0, 1.0)
        0.5
    """
    if math.isnan(value):
        return value
    unit = (value - low) / (high - low)
    unit = min(1.0, max(0.0, unit))
    return unit if higher_is_better else 1.0 - unit


class Scorer(ABC):
    """One judge that scores answers to prompts, independent of the model under test.

    Subclasses set ``name``, ``axis``, ``higher_is_better`` and ``score_range`` and implement
    :meth:`score`. The default :meth:`to_unit` is the linear map of ``score_range`` onto
    ``[0, 1]``; scorers with an unbounded range override it.

    Example:
        >>> class Length(Scorer):
        ...     name, axis, higher_is_better, score_range = "length", "fluency", True, (0, 100)
        ...     def score(self, prompts, answers):
        ...         return [float(len(a)) for a in answers]
        >>> Length().to_unit([50.0])
        [0.5]
    """

    name: str = ""
    axis: str = ""
    higher_is_better: bool = True
    score_range: tuple[float, float] = (0.0, 1.0)

    @abstractmethod
    def score(self, prompts: Sequence[str], answers: Sequence[str]) -> list[float]:
        """One score per answer (``answers[i]`` was given to ``prompts[i]``)."""

    def to_unit(self, scores: Sequence[float]) -> list[float]:
        """Scores mapped onto ``[0, 1]``, 1 = best (AxBench-style harmonic means need this)."""
        low, high = self.score_range
        return [linear_unit(float(s), low, high, self.higher_is_better) for s in scores]

    def describe(self) -> dict:
        """Name, axis, direction and range, for report headers and stage files."""
        return {
            "name": self.name,
            "axis": self.axis,
            "higher_is_better": self.higher_is_better,
            "score_range": list(self.score_range),
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"
