"""The token-level pieces of the GCG suffix search: where the suffix sits in the prompt, which
tokens it may use, one-hot token gradients, candidate batches and their letter losses.

The prompt before the suffix is fixed for an item, so its KV cache is computed once
(:func:`prefix_cache`) and copied for each batch: only the suffix and the rest of the prompt run.

Example:
    >>> before, after = split_prompt(tok, item)
    >>> grad = token_gradients(model, before, suffix, after, negative_ids, target_ids)
"""

from __future__ import annotations

import copy

import torch

from ...hooks import _PROMPT_END_ATTR
from ...layers import model_device, unwrap_model
from ...tokenization import adds_bos
from ..ab.datasets import ABItem, item_prompt

__all__ = [
    "split_prompt",
    "allowed_tokens",
    "vocab_size",
    "letter_loss",
    "prefix_cache",
    "token_gradients",
    "losses",
    "candidates",
    "retokenizes",
    "initial_suffix",
]

_MARK = "\x00SUFFIX\x00"


def split_prompt(
    tokenizer, item: ABItem, system: str | None = None, answer_prefix: str = "("
) -> tuple[list[int], list[int]]:
    """Token ids before and after the suffix slot (question + " " + suffix, then the template).

    Example:
        >>> before, after = split_prompt(tok, item)  # the prompt is before + suffix + after
    """
    question = f"{item.question} {_MARK}"
    text = item_prompt(tokenizer, ABItem(question, item.target, item.letters), system)
    text += answer_prefix
    if text.count(_MARK) != 1:
        raise ValueError("the chat template altered the suffix slot; cannot place a suffix")
    before, after = text.split(_MARK)
    ids_before = tokenizer(before, add_special_tokens=adds_bos(tokenizer, before))["input_ids"]
    ids_after = tokenizer(after, add_special_tokens=False)["input_ids"]
    return ids_before, ids_after


def allowed_tokens(tokenizer, vocab: int, ascii_only: bool = True) -> torch.Tensor:
    """Boolean ``(vocab,)`` mask of the tokens a suffix may use (no special token; with
    ``ascii_only``, only tokens that decode to printable ASCII).

    Example:
        >>> allowed = allowed_tokens(tok, model.get_input_embeddings().weight.shape[0])
    """
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


def vocab_size(model) -> int:
    return unwrap_model(model).get_input_embeddings().weight.shape[0]


def letter_loss(logits: torch.Tensor, negative: list[int], target: list[int]):
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


def prefix_cache(model, before: list[int]):
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
        loss, _ = letter_loss(logits, negative, target)
        (grad,) = torch.autograd.grad(loss.sum(), piece)
    scale = _embedding_scale(embed, ids[0, :m])
    return (grad[0].float() @ embed.weight.detach().float().T) * scale


@torch.no_grad()
def losses(model, cache, before, suffixes, after, negative, target, batch_size: int):
    tail = torch.tensor(after, device=model_device(model))
    losses, margins = [], []
    for chunk in suffixes.split(batch_size):
        chunk = chunk.to(tail.device)
        rest = torch.cat([chunk, tail.expand(chunk.shape[0], -1)], dim=1)
        loss, margin = letter_loss(_run(model, cache, before, rest), negative, target)
        losses.append(loss.cpu())
        margins.append(margin.cpu())
    return torch.cat(losses), torch.cat(margins)


def candidates(current, grad, allowed, n: int, topk: int, gen) -> torch.Tensor:
    """``n`` suffixes, each ``current`` with one position substituted: by one of the ``topk``
    best tokens by ``grad`` at that position, or by a uniform allowed token when ``grad`` is None.
    """
    m = current.numel()
    positions = torch.randint(m, (n,), generator=gen)
    if grad is not None:
        scores = grad.masked_fill(~allowed, float("inf"))
        top = (-scores).topk(min(topk, int(allowed.sum())), dim=1).indices  # (m, k)
        picks = torch.randint(top.shape[1], (n,), generator=gen)
        tokens = top[positions, picks]
    else:
        pool = allowed.nonzero().flatten()
        tokens = pool[torch.randint(pool.numel(), (n,), generator=gen)]
    out = current.repeat(n, 1)
    out[torch.arange(n), positions] = tokens
    return out


def retokenizes(tokenizer, suffixes: torch.Tensor) -> torch.Tensor:
    """Which suffixes come back as the same ids when their text is tokenized again."""
    texts = tokenizer.batch_decode(suffixes.tolist())
    again = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return torch.tensor([a == s for a, s in zip(again, suffixes.tolist())])


def initial_suffix(tokenizer, init: str, length: int, allowed: torch.Tensor) -> torch.Tensor:
    """``init`` repeated ``length`` times as token ids that survive a decode/encode round trip.

    Space-separated (``"x x x"``, as GCG starts) when that gives ``length`` tokens, else joined
    (``"xxx"``); a repetition the tokenizer merges (``"!!"`` is one token in many vocabularies)
    would make every candidate fail the round trip, so it is refused.

    Example:
        >>> initial_suffix(tok, "x", 4, allowed).tolist()  # SmolLM2: [104, 1792, 1792, 1792]
    """
    for text in (" ".join([init] * length), init * length):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) == length and all(allowed[i] for i in ids):
            suffix = torch.tensor(ids)
            if retokenizes(tokenizer, suffix[None])[0]:
                return suffix
    raise ValueError(
        f"init={init!r} repeated {length} times does not tokenize into {length} allowed tokens "
        "that survive a decode/encode round trip; pick another init (e.g. 'x' or '!')"
    )
