"""The self-judge as one more column: the sentiment judgement of the (untuned) model under test.

Not independent of the model under test; it stays available so reports can show how far it
agrees with the independent scorers, labelled as what it is.

Example:
    >>> scorer = SelfJudgePositivity(base_model, tokenizer)  # doctest: +SKIP
    >>> scorer.score(["Q"], ["What a lovely day."])  # doctest: +SKIP
    [0.93]
"""

from __future__ import annotations

from collections.abc import Sequence

from ...behaviours.sentiment import positivity
from .base import Scorer, check_pairs

__all__ = ["SelfJudgePositivity", "SELF_JUDGE_NAME"]

SELF_JUDGE_NAME = "self-judge (model under test)"


class SelfJudgePositivity(Scorer):
    """:func:`reptune.behaviours.sentiment.positivity` of each answer under ``judge_model``, in
    ``[0, 1]`` (1 = positive); :meth:`to_unit` is the identity.

    Example:
        >>> SelfJudgePositivity(model, tok).name
        'self-judge (model under test)'
    """

    name = SELF_JUDGE_NAME
    axis = "behaviour"
    score_range = (0.0, 1.0)

    def __init__(self, judge_model, tokenizer, batch_size: int = 32, higher_is_better=True):
        self.model = judge_model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.higher_is_better = higher_is_better

    def score(self, prompts: Sequence[str], answers: Sequence[str]) -> list[float]:
        check_pairs(prompts, answers)
        return positivity(self.model, self.tokenizer, list(answers), batch_size=self.batch_size)
