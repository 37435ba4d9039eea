"""Letter probabilities at the answer position (one forward pass per batch)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ...hooks import eval_mode
from ...layers import model_device
from ...tokenization import context_length, pad_batch, pad_token_id, tokenize_texts

__all__ = ["letter_token_ids", "letter_probabilities", "next_token_log_probs"]


def letter_token_ids(tokenizer, letter: str) -> list[int]:
    """Single-token spellings of ``letter`` (bare and with a leading space)."""
    ids = []
    for variant in (letter, " " + letter):
        encoded = tokenizer(variant, add_special_tokens=False)["input_ids"]
        if len(encoded) == 1 and encoded[0] not in ids:
            ids.append(encoded[0])
    if not ids:
        raise ValueError(f"the tokenizer has no single token for the answer letter {letter!r}")
    return ids


@torch.no_grad()
def next_token_log_probs(model, tokenizer, prompts: Sequence[str], batch_size: int = 16):
    """Log-probabilities of the next token after each prompt, ``(n, vocab)``, float32.

    Every prompt is tokenized and checked against the context before the first batch runs; the
    model runs in eval mode.
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    ids = tokenize_texts(
        tokenizer, prompts, max_length=context_length(model), name="prompt #{}".format
    )
    pad_id, device = pad_token_id(tokenizer), model_device(model)
    out = []
    with eval_mode(model):
        for start in range(0, len(ids), batch_size):
            batch = pad_batch(
                ids[start : start + batch_size], pad_id, device=device, position_ids=True
            )
            logits = model(**batch, use_cache=False, logits_to_keep=1).logits[:, -1]
            out.append(torch.log_softmax(logits.float(), dim=-1).cpu())
    return torch.cat(out)


def letter_probabilities(
    model,
    tokenizer,
    prompts: Sequence[str],
    letters: Sequence[str] = ("A", "B"),
    batch_size: int = 16,
    renormalize: bool = True,
) -> torch.Tensor:
    """Probability of each answer letter as the next token, ``(n, len(letters))``.

    Each letter's probability sums its single-token spellings. With ``renormalize`` the rows sum
    to one over ``letters`` (the choice restricted to the options).

    Example:
        >>> p = letter_probabilities(model, tok, ["... Answer: ("], ("A", "B"))
        >>> p[:, 0]  # P(A | A or B)
    """
    ids = [letter_token_ids(tokenizer, letter) for letter in letters]
    logp = next_token_log_probs(model, tokenizer, prompts, batch_size)
    probs = torch.stack([logp[:, group].exp().sum(-1) for group in ids], dim=-1)
    return probs / probs.sum(-1, keepdim=True) if renormalize else probs
