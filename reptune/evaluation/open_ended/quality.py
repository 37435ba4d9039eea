"""Open-ended generations scored on three axes, as steering benchmarks do, all run locally.

Every generation gets three scores in ``[0, 1]`` and their harmonic mean (AxBench's steering
score: a text that shows the behaviour but is gibberish or ignores the prompt scores low):

- **behaviour**: the behaviour's own scorer, mapped to ``[0, 1]`` by the caller;
- **fluency**: the geometric-mean probability of the response's tokens under a fixed reference
  model (the untuned base model) given the plain prompt, ``exp(mean log p)``;
- **relevance**: how well the response identifies its own prompt: the posterior of the own
  prompt among it and ``k`` other prompts of the same set, under the reference model with a
  uniform prior, ``p(r | own) / sum_j p(r | prompt_j)``. 1 = the response belongs to its prompt;
  ``1 / (k + 1)`` = it could answer any of them. Empty responses score 0 on both.

:func:`next_token_kl` measures how close two models are: the mean KL divergence between their
next-token distributions along given continuations.

Example:
    >>> scores = score_generations(base, tok, prompts, responses, behaviour=[0.8, 0.4, ...])
    >>> summarize_quality(scores)["harmonic"].value
"""

from __future__ import annotations

import copy
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from ...layers import model_device
from ...tokenization import adds_bos, ensure_pad_token, position_ids_from_mask
from ..stats import Mean, mean_interval

__all__ = [
    "AXES",
    "QualityScores",
    "harmonic_mean",
    "continuation_log_probs",
    "score_generations",
    "summarize_quality",
    "next_token_kl",
    "KLReference",
]

AXES = ("behaviour", "fluency", "relevance", "harmonic")


@dataclass
class QualityScores:
    """Per-generation scores on each axis (lists of equal length)."""

    behaviour: list[float]
    fluency: list[float]
    relevance: list[float]
    harmonic: list[float]

    def rows(self) -> list[dict[str, float]]:
        return [dict(zip(AXES, values)) for values in zip(*(getattr(self, a) for a in AXES))]


def harmonic_mean(*values: float) -> float:
    """Harmonic mean of scores in ``[0, 1]``; 0 when any is 0.

    Example:
        >>> harmonic_mean(1.0, 0.5, 0.5)
        0.6
    """
    if any(v <= 0 for v in values):
        return 0.0
    return len(values) / sum(1.0 / v for v in values)


def _encode(tokenizer, prompt: str, continuation: str) -> tuple[list[int], int]:
    ids = tokenizer(prompt, add_special_tokens=adds_bos(tokenizer, prompt))["input_ids"]
    more = tokenizer(continuation, add_special_tokens=False)["input_ids"] if continuation else []
    return list(ids) + list(more), len(ids)


def _batch(tokenizer, prompts, continuations, device):
    """Left-padded ``prompt + continuation`` ids with mask-derived position ids, and the number
    of trailing positions whose logits predict some row's continuation (every row ends at the
    last column, so the LM head runs on those positions only)."""
    encoded = [_encode(tokenizer, p, c) for p, c in zip(prompts, continuations)]
    width = max(len(ids) for ids, _ in encoded)
    ids = torch.full((len(encoded), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, (seq, _) in enumerate(encoded):
        ids[row, width - len(seq) :] = torch.tensor(seq)
        mask[row, width - len(seq) :] = 1
    keep = max(len(seq) - n_prompt for seq, n_prompt in encoded) + 1
    feed = {
        "input_ids": ids.to(device),
        "attention_mask": mask.to(device),
        "position_ids": position_ids_from_mask(mask).to(device),
        "use_cache": False,
        "logits_to_keep": keep,
    }
    return encoded, feed, keep


def _spans(encoded, keep):
    """Per row, the slice of the kept logits that predicts its continuation tokens."""
    for seq, n_prompt in encoded:
        n = len(seq) - n_prompt
        # The kept logits cover the last ``keep`` columns; the one at the last column predicts
        # nothing, and the n before it predict the n continuation tokens.
        yield seq[n_prompt:], slice(keep - 1 - n, keep - 1)


@torch.no_grad()
def continuation_log_probs(
    model, tokenizer, prompts: Sequence[str], continuations: Sequence[str], batch_size: int = 16
) -> list[torch.Tensor]:
    """Log-probability of each continuation token given its prompt, one 1-D tensor per pair.

    The prompt and the continuation are tokenized apart, so the boundary is exact. Each distinct
    prompt runs once; the continuations that follow it (several answers to one prompt, one answer
    scored under several prompts) continue from its KV cache, in batches.

    Example:
        >>> lp = continuation_log_probs(model, tok, ["Hi."], [" Hello there!"])[0]
        >>> float(lp.mean().exp())  # geometric-mean token probability
    """
    if len(prompts) != len(continuations):
        raise ValueError("give one continuation per prompt")
    ensure_pad_token(tokenizer)
    device = model_device(model)
    out: list[torch.Tensor | None] = [None] * len(prompts)
    by_prompt: dict[str, list[int]] = {}
    for i, prompt in enumerate(prompts):
        by_prompt.setdefault(prompt, []).append(i)
    for prompt, rows in by_prompt.items():
        ids = tokenizer(prompt, add_special_tokens=adds_bos(tokenizer, prompt))["input_ids"]
        head = torch.tensor([ids], device=device)
        first = model(input_ids=head, use_cache=True, logits_to_keep=1)
        first_logp = first.logits[0, -1].float().log_softmax(-1).cpu()
        for start in range(0, len(rows), batch_size):
            part = rows[start : start + batch_size]
            targets = [
                tokenizer(continuations[i], add_special_tokens=False)["input_ids"]
                if continuations[i]
                else []
                for i in part
            ]
            width = max(len(t) for t in targets)
            if width == 0:
                for i in part:
                    out[i] = torch.empty(0)
                continue
            cont = torch.full((len(part), width), tokenizer.pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(part), len(ids) + width), dtype=torch.long)
            mask[:, : len(ids)] = 1
            for row, t in enumerate(targets):
                cont[row, : len(t)] = torch.tensor(t, dtype=torch.long)
                mask[row, len(ids) : len(ids) + len(t)] = 1
            cache = copy.deepcopy(first.past_key_values)
            cache.batch_repeat_interleave(len(part))
            positions = torch.arange(len(ids), len(ids) + width).expand(len(part), -1)
            logits = model(
                input_ids=cont.to(device),
                attention_mask=mask.to(device),
                position_ids=positions.to(device),
                past_key_values=cache,
                use_cache=True,
            ).logits
            logp = logits.float().log_softmax(-1).cpu()
            for row, (i, t) in enumerate(zip(part, targets)):
                if not t:
                    out[i] = torch.empty(0)
                    continue
                # The prompt's last logit predicts the first token; logit j predicts token j + 1.
                index = torch.tensor(t[1:], dtype=torch.long).unsqueeze(-1)
                rest = logp[row, : len(t) - 1].gather(-1, index).squeeze(-1)
                out[i] = torch.cat([first_logp[t[0]].view(1), rest])
    return out


def score_generations(
    reference_model,
    tokenizer,
    prompts: Sequence[str],
    responses: Sequence[str],
    behaviour: Sequence[float],
    *,
    distractors: int = 4,
    seed: int = 0,
    batch_size: int = 32,
) -> QualityScores:
    """Behaviour (given, in ``[0, 1]``), fluency and relevance of each response, and their
    harmonic mean.

    ``prompts`` are the formatted prompts the responses answered (chat template applied); the
    reference model (the untuned base model, so the yardstick never moves) reads them plainly.
    Each response's ``distractors`` other prompts are drawn from ``prompts`` with ``seed``.

    Example:
        >>> scores = score_generations(base, tok, prompts, texts, [(s + 1) / 2 for s in judged])
    """
    n = len(prompts)
    if not (len(responses) == len(behaviour) == n):
        raise ValueError("give one response and one behaviour score per prompt")
    bad = [b for b in behaviour if not 0.0 <= float(b) <= 1.0]
    if bad:
        raise ValueError(f"behaviour scores must lie in [0, 1], got {bad[:3]}")
    unique = list(dict.fromkeys(prompts))
    k = min(distractors, len(unique) - 1)
    rng = random.Random(seed)
    pairs = []  # (response index, prompt) for the own prompt and its distractors
    for i, prompt in enumerate(prompts):
        others = [p for p in unique if p != prompt]
        pairs += [(i, prompt)] + [(i, p) for p in rng.sample(others, k)]
    live = [(i, p) for i, p in pairs if responses[i].strip()]
    logps = continuation_log_probs(
        reference_model,
        tokenizer,
        [p for _, p in live],
        [responses[i] for i, _ in live],
        batch_size,
    )
    totals: dict[int, list[float]] = {}
    fluency = [0.0] * n
    for (i, _), lp in zip(live, logps):
        if not totals.get(i):  # the own prompt comes first
            fluency[i] = float(lp.mean().exp()) if lp.numel() else 0.0
        totals.setdefault(i, []).append(float(lp.sum()))
    relevance = [0.0] * n
    for i, values in totals.items():
        relevance[i] = float(torch.tensor(values).softmax(0)[0])
    behaviour = [float(b) for b in behaviour]
    harmonic = [harmonic_mean(b, f, r) for b, f, r in zip(behaviour, fluency, relevance)]
    return QualityScores(behaviour, fluency, relevance, harmonic)


def summarize_quality(scores: QualityScores, confidence: float = 0.95) -> dict[str, Mean]:
    """The mean of each axis with a bootstrap interval.

    Example:
        >>> summary = summarize_quality(scores)
        >>> summary["harmonic"].low, summary["harmonic"].high
    """
    return {axis: mean_interval(getattr(scores, axis), confidence) for axis in AXES}


@torch.no_grad()
def next_token_kl(
    model_p,
    model_q,
    tokenizer,
    prompts: Sequence[str],
    continuations: Sequence[str],
    batch_size: int = 16,
):
    """Mean ``KL(P || Q)`` of the two models' next-token distributions over the positions that
    predict each continuation's tokens (one value per pair).

    Typical use: ``P`` the steered model, ``Q`` a tuned model, the continuations the steered
    model's own generations: 0 means the tuned model predicts exactly as the steered one.
    ``model_q`` may be a mapping of named models: ``P`` then runs once per batch for all of
    them, and the result maps each name to its values.

    Example:
        >>> kl = next_token_kl(steered, tuned, tok, test_prompts, steered_texts)
        >>> kls = next_token_kl(steered, {"base": base, "tuned": tuned}, tok, prompts, texts)
    """
    reference = KLReference(model_p, tokenizer, prompts, continuations, batch_size)
    if isinstance(model_q, Mapping):
        return {name: reference.kl(model) for name, model in model_q.items()}
    return reference.kl(model_q)


class KLReference:
    """``P``'s next-token distributions along fixed continuations, computed once, so that
    ``KL(P || Q)`` for many models ``Q`` (checkpoints, variants) costs one pass of each.

    Example:
        >>> ref = KLReference(steered, tok, dev_prompts, steered_dev_answers)
        >>> ref.kl(tuned_checkpoint)  # one value per pair
    """

    @torch.no_grad()
    def __init__(self, model_p, tokenizer, prompts, continuations, batch_size: int = 16):
        ensure_pad_token(tokenizer)
        self.tokenizer, self.batch_size = tokenizer, batch_size
        self.prompts, self.continuations = list(prompts), list(continuations)
        device = model_device(model_p)
        self.batches = []
        for start in range(0, len(self.prompts), batch_size):
            part = slice(start, start + batch_size)
            encoded, feed, keep = _batch(
                tokenizer, self.prompts[part], self.continuations[part], device
            )
            logp = model_p(**feed).logits.float().log_softmax(-1)
            self.batches.append((encoded, keep, logp))

    @torch.no_grad()
    def kl(self, model_q, prompts: Sequence[str] | None = None) -> list[float]:
        """Mean ``KL(P || Q)`` over each pair's continuation positions.

        ``prompts``: what ``Q`` reads before each continuation, when it is not what ``P`` read
        (``P`` the prompted model, ``Q`` a tuned one without the prompt); the continuation
        tokens, and so the compared positions, are the same.
        """
        prompts = self.prompts if prompts is None else list(prompts)
        if len(prompts) != len(self.prompts):
            raise ValueError(
                f"give Q one prompt per continuation: {len(prompts)} prompts for "
                f"{len(self.prompts)} continuations"
            )
        device = model_device(model_q)
        out = []
        for start, (encoded, keep, logp) in zip(
            range(0, len(self.prompts), self.batch_size), self.batches
        ):
            part = slice(start, start + self.batch_size)
            # Every row ends with its continuation at the last column, so Q's kept logits line
            # up with P's whatever each read before it.
            _, feed, _ = _batch(self.tokenizer, prompts[part], self.continuations[part], device)
            logq = model_q(**feed).logits.float().log_softmax(-1)
            kl = (logp.exp() * (logp - logq.to(logp.device))).sum(-1).cpu()
            for row, (_, span) in enumerate(_spans(encoded, keep)):
                out.append(float(kl[row, span].mean()) if span.stop > span.start else 0.0)
        return out
