"""Scorers independent of the model under test, behind one interface (:class:`Scorer`).

Each scorer takes prompts and answers and returns one float per answer, with a ``name`` (the
judge, for report columns), an ``axis`` ("behaviour", "fluency", "relevance"),
``higher_is_better``, a ``score_range`` and :meth:`Scorer.to_unit` onto ``[0, 1]``.

- behaviour: :class:`VaderSentiment` (sentiment), :class:`AxBenchJudge` (any behaviour, LLM
  judge over an OpenAI-compatible endpoint), :class:`ClassifierScorer` (a HuggingFace
  text classifier), :class:`SelfJudge` (the model under test, labelled as such);
- fluency: :class:`JudgeNLL` (per-token NLL under a judge LM of another family),
  :class:`DistinctN`, :class:`RepeatedNgramRate`; :class:`AxBenchJudge` (aspect "fluency");
- relevance: :class:`PromptRankRelevance`; :class:`AxBenchJudge` (aspect "instruction");
- validation: :func:`validate_scorer`, :func:`agreement` (per group:
  :func:`agreement_by_group`), :func:`headline_scorers`.

Example:
    >>> from reptune.evaluation.scorers import DistinctN
    >>> DistinctN(1).score(["Q"], ["good good good good"])
    [0.25]
"""

from .base import AXES, Scorer, check_pairs, linear_unit
from .classifier import ClassifierScorer
from .degeneracy import DistinctN, RepeatedNgramRate, words
from .fluency import JudgeNLL
from .judge_lm import (
    EMBEDDED_JUDGE,
    JUDGE_INSTALL,
    JudgeLM,
    answer_log_probs,
    check_different_family,
    model_family,
)
from .llm_judge import ASPECTS, AxBenchJudge, judge_prompt, parse_rating
from .relevance import PromptRankRelevance
from .self_judge import SELF_JUDGE_NAME, SelfJudge
from .vader import VADER_INSTALL, VaderSentiment
from .validation import (
    Agreement,
    agreement,
    agreement_by_group,
    auroc,
    headline_scorers,
    require_agreement,
    validate_scorer,
)

__all__ = [
    "AXES",
    "Scorer",
    "check_pairs",
    "linear_unit",
    "VaderSentiment",
    "VADER_INSTALL",
    "AxBenchJudge",
    "ASPECTS",
    "judge_prompt",
    "parse_rating",
    "ClassifierScorer",
    "SelfJudge",
    "SELF_JUDGE_NAME",
    "JudgeLM",
    "EMBEDDED_JUDGE",
    "JUDGE_INSTALL",
    "answer_log_probs",
    "check_different_family",
    "model_family",
    "JudgeNLL",
    "DistinctN",
    "RepeatedNgramRate",
    "words",
    "PromptRankRelevance",
    "Agreement",
    "agreement",
    "agreement_by_group",
    "auroc",
    "validate_scorer",
    "headline_scorers",
    "require_agreement",
]
