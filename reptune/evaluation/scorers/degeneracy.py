"""Degeneracy of one answer on its own: distinct-n and the share of words in repeated n-grams.

Both read the answer's words (lower-cased runs of letters, digits and apostrophes, so
punctuation and spacing do not count) and need no model:

- :class:`DistinctN`: ``distinct-n = (distinct n-grams) / (n-grams)`` within the answer
  (Li et al., 2016, computed per answer), in ``[0, 1]``, higher = more varied. "good good good
  good" has distinct-1 = 1/4 and distinct-2 = 1/3.
- :class:`RepeatedNgramRate`: the share of the answer's words that lie inside an n-gram
  occurring more than once in it, in ``[0, 1]``, lower = less looping. In "a b c a b c d" with
  n = 3, "a b c" occurs twice, so 6 of 7 words are covered: 6/7.

An answer with fewer than n words has no n-grams and scores ``nan`` (no evidence either way).

Example:
    >>> DistinctN(1).score(["Q"], ["good good good good"])
    [0.25]
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

from .base import Scorer, check_pairs

__all__ = ["words", "DistinctN", "RepeatedNgramRate"]

_WORD = re.compile(r"[\w']+")


def words(text: str) -> list[str]:
    """Lower-cased words of ``text``.

    Example:
        >>> words("Good, good... GOOD!")
        ['good', 'good', 'good']
    """
    return _WORD.findall(text.lower())


def _ngrams(tokens: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def _check_n(n: int) -> None:
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")


class DistinctN(Scorer):
    """Distinct n-grams over all n-grams within each answer, in ``[0, 1]`` (higher is better).

    Example:
        >>> DistinctN(2).score(["Q"], ["good good good good"])
        [0.3333333333333333]
    """

    axis = "fluency"
    higher_is_better = True
    score_range = (0.0, 1.0)

    def __init__(self, n: int = 1):
        _check_n(n)
        self.n = n
        self.name = f"distinct-{n} (words)"

    def score(self, prompts: Sequence[str], answers: Sequence[str]) -> list[float]:
        check_pairs(prompts, answers)
        scores = []
        for answer in answers:
            grams = _ngrams(words(answer), self.n)
            scores.append(len(set(grams)) / len(grams) if grams else math.nan)
        return scores


class RepeatedNgramRate(Scorer):
    """Share of each answer's words inside an n-gram seen more than once in it (lower is better).

    Example:
        >>> RepeatedNgramRate(3).score(["Q"], ["a b c a b c d"])
        [0.8571428571428571]
    """

    axis = "fluency"
    higher_is_better = False
    score_range = (0.0, 1.0)

    def __init__(self, n: int = 3):
        _check_n(n)
        self.n = n
        self.name = f"repeated {n}-gram word share"

    def score(self, prompts: Sequence[str], answers: Sequence[str]) -> list[float]:
        check_pairs(prompts, answers)
        scores = []
        for answer in answers:
            tokens = words(answer)
            grams = _ngrams(tokens, self.n)
            if not grams:
                scores.append(math.nan)
                continue
            counts = Counter(grams)
            covered = set()
            for start, gram in enumerate(grams):
                if counts[gram] > 1:
                    covered.update(range(start, start + self.n))
            scores.append(len(covered) / len(tokens))
        return scores
