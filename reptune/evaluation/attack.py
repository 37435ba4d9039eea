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

import copy
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

import torch
from tqdm.auto import tqdm

from ..hooks import _PROMPT_END_ATTR
from ..layers import model_device, unwrap_model
from ..tokenization import adds_bos
from .datasets import ABItem, item_prompt
from .letters import letter_token_ids
from .stats import Rate, rate

__all__ = [
    "METHODS",
    "AttackConfig",
    "AttackTrace",
    "AttackResult",
    "gcg_attack",
    "attack_items",
    "compare_attacks",
    "token_gradients",
]

METHODS = ("gradient", "random")
_MARK = "\x00SUFFIX\x00"


@dataclass(frozen=True)
class AttackConfig:
    """The budget and settings of one attack (the same for every model compared).

    ``steps`` x ``candidates`` forward passes per item (plus one gradient pass per step with
    ``method="gradient"``); ``batch_size`` candidates per forward batch. With ``prefix_cache``
    the prompt before the suffix runs once per item and its KV cache is reused (same losses).

    Example:
        >>> AttackConfig(steps=10, candidates=32, topk=32, suffix_length=8, seed=1)
    """

    steps: int = 20
    candidates: int = 64
    topk: int = 64
    suffix_length: int = 10
    seed: int = 0
    method: str = "gradient"
    init: str = "!"
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
    """What the search did on one item: the best loss after each step and the final suffix."""

    item_index: int
    suffix_ids: list[int]
    suffix: str
    losses: list[float]
    success_before: bool
    success: bool
    p_negative: float
    p_target: float
    steps_run: int
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
            steps=self.config.steps,
            candidates=self.config.candidates,
            topk=self.config.topk,
            suffix_length=self.config.suffix_length,
            method=self.config.method,
            seed=self.config.seed,
            seconds=sum(t.seconds for t in self.traces),
        )
        return row


def _split_prompt(tokenizer, item: ABItem, config: AttackConfig) -> tuple[list[int], list[int]]:
    """Token ids before and after the suffix slot (question + " " + suffix, then the template)."""
    question = f"{item.question} {_MARK}"
    text = item_prompt(tokenizer, ABItem(question, item.target, item.letters), config.system)
    text += config.answer_prefix
    if text.count(_MARK) != 1:
        raise ValueError("the chat template altered the suffix slot; cannot place a suffix")
    before, after = text.split(_MARK)
    ids_before = tokenizer(before, add_special_tokens=adds_bos(tokenizer, before))["input_ids"]
    ids_after = tokenizer(after, add_special_tokens=False)["input_ids"]
    return ids_before, ids_after


def _allowed_tokens(tokenizer, vocab: int, ascii_only: bool) -> torch.Tensor:
    """Boolean ``(vocab,)`` mask of the tokens a suffix may use."""
    allowed = torch.zeros(vocab, dtype=torch.bool)
    usable = min(vocab, len(tokenizer))
    allowed[:usable] = True
    allowed[list(s for s in (tokenizer.all_special_ids or []) if s < vocab)] = False
    if ascii_only:
        texts = tokenizer.batch_decode([[i] for i in range(usable)])
        bad = [
            i for i, t in enumerate(texts) if not (t.isascii() and t.isprintable() and t.strip())
        ]
        allowed[bad] = False
    if not allowed.any():
        raise ValueError("no token is allowed in the suffix; set ascii_only=False")
    return allowed


def _vocab_size(model) -> int:
    return unwrap_model(model).get_input_embeddings().weight.shape[0]


def _letter_loss(logits: torch.Tensor, negative: list[int], target: list[int]):
    """``(-log P(negative), log P(negative) - log P(target))`` per row of last-position logits."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    neg = torch.logsumexp(logp[:, negative], dim=-1)
    return -neg, neg - torch.logsumexp(logp[:, target], dim=-1)


def _embedding_scale(embed: torch.nn.Module, ids: torch.Tensor) -> float:
    """The factor between the embedding module's output and its weight rows (1, or Gemma's
    sqrt(hidden)); anything else is not a token lookup and cannot take one-hot gradients."""
    out = embed(ids).detach().float()
    rows = embed.weight[ids].detach().float()
    scale = float((out * rows).sum() / (rows * rows).sum())
    if not torch.allclose(out, scale * rows, rtol=1e-3, atol=1e-5):
        raise ValueError(f"{type(embed).__name__} is not a (scaled) token lookup")
    return scale


def _prefix_cache(model, before: list[int]):
    """The KV cache of the fixed prompt part before the suffix (computed once per item)."""
    ids = torch.tensor([before], device=model_device(model))
    with torch.no_grad():
        out = model(
            input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True, logits_to_keep=1
        )
    return out.past_key_values


def _run(model, cache, before, rest_ids=None, rest_embeds=None):
    """Last-position logits of ``before + rest`` (rest as ids or embeddings, batch ``n``).

    With a prefix ``cache`` only the rest is computed, on a batch-``n`` copy of the cache (the
    original is kept for the next call); the whole input still counts as prompt for the hooks,
    as without a cache.
    """
    rest = rest_ids if rest_ids is not None else rest_embeds
    n, device = rest.shape[0], rest.device
    if cache is None:
        head = torch.tensor(before, device=device).expand(n, -1)
        if rest_ids is not None:
            kwargs = {"input_ids": torch.cat([head, rest_ids], dim=1)}
        else:
            embed = unwrap_model(model).get_input_embeddings()
            kwargs = {"inputs_embeds": torch.cat([embed(head), rest_embeds], dim=1)}
    else:
        kwargs = {"input_ids": rest_ids} if rest_ids is not None else {"inputs_embeds": rest_embeds}
        cache = copy.deepcopy(cache)
        if n > 1:
            cache.batch_repeat_interleave(n)
        setattr(cache, _PROMPT_END_ATTR, len(before) + rest.shape[1])
        kwargs["past_key_values"] = cache
    mask = torch.ones(n, len(before) + rest.shape[1], dtype=torch.long, device=device)
    out = model(**kwargs, attention_mask=mask, use_cache=cache is not None, logits_to_keep=1)
    return out.logits[:, -1]


def token_gradients(model, before, suffix, after, negative, target, cache=None) -> torch.Tensor:
    """Gradient of the target loss with respect to the one-hot suffix tokens, ``(m, vocab)``.

    Computed as ``(dL/dE) W^T`` from the gradient at the suffix embeddings ``E``, which equals
    the gradient through ``one_hot @ W`` (times the embedding scale, for Gemma) without a
    ``(m, vocab)`` matmul in the forward pass. ``cache``: the prefix KV cache of ``before``.

    Example:
        >>> grad = token_gradients(model, before_ids, suffix_ids, after_ids, [33], [32])
    """
    embed = unwrap_model(model).get_input_embeddings()
    ids = torch.tensor([[*suffix, *after]], device=model_device(model))
    m = len(suffix)
    with torch.enable_grad():
        embeds = embed(ids).detach()
        piece = embeds[:, :m].clone().requires_grad_(True)
        rest = torch.cat([piece, embeds[:, m:]], dim=1)
        logits = _run(model, cache, before, rest_embeds=rest)
        loss, _ = _letter_loss(logits, negative, target)
        (grad,) = torch.autograd.grad(loss.sum(), piece)
    scale = _embedding_scale(embed, ids[0, :m])
    return (grad[0].float() @ embed.weight.detach().float().T) * scale


@torch.no_grad()
def _losses(model, cache, before, suffixes, after, negative, target, batch_size: int):
    tail = torch.tensor(after, device=model_device(model))
    losses, margins = [], []
    for chunk in suffixes.split(batch_size):
        chunk = chunk.to(tail.device)
        rest = torch.cat([chunk, tail.expand(chunk.shape[0], -1)], dim=1)
        loss, margin = _letter_loss(_run(model, cache, before, rest), negative, target)
        losses.append(loss.cpu())
        margins.append(margin.cpu())
    return torch.cat(losses), torch.cat(margins)


def _candidates(current, grad, allowed, config, gen) -> torch.Tensor:
    """``candidates`` suffixes, each ``current`` with one position substituted."""
    m, n = current.numel(), config.candidates
    positions = torch.randint(m, (n,), generator=gen)
    if config.method == "gradient":
        scores = grad.masked_fill(~allowed, float("inf"))
        top = (-scores).topk(min(config.topk, int(allowed.sum())), dim=1).indices  # (m, k)
        picks = torch.randint(top.shape[1], (n,), generator=gen)
        tokens = top[positions, picks]
    else:
        pool = allowed.nonzero().flatten()
        tokens = pool[torch.randint(pool.numel(), (n,), generator=gen)]
    out = current.repeat(n, 1)
    out[torch.arange(n), positions] = tokens
    return out


def _retokenizes(tokenizer, suffixes: torch.Tensor) -> torch.Tensor:
    """Which suffixes come back as the same ids when their text is tokenized again."""
    texts = tokenizer.batch_decode(suffixes.tolist())
    again = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return torch.tensor([a == s for a, s in zip(again, suffixes.tolist())])


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
    before, after = _split_prompt(tokenizer, item, config)
    if allowed is None:
        allowed = _allowed_tokens(tokenizer, _vocab_size(model), config.ascii_only)
    init = tokenizer(config.init, add_special_tokens=False)["input_ids"]
    if len(init) != 1 or not allowed[init[0]]:
        raise ValueError(f"init={config.init!r} must be one allowed token of the tokenizer")
    current = torch.tensor(init * config.suffix_length)
    cache = _prefix_cache(model, before) if config.prefix_cache else None
    loss, margin = _losses(model, cache, before, current[None], after, negative, target, 1)
    best, success_before = float(loss[0]), bool(margin[0] > 0)
    losses, steps_run = [best], 0
    success = success_before
    for _ in range(config.steps):
        if config.early_stop and success:
            break
        grad = None
        if config.method == "gradient":
            grad = token_gradients(model, before, current.tolist(), after, negative, target, cache)
            grad = grad.cpu()
        cands = _candidates(current, grad, allowed, config, gen)
        cands = cands[_retokenizes(tokenizer, cands)]
        if len(cands):
            loss, margin = _losses(
                model, cache, before, cands, after, negative, target, config.batch_size
            )
            j = int(loss.argmin())
            if float(loss[j]) < best:  # keep the best: the loss never rises
                best, current, success = float(loss[j]), cands[j].clone(), bool(margin[j] > 0)
        losses.append(best)
        steps_run += 1
    loss, margin = _losses(model, cache, before, current[None], after, negative, target, 1)
    log_neg = -float(loss[0])
    return AttackTrace(
        item_index=index,
        suffix_ids=current.tolist(),
        suffix=tokenizer.decode(current.tolist()),
        losses=losses,
        success_before=success_before,
        success=bool(margin[0] > 0),
        p_negative=float(torch.tensor(log_neg).exp()),
        p_target=float(torch.tensor(log_neg - float(margin[0])).exp()),
        steps_run=steps_run,
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
    allowed = _allowed_tokens(tokenizer, _vocab_size(model), config.ascii_only)
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
