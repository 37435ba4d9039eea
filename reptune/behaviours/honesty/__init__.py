"""Honesty: true/false claims, the honest and dishonest personas, claim pairs, the published
correctness filter, training rows, the honest-answer evaluation and the registered spec.

Example:
    >>> from reptune.behaviours.honesty import load_honesty_claims, claims_to_pairs
    >>> pairs = claims_to_pairs(load_honesty_claims(), tokenizer)
"""

from .claims import (
    CLAIM_QUESTION,
    DISHONEST_PERSONA,
    HONEST_PERSONA,
    HONESTY_CONDITIONS,
    PAIRING_MODES,
    Claim,
    claim_items,
    claim_prompt,
    claim_rows,
    claims_from_json,
    claims_to_json,
    claims_to_pairs,
    evaluate_honesty,
    filter_known_claims,
    load_claims,
    load_honesty_claims,
)
from .spec import honesty_spec

__all__ = [
    "CLAIM_QUESTION",
    "DISHONEST_PERSONA",
    "HONEST_PERSONA",
    "HONESTY_CONDITIONS",
    "PAIRING_MODES",
    "Claim",
    "claim_items",
    "claim_prompt",
    "claim_rows",
    "claims_from_json",
    "claims_to_json",
    "claims_to_pairs",
    "evaluate_honesty",
    "filter_known_claims",
    "honesty_spec",
    "load_claims",
    "load_honesty_claims",
]
