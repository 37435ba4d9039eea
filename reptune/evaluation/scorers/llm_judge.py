"""An LLM judge over any OpenAI-compatible endpoint, with AxBench's three 0-2 rubrics.

AxBench (Wu et al., "AxBench: Steering LLMs? Even Simple Baselines Outperform Sparse
Autoencoders", 2025; github.com/stanfordnlp/axbench, ``axbench/evaluators/prompt_templates.py``)
rates each steered answer by an LLM judge on three separate scales, each 0-2:

- **concept**: is the concept (the behaviour) present in the answer? 0 = not at all,
  1 = somewhat or awkwardly, 2 = clearly; grammar and coherence are ignored;
- **instruction**: is the answer related to the instruction (the prompt)? 0 = unrelated,
  1 = loosely, 2 = clearly; grammar and coherence are ignored;
- **fluency**: is the answer fluent? 0 = not fluent (incomprehensible or repetitive),
  1 = somewhat fluent with noticeable errors or awkward phrasing, 2 = fluent, almost perfect.

The judge first explains, then ends with ``Rating: [[score]]``. The prompts below follow that
rubric in our own words. A reply without a parseable rating in ``[0, 2]`` scores ``nan`` and is
counted in :attr:`AxBenchJudge.unparseable`; it is never guessed.

Example:
    >>> from reptune.evaluation.open_ended.endpoint import ChatEndpoint
    >>> judge = AxBenchJudge(ChatEndpoint("http://127.0.0.1:8000/v1", model="judge"),
    ...                      aspect="concept", concept="a warm, positive tone")
    >>> judge.score(["Describe your commute."], ["A lovely, sunny ride!"])  # doctest: +SKIP
    [2.0]
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from ..open_ended.endpoint import REQUEST_STATUSES, ChatEndpoint, EndpointError, display_url
from .base import Scorer, check_pairs

__all__ = ["AxBenchJudge", "ASPECTS", "parse_rating", "judge_prompt"]

_CLOSING = (
    "First explain your judgement in one or two sentences. Then give your rating in exactly "
    'this format: "Rating: [[score]]".'
)

_RUBRICS = {
    "concept": (
        "You are an impartial judge. Decide whether the concept below appears in the text "
        "fragment. Look only at whether the concept is there; ignore grammar and coherence.\n"
        "Score 0 if the concept is absent, 1 if it is present only weakly or awkwardly, "
        "2 if it is clearly present.",
    ),
    "instruction": (
        "You are an impartial judge. Decide how closely the text fragment relates to the "
        "instruction below. Look only at relatedness; ignore grammar, coherence and how "
        "informative it is.\nScore 0 if it is unrelated to the instruction, 1 if it is loosely "
        "related, 2 if it clearly addresses the instruction.",
    ),
    "fluency": (
        "You are an impartial judge. Rate the fluency of the text fragment below. Look only at "
        "fluency: unnatural phrasing, grammatical errors, awkward transitions or repetition; "
        "ignore completeness, relevance and informativeness.\nScore 0 if it is not fluent "
        "(incomprehensible or repetitive), 1 if it is somewhat fluent with noticeable errors or "
        "awkward phrasing, 2 if it is fluent and nearly perfect.",
    ),
}

#: Rubric aspect -> the axis its score measures.
ASPECTS = {"concept": "behaviour", "instruction": "relevance", "fluency": "fluency"}

_RATING = re.compile(r"Rating:\s*\[\[\s*([0-9]+(?:\.[0-9]+)?)\s*\]\]", re.IGNORECASE)


def parse_rating(reply: str) -> float | None:
    """The last ``Rating: [[x]]`` in ``reply`` if ``0 <= x <= 2``, else None.

    Example:
        >>> parse_rating("Clear and warm. Rating: [[2]]")
        2.0
        >>> parse_rating("I would say two.") is None
        True
    """
    found = _RATING.findall(reply or "")
    if not found:
        return None
    value = float(found[-1])
    return value if 0.0 <= value <= 2.0 else None


def judge_prompt(aspect: str, prompt: str, answer: str, concept: str = "") -> str:
    """The user message asking for one aspect's rating of ``answer`` to ``prompt``.

    Example:
        >>> "[[score]]" in judge_prompt("fluency", "Q?", "A.")
        True
    """
    if aspect not in _RUBRICS:
        raise ValueError(f"unknown aspect {aspect!r}; use one of {sorted(_RUBRICS)}")
    parts = [_RUBRICS[aspect][0], _CLOSING, ""]
    if aspect == "concept":
        parts += ["[Concept Start]", concept, "[Concept End]", ""]
    if aspect == "instruction":
        parts += ["[Instruction Start]", prompt, "[Instruction End]", ""]
    parts += ["[Text Fragment Start]", answer, "[Text Fragment End]"]
    return "\n".join(parts)


class AxBenchJudge(Scorer):
    """One AxBench rubric (``aspect``: "concept", "instruction" or "fluency") scored by the
    endpoint's model; scores in ``{0, 1, 2}`` (``nan`` when the verdict is unparseable or the
    endpoint refused that one request), higher is better; :meth:`to_unit` divides by 2.

    ``concept`` describes the behaviour (needed for the concept aspect). The judge must not be
    the model under test: point the endpoint at another model.

    Example:
        >>> judge = AxBenchJudge(endpoint, aspect="fluency")  # doctest: +SKIP
        >>> judge.score(prompts, answers), judge.unparseable  # doctest: +SKIP
    """

    higher_is_better = True
    score_range = (0.0, 2.0)

    def __init__(
        self, endpoint: ChatEndpoint, aspect: str, concept: str = "", max_tokens: int = 256
    ):
        if aspect not in ASPECTS:
            raise ValueError(f"unknown aspect {aspect!r}; use one of {sorted(ASPECTS)}")
        if aspect == "concept" and not concept.strip():
            raise ValueError("the concept aspect needs concept='<the behaviour, in words>'")
        self.endpoint = endpoint
        self.aspect = aspect
        self.concept = concept
        self.max_tokens = max_tokens
        self.axis = ASPECTS[aspect]
        self.name = f"AxBench {aspect} 0-2 ({endpoint.model} at {display_url(endpoint.base_url)})"
        self.unparseable = 0
        self.refused = 0
        self.replies: list[str] = []

    def score(self, prompts: Sequence[str], answers: Sequence[str]) -> list[float]:
        """One rating per answer; resets :attr:`unparseable`, :attr:`refused`, :attr:`replies`."""
        check_pairs(prompts, answers)
        self.unparseable, self.refused, self.replies = 0, 0, []
        scores = []
        for prompt, answer in zip(prompts, answers):
            message = judge_prompt(self.aspect, prompt, answer, self.concept)
            try:
                reply = self.endpoint.complete(
                    [{"role": "user", "content": message}], max_tokens=self.max_tokens
                )
            except EndpointError as err:
                if err.status not in REQUEST_STATUSES:
                    raise
                self.refused += 1
                self.replies.append("")
                scores.append(math.nan)
                continue
            self.replies.append(reply)
            rating = parse_rating(reply)
            if rating is None:
                self.unparseable += 1
                scores.append(math.nan)
            else:
                scores.append(rating)
        return scores
