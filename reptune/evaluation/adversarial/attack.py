"""A GCG-style adversarial suffix search on A/B items, and attack success rates per model.

Steering a model tuned against a direction with that same direction favours the tuned model; an
automatic attack is the fairer robustness test. For each :class:`~.datasets.ABItem`, a suffix of
``suffix_length`` tokens is appended to the question and optimised so the model picks the
*negative* answer (the non-target letter):

- the target loss is ``-log P(negative letter)`` at the answer position (the prompt ends in
  ``answer_prefix``, ``"("``), full-vocabulary probability summed over the letter's spellings;
- each step takes the gradient of the loss with respect to the one-hot suffix tokens, keeps the
  ``topk`` most promising tokens per position, evaluates ``candidates`` single-token
  substitutions in batches and keeps the best one if it lowers the loss (so the best loss never
  rises); ``method="random"`` draws the substitutions uniformly instead, for a same-budget
  baseline;
- the attack succeeds when the final suffix makes the negative letter more likely than the
  target one.

Gradients flow through steering hooks and PEFT adapters, so a base, steered, token-tuned or
rep-tuned model is attacked with the same budget (:func:`compare_attacks`).

Example:
    >>> cfg = AttackConfig(steps=20, candidates=64, topk=64, suffix_length=10, seed=0)
    >>> result = attack_items(model, tok, items, cfg)
    >>> print(result.success)  # attack success rate with its Wilson interval
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

import torch
from tqdm.auto import tqdm

from ..ab.datasets import ABItem
from ..ab.letters import letter_token_ids
from ..stats import Rate, rate
from .gcg import (
    allowed_tokens,
    candidates,
    initial_suffix,
    losses,
    prefix_cache,
    retokenizes,
    split_prompt,
    token_gradients,
    vocab_size,
)

__all__ = [
    "METHODS",
    "AttackConfig",
    "AttackTrace",
    "AttackResult",
    "gcg_attack",
    "attack_items",
    "compare_attacks",
]

METHODS = ("gradient", "random")


@dataclass(frozen=True)
class AttackConfig:
    """The budget and settings of one attack (the same for every model compared).

    ``steps`` x ``candidates`` forward passes per item (plus one gradient pass per step with
    ``method="gradient"``); ``batch_size`` candidates per forward batch. The initial suffix is
    ``init`` repeated ``suffix_length`` times (see :func:`.gcg.initial_suffix`). With
    ``prefix_cache`` the prompt before the suffix runs once per item and its KV cache is reused
    (same losses).

    Example:
        >>> AttackConfig(steps=10, candidates=32, topk=32, suffix_length=8, seed=1)
    """

    steps: int = 20
    candidates: int = 64
    topk: int = 64
    suffix_length: int = 10
    seed: int = 0
    method: str = "gradient"
    init: str = "x"
    system: str | None = None
    answer_prefix: str = "("
    early_stop: bool = False
    ascii_only: bool = True
    batch_size: int = 64
    prefix_cache: bool = True

    def __post_init__(self):
        for name in ("steps", "candidates", "topk", "suffix_length", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"AttackConfig.{name} must be a positive int, got {value!r}")
        if self.method not in METHODS:
            raise ValueError(f"unknown attack method {self.method!r}: use one of {METHODS}")


@dataclass
class AttackTrace:
    """What the search did on one item: the best loss after each step and the final suffix.

    ``evaluated``: candidates that passed the tokenization round trip and were scored.
    """

    item_index: int
    suffix_ids: list[int]
    suffix: str
    losses: list[float]
    success_before: bool
    success: bool
    p_negative: float
    p_target: float
    steps_run: int
    evaluated: int
    seconds: float

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class AttackResult:
    """Per-item traces and the attack success rate over the items."""

    config: AttackConfig
    traces: list[AttackTrace] = field(default_factory=list)

    @property
    def success(self) -> Rate:
        """Items whose final suffix makes the negative letter the more likely one."""
        return rate(sum(t.success for t in self.traces), len(self.traces))

    @property
    def success_before(self) -> Rate:
        """Items already answered negatively with the initial suffix (the attack's floor)."""
        return rate(sum(t.success_before for t in self.traces), len(self.traces))

    def summary(self, name: str | None = None) -> dict:
        """One table row: success rates with Wilson intervals, mean losses, budget and time."""
        ok, before = self.success, self.success_before
        n = max(len(self.traces), 1)
        row = {"model": name} if name is not None else {}
        row.update(
            n=ok.n,
            successes=ok.k,
            success_rate=ok.value,
            success_low=ok.low,
            success_high=ok.high,
            before_rate=before.value,
            before_low=before.low,
            before_high=before.high,
            mean_initial_loss=sum(t.losses[0] for t in self.traces) / n,
            mean_final_loss=sum(t.losses[-1] for t in self.traces) / n,
            mean_steps=sum(t.steps_run for t in self.traces) / n,
            mean_evaluated=sum(t.evaluated for t in self.traces) / n,
            steps=self.config.steps,
            candidates=self.config.candidates,
            topk=self.config.topk,
            suffix_length=self.config.suffix_length,
            method=self.config.method,
            seed=self.config.seed,
            seconds=sum(t.seconds for t in self.traces),
        )
        return row


def gcg_attack(
    model,
    tokenizer,
    item: ABItem,
    config: AttackConfig,
    index: int = 0,
    allowed: torch.Tensor | None = None,
) -> AttackTrace:
    """Search a suffix that makes ``model`` pick ``item``'s negative (non-target) letter.

    Returns an :class:`AttackTrace` whose ``losses`` (initial, then after each step) never rise.
    Suffix candidates whose text would tokenize differently are skipped, so the printed suffix
    reproduces the attack. ``allowed`` (a boolean mask over the vocabulary) restricts the suffix
    tokens; by default every non-special (printable ASCII) token. Put the model in eval mode
    first (dropout would make the losses noisy); a ``SteeredModel`` counts the whole input as
    prompt, as in any forward pass.

    Example:
        >>> trace = gcg_attack(model, tok, item, AttackConfig(steps=10, seed=0))
        >>> trace.losses[0], trace.losses[-1], trace.suffix
    """
    if len(item.letters) != 2:
        raise ValueError(f"the attack needs A/B items; item {index} has letters {item.letters}")
    started = time.perf_counter()
    gen = torch.Generator().manual_seed(config.seed)
    negative = letter_token_ids(tokenizer, item.other[0])
    target = letter_token_ids(tokenizer, item.target)
    before, after = split_prompt(tokenizer, item, config.system, config.answer_prefix)
    if allowed is None:
        allowed = allowed_tokens(tokenizer, vocab_size(model), config.ascii_only)
    current = initial_suffix(tokenizer, config.init, config.suffix_length, allowed)
    cache = prefix_cache(model, before) if config.prefix_cache else None
    loss, margin = losses(model, cache, before, current[None], after, negative, target, 1)
    best, success_before = float(loss[0]), bool(margin[0] > 0)
    history, steps_run, evaluated = [best], 0, 0
    success = success_before
    for _ in range(config.steps):
        if config.early_stop and success:
            break
        grad = None
        if config.method == "gradient":
            grad = token_gradients(model, before, current.tolist(), after, negative, target, cache)
            grad = grad.cpu()
        cands = candidates(current, grad, allowed, config.candidates, config.topk, gen)
        cands = cands[retokenizes(tokenizer, cands)]
        evaluated += len(cands)
        if len(cands):
            loss, margin = losses(
                model, cache, before, cands, after, negative, target, config.batch_size
            )
            j = int(loss.argmin())
            if float(loss[j]) < best:  # keep the best: the loss never rises
                best, current, success = float(loss[j]), cands[j].clone(), bool(margin[j] > 0)
        history.append(best)
        steps_run += 1
    loss, margin = losses(model, cache, before, current[None], after, negative, target, 1)
    log_neg = -float(loss[0])
    return AttackTrace(
        item_index=index,
        suffix_ids=current.tolist(),
        suffix=tokenizer.decode(current.tolist()),
        losses=history,
        success_before=success_before,
        success=bool(margin[0] > 0),
        p_negative=float(torch.tensor(log_neg).exp()),
        p_target=float(torch.tensor(log_neg - float(margin[0])).exp()),
        steps_run=steps_run,
        evaluated=evaluated,
        seconds=time.perf_counter() - started,
    )


def attack_items(
    model, tokenizer, items: Sequence[ABItem], config: AttackConfig, progress: bool = False
) -> AttackResult:
    """Attack every item with the same budget (each item gets its own suffix).

    Example:
        >>> res = attack_items(steered, tok, items, AttackConfig(steps=10))
        >>> res.summary("steered")["success_rate"]
    """
    items = list(items)
    if not items:
        raise ValueError("no items to attack")
    bad = [i for i, item in enumerate(items) if len(item.letters) != 2]
    if bad:
        raise ValueError(f"the attack needs A/B items; items {bad[:5]} have other letter sets")
    allowed = allowed_tokens(tokenizer, vocab_size(model), config.ascii_only)
    result = AttackResult(config)
    for i, item in enumerate(tqdm(items, desc="attack", disable=not progress, leave=False)):
        result.traces.append(gcg_attack(model, tokenizer, item, config, i, allowed))
    return result


def compare_attacks(
    models: Mapping[str, object] | Sequence[tuple[str, Callable[[], object]]],
    tokenizer,
    items: Sequence[ABItem],
    config: AttackConfig,
    progress: bool = False,
) -> dict[str, AttackResult]:
    """The same attack (items, budget, seed) against each model.

    ``models`` maps names to models, or lists ``(name, loader)`` pairs so only one model is in
    memory at a time.

    Example:
        >>> results = compare_attacks({"base": model, "steered": steered}, tok, items, cfg)
        >>> rows = [res.summary(name) for name, res in results.items()]
    """
    entries = list(models.items()) if isinstance(models, Mapping) else list(models)
    out = {}
    for name, model in entries:
        if callable(model) and not hasattr(model, "config"):
            model = model()
        out[name] = attack_items(model, tokenizer, items, config, progress)
        del model
    return out
