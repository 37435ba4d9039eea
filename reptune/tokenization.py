"""Batch encoding shared by extraction, steering, evaluation and training."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

__all__ = [
    "adds_bos",
    "context_length",
    "encode_batch",
    "ensure_pad_token",
    "position_ids_from_mask",
]

logger = logging.getLogger(__name__)


def ensure_pad_token(tokenizer):
    """Give ``tokenizer`` a pad token if it has none (its EOS token), or raise.

    Padding positions are always masked out, so reusing EOS as padding changes no result.

    Example:
        >>> tokenizer = ensure_pad_token(tokenizer)
    """
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token is None:
            raise ValueError(
                "the tokenizer has neither a pad nor an EOS token: set one, e.g. "
                "tokenizer.add_special_tokens({'pad_token': '<pad>'}) and resize the embeddings"
            )
        logger.info("tokenizer has no pad token; using its EOS token %r", tokenizer.eos_token)
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def context_length(model) -> int | None:
    """The longest sequence the model accepts, if its config says."""
    config = getattr(model, "config", None)
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids that start at 0 on each row's first real token.

    A plain forward call numbers positions from the first column, so a left-padded row would see
    shifted positions; ``generate`` derives them from the mask the same way.
    """
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def adds_bos(tokenizer, text: str) -> bool:
    """Whether tokenizing ``text`` should add special tokens (not when it already starts with
    BOS)."""
    # Chat templates already start with BOS for some models (Llama); do not add a second one.
    bos = getattr(tokenizer, "bos_token", None)
    return not (bos and text.startswith(bos))


def encode_batch(
    tokenizer,
    texts: Sequence[str],
    *,
    padding_side: str = "left",
    max_length: int | None = None,
    device=None,
    position_ids: bool = False,
) -> dict[str, torch.Tensor]:
    """Tokenize ``texts`` into a padded batch (left padding by default, for generation).

    Raises before any forward pass when a text is longer than ``max_length`` (the model's
    context), instead of silently truncating it. With ``position_ids`` the batch also carries
    mask-derived position ids, so a padded row gives the same result as the text alone.

    Example:
        >>> batch = encode_batch(tokenizer, ["Hello", "Hi there"], max_length=2048)
    """
    ensure_pad_token(tokenizer)
    ids = [
        tokenizer(text, add_special_tokens=adds_bos(tokenizer, text))["input_ids"] for text in texts
    ]
    if max_length is not None:
        too_long = [i for i, seq in enumerate(ids) if len(seq) > max_length]
        if too_long:
            longest = max(len(ids[i]) for i in too_long)
            raise ValueError(
                f"{len(too_long)} text(s) (first: #{too_long[0]}, longest {longest} tokens) exceed "
                f"the model's context of {max_length} tokens: shorten them or lower the limit"
            )
    width = max(len(seq) for seq in ids)
    pad = tokenizer.pad_token_id
    input_ids = torch.full((len(ids), width), pad, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for row, seq in enumerate(ids):
        if not seq:
            raise ValueError(f"text #{row} encodes to no tokens")
        span = slice(width - len(seq), width) if padding_side == "left" else slice(0, len(seq))
        input_ids[row, span] = torch.tensor(seq, dtype=torch.long)
        mask[row, span] = 1
    out = {"input_ids": input_ids, "attention_mask": mask}
    if position_ids:
        out["position_ids"] = position_ids_from_mask(mask)
    return {k: v.to(device) for k, v in out.items()} if device is not None else out
