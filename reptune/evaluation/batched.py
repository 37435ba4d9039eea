"""Batched scoring and generation, each row with its own steering coefficient if asked.

A :class:`~reptune.steering.SteeredModel` takes one coefficient per batch row, so a whole
coefficient sweep shares batches. Every prompt is tokenized and checked against the model's
context before the first batch runs, and the model runs in eval mode.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from ..hooks import eval_mode
from ..layers import model_device
from ..steering import SteeredModel
from ..tokenization import (
    check_fits_context,
    context_length,
    pad_batch,
    pad_token_id,
    tokenize_texts,
)
from .ab.letters import letter_token_ids, next_token_log_probs

__all__ = ["with_coefficient", "check_coefficients", "score_letters", "generate_texts"]


class _WithCoefficient:
    """A SteeredModel whose forward and generate use fixed per-row coefficients."""

    def __init__(self, steered: SteeredModel, coefficient: torch.Tensor):
        self.steered = steered
        self.coefficient = coefficient

    @property
    def _reptune_wrapped(self):
        return self.steered

    def __getattr__(self, name):
        if name == "steered":
            raise AttributeError(name)
        return getattr(self.steered, name)

    def __call__(self, *args, **kwargs):
        return self.steered(*args, coefficient=self.coefficient, **kwargs)

    def generate(self, *args, **kwargs):
        return self.steered.generate(*args, coefficient=self.coefficient, **kwargs)


def with_coefficient(model, coefficient: torch.Tensor | float | None):
    """``model`` with its steering coefficient fixed for every call (no-op for None).

    Example:
        >>> bound = with_coefficient(steered, torch.tensor([0.0, 4.0]))
        >>> bound(**batch_of_two)
    """
    if coefficient is None:
        return model
    if not isinstance(model, SteeredModel):
        raise TypeError(
            "per-row coefficients need a SteeredModel; wrap the model with "
            "SteeredModel(model, vectors, layers=...) first"
        )
    return _WithCoefficient(model, torch.as_tensor(coefficient, dtype=torch.float32))


def _chunks(n: int, size: int):
    if size < 1:
        raise ValueError(f"batch_size must be positive, got {size}")
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def _coef_slice(coefficients, part: slice):
    return None if coefficients is None else torch.as_tensor(coefficients)[part]


def check_coefficients(coefficients, n: int) -> None:
    """One coefficient per prompt, or none: checked before the first batch."""
    if coefficients is None:
        return
    try:
        coef = torch.as_tensor(coefficients, dtype=torch.float32)
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(f"coefficients must be numbers, got {coefficients!r:.80}") from err
    if coef.dim() != 1 or coef.numel() != n:
        raise ValueError(
            f"coefficients has shape {tuple(coef.shape)} but there are {n} prompts: pass one "
            "coefficient per prompt"
        )


@torch.no_grad()
def score_letters(
    model,
    tokenizer,
    prompts: Sequence[str],
    letters: Sequence[Sequence[str]],
    *,
    coefficients: torch.Tensor | Sequence[float] | None = None,
    batch_size: int = 16,
    progress: bool = False,
) -> list[dict[str, float]]:
    """Full-vocabulary probability of each row's letters as the next token.

    ``letters[i]`` are the options of ``prompts[i]``; each letter's probability sums its
    single-token spellings (``"A"``, ``" A"``). Divide by the row sum for the choice restricted
    to the options.

    Example:
        >>> score_letters(model, tok, ["... Answer: ("], [("A", "B")])
        [{'A': 0.41, 'B': 0.22}]
    """
    if len(letters) != len(prompts):
        raise ValueError("give one letter tuple per prompt")
    check_coefficients(coefficients, len(prompts))
    _chunks(len(prompts), batch_size)
    ids = functools.cache(lambda letter: letter_token_ids(tokenizer, letter))
    out: list[dict[str, float]] = []
    for part in tqdm(
        _chunks(len(prompts), batch_size), desc="letter scores", disable=not progress, leave=False
    ):
        bound = with_coefficient(model, _coef_slice(coefficients, part))
        logp = next_token_log_probs(bound, tokenizer, prompts[part], batch_size=batch_size)
        probs = logp.exp()
        for row, options in zip(probs, letters[part]):
            out.append({x: float(row[ids(x)].sum()) for x in options})
    return out


@torch.no_grad()
def generate_texts(
    model,
    tokenizer,
    prompts: Sequence[str],
    *,
    coefficients: torch.Tensor | Sequence[float] | None = None,
    max_new_tokens: int = 30,
    batch_size: int = 8,
    do_sample: bool = False,
    seed: int | None = None,
    progress: bool = False,
) -> list[str]:
    """The continuation of each prompt (left-padded batches; greedy unless ``do_sample``).

    Example:
        >>> generate_texts(steered, tok, prompts, coefficients=torch.tensor([0.0, 8.0]))
    """
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an int >= 1, got {max_new_tokens!r}")
    check_coefficients(coefficients, len(prompts))
    parts = _chunks(len(prompts), batch_size)
    device = model_device(model)
    ids = tokenize_texts(
        tokenizer, prompts, max_length=context_length(model), name="prompt #{}".format
    )
    # Left padding makes every batch as wide as its longest prompt: that one must fit.
    longest = max(len(x) for x in ids)
    check_fits_context(
        model, longest + max_new_tokens, f"the longest prompt ({longest} tokens) plus "
        f"max_new_tokens={max_new_tokens}"
    )  # fmt: skip
    pad_id = pad_token_id(tokenizer)
    texts: list[str] = []
    sampling = (
        {"do_sample": True}
        if do_sample
        else {
            # Greedy: clear sampling settings a checkpoint's generation config may carry.
            "do_sample": False,
            "temperature": None,
            "top_p": None,
            "top_k": None,
        }
    )
    with eval_mode(model):
        for part in tqdm(parts, desc="generate", disable=not progress, leave=False):
            batch = pad_batch(ids[part], pad_id, device=device)
            if seed is not None:
                torch.manual_seed(seed + part.start)
            bound = with_coefficient(model, _coef_slice(coefficients, part))
            out = bound.generate(
                **batch, max_new_tokens=max_new_tokens, pad_token_id=pad_id, **sampling
            )
            width = batch["input_ids"].shape[1]
            texts.extend(tokenizer.batch_decode(out[:, width:], skip_special_tokens=True))
    return texts
