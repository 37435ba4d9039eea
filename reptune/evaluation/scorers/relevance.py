"""Relevance that can fail: does the answer single out its own prompt among candidates?

For each answer the candidates are its own prompt, the hard negatives the caller gives for that
prompt (same topic, another instruction) and other prompts of the test set (all of them, or a
seeded sample of ``n_other_prompts`` to bound the cost). The judge LM scores
``m_c = mean log p(answer | candidate c)`` per answer token (the first ``max_answer_tokens``).
The score is either

- ``"posterior"`` (default): the posterior of the own prompt under a uniform prior with the
  length-normalised likelihood ``exp(reference_tokens * m_c)``, i.e. as if every answer had
  ``reference_tokens`` tokens, so long answers do not get sharper posteriors than short ones;
  ``1`` = only the own prompt explains the answer, ``1 / k`` (k candidates) = any would; or
- ``"reciprocal_rank"``: ``1 / rank`` of the own prompt by ``m_c``; ties count against it.

An on-topic but empty-of-content answer ("good good good good") is about as likely under the
hard negatives as under its own prompt, so it scores near ``1 / k``, not 1. An empty answer
scores 0. Range ``[0, 1]``, higher is better; :meth:`to_unit` is the identity.

Example:
    >>> scorer = PromptRankRelevance(judge, hard_negatives={"Review the cafe.": [
    ...     "Write a poem about the cafe."]})  # doctest: +SKIP
    >>> scorer.score(prompts, answers)  # doctest: +SKIP
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

import torch

from .base import Scorer, check_pairs
from .judge_lm import JudgeLM

__all__ = ["PromptRankRelevance", "OUTPUTS"]

OUTPUTS = ("posterior", "reciprocal_rank")


class PromptRankRelevance(Scorer):
    """Posterior (or reciprocal rank) of each answer's own prompt among candidate prompts.

    Example:
        >>> scorer = PromptRankRelevance(JudgeLM(model, tok, "tiny"), n_other_prompts=None)
        >>> scores = scorer.score(["Say hi.", "Count to 3."], ["hi", "1 2 3"])
        >>> all(0 <= s <= 1 for s in scores)
        True
    """

    axis = "relevance"
    higher_is_better = True
    score_range = (0.0, 1.0)

    def __init__(
        self,
        judge: JudgeLM,
        hard_negatives: Mapping[str, Sequence[str]] | None = None,
        *,
        n_other_prompts: int | None = 8,
        output: str = "posterior",
        reference_tokens: int = 8,
        max_answer_tokens: int | None = 48,
        seed: int = 0,
    ):
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
        if n_other_prompts is not None and n_other_prompts < 0:
            raise ValueError(f"n_other_prompts must be >= 0 or None, got {n_other_prompts}")
        if reference_tokens <= 0:
            raise ValueError(f"reference_tokens must be > 0, got {reference_tokens}")
        self.judge = judge
        self.hard_negatives = {k: list(v) for k, v in (hard_negatives or {}).items()}
        self.n_other_prompts = n_other_prompts
        self.output = output
        self.reference_tokens = reference_tokens
        self.max_answer_tokens = max_answer_tokens
        self.seed = seed
        self.name = f"own-prompt {output.replace('_', ' ')} under {judge.name}"
        #: Number of candidates per answer in the last :meth:`score` call (chance = 1 / k).
        self.n_candidates: list[int] = []

    def candidates(self, prompts: Sequence[str], index: int) -> list[str]:
        """Candidate prompts of answer ``index``: own prompt first, then its hard negatives,
        then other prompts of ``prompts`` (a seeded sample when ``n_other_prompts`` is set).

        Example:
            >>> scorer.candidates(["A?", "B?", "C?"], 0)  # doctest: +SKIP
            ['A?', 'B?', 'C?']
        """
        own = prompts[index]
        chosen = [own] + [p for p in self.hard_negatives.get(own, []) if p != own]
        others = [p for p in dict.fromkeys(prompts) if p not in chosen]
        if self.n_other_prompts is not None and len(others) > self.n_other_prompts:
            others = random.Random(self.seed * 1_000_003 + index).sample(
                others, self.n_other_prompts
            )
        return list(dict.fromkeys(chosen + others))

    def score(self, prompts: Sequence[str], answers: Sequence[str]) -> list[float]:
        check_pairs(prompts, answers)
        lists = [self.candidates(prompts, i) for i in range(len(prompts))]
        if any(len(c) < 2 for c in lists):
            raise ValueError(
                "an answer has no candidate besides its own prompt: give several prompts or "
                "hard_negatives={prompt: [other instructions on the same topic]}"
            )
        self.n_candidates = [len(c) for c in lists]
        flat = [(c, i) for i, cands in enumerate(lists) if answers[i].strip() for c in cands]
        log_probs = self.judge.answer_log_probs(
            [c for c, _ in flat], [answers[i] for _, i in flat], self.max_answer_tokens
        )
        means: dict[int, list[float]] = {}
        for (_, i), lp in zip(flat, log_probs):
            means.setdefault(i, []).append(float(lp.mean()))
        return [self._own_score(means[i]) if i in means else 0.0 for i in range(len(answers))]

    def _own_score(self, means: list[float]) -> float:
        """Score of candidate 0 (the own prompt) from every candidate's mean log-prob."""
        values = torch.tensor(means, dtype=torch.float64)
        if self.output == "reciprocal_rank":
            rank = 1 + int((values[1:] >= values[0]).sum())
            return 1.0 / rank
        return float(torch.softmax(self.reference_tokens * values, dim=0)[0])
