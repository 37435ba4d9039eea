"""Behaviours with shipped data: sentiment pairs and scorers, and easy honesty claims.

Example:
    >>> from reptune.behaviours import load_sentiment_pairs, sentiment_score
    >>> train = load_sentiment_pairs(tok, split="train")
    >>> sentiment_score(["What a lovely day.", "This is not good."])
    [1.0, -1.0]
"""

from .honesty_data import load_honesty_claims
from .sentiment import (
    fit_judge_threshold,
    load_eval_prompts,
    load_heldout_text,
    load_scorer_check,
    load_sentiment_pairs,
    load_sentiment_rows,
    model_sentiment_logit,
    model_sentiment_score,
    sentiment_score,
)

__all__ = [
    "fit_judge_threshold",
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
