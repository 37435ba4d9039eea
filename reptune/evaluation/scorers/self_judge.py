"""The self-judge as one more column: a behaviour score computed by the model under test.

Not independent of the model under test; it stays available so reports can show how far it
agrees with the independent scorers, labelled as what it is. The behaviour supplies the score
function (for sentiment, :func:`reptune.behaviours.sentiment.positivity` bound to the untuned
model), so this module knows no behaviour.

Example:
    >>> from functools import partial
    >>> from reptune.behaviours.sentiment import positivity
    >>> scorer = SelfJudge(partial(positivity, base_model, tokenizer))  # doctest: +SKIP
    >>> scorer.score(["Q"], ["What a lovely day."])  # doctest: +SKIP
    [0.93]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .base import Scorer, check_pairs

__all__ = ["SelfJudge", "SELF_JUDGE_NAME"]

SELF_JUDGE_NAME = "self-judge (model under test)"


class SelfJudge(Scorer):
    """``score_texts(answers)`` as a behaviour scorer named :data:`SELF_JUDGE_NAME`.

    ``score_range`` bounds what ``score_texts`` returns (default ``[0, 1]``, 1 = most of the
    behaviour); :meth:`to_unit` maps it linearly onto ``[0, 1]``.

    Example:
        >>> judge = SelfJudge(lambda texts: [0.5 for _ in texts])
        >>> judge.name, judge.score(["Q"], ["A."])
        ('self-judge (model under test)', [0.5])
    """

    name = SELF_JUDGE_NAME
    axis = "behaviour"

    def __init__(
        self,
        score_texts: Callable[[list[str]], Sequence[float]],
        score_range: tuple[float, float] = (0.0, 1.0),
        higher_is_better: bool = True,
    ):
        if not callable(score_texts):
            raise ValueError("score_texts must be a function from a list of answers to scores")
        self.score_texts = score_texts
        self.score_range = score_range
        self.higher_is_better = higher_is_better

    def score(self, prompts: Sequence[str], answers: Sequence[str]) -> list[float]:
        check_pairs(prompts, answers)
        scores = [float(s) for s in self.score_texts(list(answers))]
        if len(scores) != len(answers):
            raise ValueError(f"score_texts gave {len(scores)} scores for {len(answers)} answers")
        return scores
