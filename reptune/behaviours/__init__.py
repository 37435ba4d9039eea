"""Behaviours, one module each: their pairs, prompts, scorers and evaluation, and the registry
the pipeline finds them in by name.

- :mod:`~reptune.behaviours.registry`: :class:`BehaviourSpec` and :func:`register_behaviour`;
- :mod:`~reptune.behaviours.honesty`: true/false claims, the personas, claim pairs, the
  correctness filter, the honest-answer evaluation;
- :mod:`~reptune.behaviours.sentiment`: shipped sentiment pairs, neutral prompts and two offline
  scorers;
- :mod:`~reptune.behaviours.caa`: any CAA A/B file pair as a behaviour;
- :mod:`~reptune.behaviours.refusal`: the CAA refusal files and a refusal-phrase scorer.

Importing this package registers every shipped behaviour.

Example:
    >>> from reptune.behaviours import load_sentiment_pairs, sentiment_score
    >>> train = load_sentiment_pairs(tok, split="train")
    >>> sentiment_score(["What a lovely day.", "This is not good."])
    [1.0, -1.0]
"""

from . import caa, refusal
from .honesty import (
    DISHONEST_PERSONA,
    HONEST_PERSONA,
    HONESTY_CONDITIONS,
    Claim,
    claim_items,
    claim_prompt,
    claim_rows,
    claims_to_pairs,
    evaluate_honesty,
    filter_known_claims,
    load_claims,
    load_honesty_claims,
)
from .registry import (
    BehaviourBuilder,
    BehaviourOptions,
    BehaviourSpec,
    LabelledGenerations,
    PairsLoader,
    PromptsLoader,
    TextScorer,
    behaviour_names,
    get_behaviour,
    register_behaviour,
    required_options,
)
from .sentiment import (
    POSITIVE_INSTRUCTION,
    InstructionCandidate,
    TopicPrompt,
    fit_judge_threshold,
    load_eval_prompts,
    load_heldout_text,
    load_instruction_candidates,
    load_scorer_check,
    load_sentiment_pairs,
    load_sentiment_rows,
    load_topic_prompts,
    load_train_prompts,
    model_sentiment_logit,
    model_sentiment_score,
    positivity,
    relevance_candidates,
    sentiment_score,
)

#: Every named system-prompt condition the behaviours define (for ``--conditions`` options).
NAMED_CONDITIONS: dict[str, str | None] = {"none": None, **HONESTY_CONDITIONS}


def resolve_conditions(conditions) -> dict[str, str | None]:
    """Names (``"none"``, ``"honest"``, ``"dishonest"``) or a mapping -> ``{name: system}``.

    Example:
        >>> resolve_conditions(["honest"])["honest"] == HONEST_PERSONA
        True
    """
    from ..evaluation.studies.sweep import resolve_conditions as resolve

    return resolve(conditions, NAMED_CONDITIONS)


__all__ = [
    "BehaviourBuilder",
    "BehaviourOptions",
    "BehaviourSpec",
    "LabelledGenerations",
    "PairsLoader",
    "PromptsLoader",
    "TextScorer",
    "behaviour_names",
    "caa",
    "get_behaviour",
    "refusal",
    "register_behaviour",
    "required_options",
    "DISHONEST_PERSONA",
    "HONEST_PERSONA",
    "HONESTY_CONDITIONS",
    "NAMED_CONDITIONS",
    "Claim",
    "claim_items",
    "claim_prompt",
    "claim_rows",
    "claims_to_pairs",
    "evaluate_honesty",
    "filter_known_claims",
    "load_claims",
    "resolve_conditions",
    "POSITIVE_INSTRUCTION",
    "fit_judge_threshold",
    "load_train_prompts",
    "positivity",
    "InstructionCandidate",
    "TopicPrompt",
    "load_instruction_candidates",
    "load_topic_prompts",
    "relevance_candidates",
    "load_eval_prompts",
    "load_heldout_text",
    "load_honesty_claims",
    "load_scorer_check",
    "load_sentiment_pairs",
    "load_sentiment_rows",
    "model_sentiment_logit",
    "model_sentiment_score",
    "sentiment_score",
]
