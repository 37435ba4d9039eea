"""Sentiment scored by VADER, a published rule-based analyser with its lexicon in the wheel.

VADER (Hutto & Gilbert, ICWSM 2014; ``pip install vaderSentiment==3.3.2``) sums hand-rated
valences of words, adjusted for negation, intensifiers, "but", capitals and exclamation marks,
and squashes the sum into the *compound* score in ``[-1, 1]``: -1 = most negative, 0 = neutral,
+1 = most positive. It reads only the answer, never the model under test, and runs offline.

Example:
    >>> VaderSentiment().score(["How was it?"], ["It was not bad at all."])  # doctest: +SKIP
    [0.431]
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Sequence

from .base import Scorer, check_pairs

__all__ = ["VaderSentiment", "VADER_INSTALL"]

VADER_INSTALL = "pip install vaderSentiment==3.3.2"


class VaderSentiment(Scorer):
    """VADER compound sentiment of each answer, in ``[-1, 1]`` (higher = more positive).

    :meth:`to_unit` maps ``[-1, 1]`` linearly onto ``[0, 1]``; pass ``higher_is_better=False``
    when the behaviour is negativity.

    Example:
        >>> VaderSentiment().score(["Q"], ["I love it!"])[0] > 0.5  # doctest: +SKIP
        True
    """

    axis = "behaviour"
    score_range = (-1.0, 1.0)

    def __init__(self, higher_is_better: bool = True):
        try:
            from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
        except ImportError as err:
            raise ImportError(f"VADER is not installed; install it with: {VADER_INSTALL}") from err
        version = importlib.metadata.version("vaderSentiment")
        self.name = f"VADER compound (vaderSentiment {version})"
        self.higher_is_better = higher_is_better
        self._analyser = SentimentIntensityAnalyzer()

    def score(self, prompts: Sequence[str], answers: Sequence[str]) -> list[float]:
        check_pairs(prompts, answers)
        return [float(self._analyser.polarity_scores(a)["compound"]) for a in answers]
