"""A/B behaviour evaluation: letter-probability and generation scorers, rates with intervals.

Two scorers read the model's choice for each :class:`~reptune.evaluation.ab.datasets.ABItem`:

- ``"letter"``: one forward pass; the prompt ends in ``answer_prefix`` (default ``"("``) and the
  choice is the letter with the highest next-token probability (P(A) vs P(B), renormalised);
- ``"generate"``: greedy decoding of ``max_new_tokens`` (default 30) tokens, parsed with
  :func:`~reptune.evaluation.ab.parsing.parse_answer`.

Each answer scores +1 (target letter: the true, correct or behaviour-matching answer), -1 (another
letter) or 0 (no answer found). For the honesty protocol the target rate is the honest rate
(:func:`reptune.behaviours.honesty.evaluate_honesty` runs it under both personas).

Rows of one batch may carry different steering coefficients (``coefficients=``, with a
:class:`~reptune.steering.SteeredModel`), so a whole sweep runs in shared batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from ..batched import check_coefficients, generate_texts, score_letters, with_coefficient
from ..stats import Rate, rate
from .datasets import ABItem, item_prompt
from .parsing import parse_answer

__all__ = [
    "CONDITIONS",
    "SCORERS",
    "ItemResult",
    "ABResult",
    "with_coefficient",
    "score_letters",
    "generate_texts",
    "score_items",
    "summarize",
    "evaluate_ab",
]

#: Named system prompts. Behaviours bring their own as mappings (the honesty personas are
#: :data:`reptune.behaviours.honesty.HONESTY_CONDITIONS`).
CONDITIONS: dict[str, str | None] = {"none": None}
SCORERS = ("letter", "generate")


@dataclass
class ItemResult:
    """One scored prompt: the answer read, and the evidence (letter probabilities or text).

    Example:
        >>> ItemResult(0, target="A", answer="B", text="(B) False").score
        -1
    """

    index: int
    target: str
    answer: str | None
    probs: dict[str, float] | None = None
    text: str | None = None

    @property
    def score(self) -> int:
        """+1 for the target answer, -1 for another answer, 0 for no answer."""
        if self.answer is None:
            return 0
        return 1 if self.answer == self.target else -1

    @property
    def target_prob(self) -> float | None:
        """P(target letter | one of the options), for the letter scorer."""
        if not self.probs:
            return None
        total = sum(self.probs.values())
        return self.probs[self.target] / total if total > 0 else None


@dataclass
class ABResult:
    """Rates of one evaluation: target (honest/correct/matching), other, and unparsed answers.

    Example:
        >>> res = evaluate_ab(model, tok, items)
        >>> print(res.target)  # 81.0% [75.0, 85.8] (n=200)
    """

    scorer: str
    condition: str
    target: Rate
    other: Rate
    unparsed: Rate
    mean_target_prob: float | None
    behaviour: float
    records: list[ItemResult] = field(default_factory=list, repr=False)

    @property
    def n(self) -> int:
        return self.target.n

    def row(self) -> dict:
        """A flat table row (no per-item records)."""
        row = {"condition": self.condition, "scorer": self.scorer, "n": self.n}
        for name in ("target", "other", "unparsed"):
            r: Rate = getattr(self, name)
            row.update({f"{name}_rate": r.value, f"{name}_low": r.low, f"{name}_high": r.high})
        row["mean_target_prob"] = self.mean_target_prob
        row["behaviour"] = self.behaviour
        return row


def summarize(
    records: Sequence[ItemResult], scorer: str, condition: str = "none", confidence: float = 0.95
) -> ABResult:
    """Aggregate per-item results into an :class:`ABResult`.

    Example:
        >>> summarize(score_items(model, tok, items), "letter").target.value
    """
    n = len(records)
    hits = sum(r.score == 1 for r in records)
    misses = sum(r.score == -1 for r in records)
    probs = [r.target_prob for r in records if r.target_prob is not None]
    return ABResult(
        scorer=scorer,
        condition=condition,
        target=rate(hits, n, confidence),
        other=rate(misses, n, confidence),
        unparsed=rate(n - hits - misses, n, confidence),
        mean_target_prob=sum(probs) / len(probs) if probs else None,
        behaviour=(hits - misses) / n if n else float("nan"),
        records=list(records),
    )


def score_items(
    model,
    tokenizer,
    items: Sequence[ABItem],
    scorer: str = "letter",
    *,
    systems: Sequence[str | None] | str | None = None,
    coefficients: torch.Tensor | Sequence[float] | None = None,
    answer_prefix: str | None = None,
    batch_size: int = 16,
    max_new_tokens: int = 30,
    progress: bool = False,
) -> list[ItemResult]:
    """Score each item (optionally with a per-item system prompt and coefficient).

    ``answer_prefix`` defaults to ``"("`` for the letter scorer and ``""`` for generation.

    Example:
        >>> results = score_items(model, tok, items, "generate", systems=HONEST_PERSONA)
    """
    if scorer not in SCORERS:
        raise ValueError(f"unknown scorer {scorer!r}: use one of {SCORERS}")
    if not items:
        raise ValueError("no items to evaluate")
    check_coefficients(coefficients, len(items))
    if systems is None or isinstance(systems, str):
        systems = [systems] * len(items)
    if len(systems) != len(items):
        raise ValueError("give one system prompt per item")
    if answer_prefix is None:
        answer_prefix = "(" if scorer == "letter" else ""
    prompts = [item_prompt(tokenizer, it, sys, answer_prefix) for it, sys in zip(items, systems)]
    if scorer == "letter":
        probs = score_letters(
            model,
            tokenizer,
            prompts,
            [it.letters for it in items],
            coefficients=coefficients,
            batch_size=batch_size,
            progress=progress,
        )
        return [
            ItemResult(i, it.target, max(p, key=p.get), probs=p)
            for i, (it, p) in enumerate(zip(items, probs))
        ]
    texts = generate_texts(
        model,
        tokenizer,
        prompts,
        coefficients=coefficients,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        progress=progress,
    )
    return [
        ItemResult(i, it.target, parse_answer(text, it.letters, it.aliases), text=text)
        for i, (it, text) in enumerate(zip(items, texts))
    ]


def evaluate_ab(
    model,
    tokenizer,
    items: Sequence[ABItem],
    scorer: str = "letter",
    *,
    system: str | None = None,
    condition: str = "none",
    answer_prefix: str | None = None,
    batch_size: int = 16,
    max_new_tokens: int = 30,
    progress: bool = False,
) -> ABResult:
    """Evaluate ``items`` with one scorer under one system prompt.

    Example:
        >>> res = evaluate_ab(model, tok, load_items("caa/test_refusal_ab.json"), "letter")
        >>> res.target.value, res.target.low, res.target.high
    """
    records = score_items(
        model,
        tokenizer,
        items,
        scorer,
        systems=system,
        answer_prefix=answer_prefix,
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        progress=progress,
    )
    return summarize(records, scorer, condition)
