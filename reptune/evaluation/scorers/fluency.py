"""Fluency under a judge LM of another family: per-token negative log-likelihood of the answer.

The score of an answer is ``-mean log p(answer token | prompt, earlier answer tokens)`` in nats
under the judge (range ``[0, inf)``, lower = more fluent to the judge; ``exp`` of it is the
judge's perplexity of the answer). :meth:`JudgeNLL.to_unit` maps it to ``exp(-NLL)``, the
judge's geometric-mean token probability, in ``(0, 1]``. An empty answer has no tokens and
scores ``nan``.

Example:
    >>> judge = JudgeLM.load(model_under_test=model.config)  # doctest: +SKIP
    >>> JudgeNLL(judge).score(["Name a fruit:"], [" An apple."])  # doctest: +SKIP
    [2.31]
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from .base import Scorer, check_pairs
from .judge_lm import JudgeLM

__all__ = ["JudgeNLL"]


class JudgeNLL(Scorer):
    """Per-token NLL (nats) of each answer given its prompt under ``judge`` (lower is better).

    ``max_answer_tokens`` scores only the answer's first tokens (None = all).

    Example:
        >>> scorer = JudgeNLL(JudgeLM(model, tok, name="tiny", model_under_test="gemma3_text"))
        >>> scorer.score(["Hi"], [" there"])[0] > 0
        True
    """

    axis = "fluency"
    higher_is_better = False
    score_range = (0.0, math.inf)

    def __init__(self, judge: JudgeLM, max_answer_tokens: int | None = None):
        self.judge = judge
        self.max_answer_tokens = max_answer_tokens
        self.name = f"per-token NLL under {judge.name}"

    def score(self, prompts: Sequence[str], answers: Sequence[str]) -> list[float]:
        check_pairs(prompts, answers)
        log_probs = self.judge.answer_log_probs(prompts, answers, self.max_answer_tokens)
        return [float(-lp.mean()) if lp.numel() else math.nan for lp in log_probs]

    def to_unit(self, scores: Sequence[float]) -> list[float]:
        """``exp(-NLL)``: the judge's geometric-mean token probability (1 = certain)."""
        return [math.exp(-float(s)) for s in scores]
