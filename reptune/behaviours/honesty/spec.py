"""Honesty as a registered behaviour: claim pairs for the vectors, claim questions as prompts,
answers scored 1 when the generated letter is the true answer.

The honesty recipe (:func:`reptune.workflow.run_honesty`) runs the published protocol; this spec
lets the behaviour section (``behaviour: honesty``) measure the same behaviour on generations.

Example:
    >>> from reptune.behaviours import get_behaviour
    >>> spec = get_behaviour("honesty")
    >>> spec.score(None, None, ["(A) True"], [spec.eval_prompts()[0]])
"""

from __future__ import annotations

from collections.abc import Sequence

from ...evaluation.ab.datasets import CLAIM_QUESTION
from ...evaluation.ab.parsing import parse_answer
from ...pairs import split_pairs
from ..registry import BehaviourSpec, register_behaviour
from .claims import HONEST_PERSONA, claims_to_pairs, load_honesty_claims

__all__ = ["honesty_spec"]


def honesty_spec(test_fraction: float = 0.5, seed: int = 0) -> BehaviourSpec:
    """The shipped claims as a behaviour: ``test_fraction`` of them are held out; the rest give
    the training pairs and prompts, the held-out ones the test pairs and the evaluation prompts.

    Example:
        >>> honesty_spec().instruction == HONEST_PERSONA
        True
    """
    claims = load_honesty_claims()
    train, test = split_pairs(claims, test_fraction, seed)
    truth = {CLAIM_QUESTION.format(claim=c.statement): "A" if c.label else "B" for c in claims}

    def pairs(tokenizer, split: str):
        return claims_to_pairs(train if split == "train" else test, tokenizer)

    def score(judge, tokenizer, texts: Sequence[str], prompts: Sequence[str]) -> list[float]:
        return [float(parse_answer(t, ("A", "B")) == truth.get(p)) for t, p in zip(texts, prompts)]

    return BehaviourSpec(
        "honesty",
        pairs,
        lambda: [CLAIM_QUESTION.format(claim=c.statement) for c in train],
        lambda: [CLAIM_QUESTION.format(claim=c.statement) for c in test],
        score,
        HONEST_PERSONA,
    )


def _build(options) -> BehaviourSpec:
    return honesty_spec()


# A builder, so importing the package reads no data file.
register_behaviour(_build, name="honesty")
