"""Batch encoding shared by extraction, steering, evaluation and training."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import torch

__all__ = [
    "adds_bos",
    "check_fits_context",
    "context_length",
    "encode_batch",
    "ensure_pad_token",
    "pad_batch",
    "pad_token_id",
    "position_ids_from_mask",
    "tokenize_texts",
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


def pad_token_id(tokenizer) -> int:
    """The id used for padding: the pad token's, else EOS (padding is always masked out).

    Unlike :func:`ensure_pad_token` it leaves the tokenizer as it is.

    Example:
        >>> batch_pad = pad_token_id(tokenizer)
    """
    for value in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if isinstance(value, int):
            return value
    raise ValueError(
        "the tokenizer has neither a pad nor an EOS token: set one, e.g. "
        "tokenizer.add_special_tokens({'pad_token': '<pad>'}) and resize the embeddings"
    )


def check_fits_context(model, n_tokens: int, what: str) -> None:
    """Raise if ``n_tokens`` columns exceed the model's context (before any forward pass).

    Example:
        >>> check_fits_context(model, prompt_len + 30, "the prompt plus max_new_tokens=30")
    """
    limit = context_length(model)
    if limit is not None and n_tokens > limit:
        raise ValueError(
            f"{what} needs {n_tokens} tokens but the model's context is {limit}: shorten the "
            "input or generate fewer tokens"
        )


def tokenize_texts(
    tokenizer,
    texts: Sequence[str],
    *,
    max_length: int | None = None,
    name: Callable[[int], str] = "text #{}".format,
) -> list[list[int]]:
    """Token ids of each text, checked as a whole before any batch runs.

    Raises for a text that is not a string, encodes to no tokens or is longer than
    ``max_length`` (the model's context), instead of silently truncating it; ``name(i)`` says
    which text in the message.

    Example:
        >>> ids = tokenize_texts(tokenizer, ["Hello", "Hi there"], max_length=2048)
    """
    if isinstance(texts, str):
        raise TypeError("texts must be a list of strings, not one string: pass [text]")
    texts = list(texts)
    if not texts:
        raise ValueError("no texts given: pass at least one")
    bad = [i for i, text in enumerate(texts) if not isinstance(text, str)]
    if bad:
        raise TypeError(f"{name(bad[0])} is a {type(texts[bad[0]]).__name__}, not a string")
    ids = [
        list(tokenizer(text, add_special_tokens=adds_bos(tokenizer, text))["input_ids"])
        for text in texts
    ]
    empty = [i for i, seq in enumerate(ids) if not seq]
    if empty:
        raise ValueError(f"{name(empty[0])} encodes to no tokens: {texts[empty[0]]!r}")
    if max_length is not None:
        too_long = [i for i, seq in enumerate(ids) if len(seq) > max_length]
        if too_long:
            longest = max(len(ids[i]) for i in too_long)
            raise ValueError(
                f"{len(too_long)} text(s) (first: {name(too_long[0])}, longest {longest} "
                f"tokens) exceed the model's context of {max_length} tokens: shorten them"
            )
    return ids


def pad_batch(
    ids: Sequence[Sequence[int]],
    pad_id: int,
    *,
    padding_side: str = "left",
    device=None,
    position_ids: bool = False,
) -> dict[str, torch.Tensor]:
    """A padded batch (``input_ids``, ``attention_mask``) from token-id lists.

    Example:
        >>> pad_batch([[5, 6], [7]], pad_id=0)["attention_mask"].tolist()
        [[1, 1], [0, 1]]
    """
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    width = max(len(seq) for seq in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for row, seq in enumerate(ids):
        span = slice(width - len(seq), width) if padding_side == "left" else slice(0, len(seq))
        input_ids[row, span] = torch.tensor(list(seq), dtype=torch.long)
        mask[row, span] = 1
    out = {"input_ids": input_ids, "attention_mask": mask}
    if position_ids:
        out["position_ids"] = position_ids_from_mask(mask)
    return {k: v.to(device) for k, v in out.items()} if device is not None else out


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
    mask-derived position ids, so a padded row gives the same result as the text alone. The
    tokenizer is not modified (a tokenizer without a pad token pads with EOS).

    Example:
        >>> batch = encode_batch(tokenizer, ["Hello", "Hi there"], max_length=2048)
    """
    ids = tokenize_texts(tokenizer, texts, max_length=max_length)
    return pad_batch(
        ids,
        pad_token_id(tokenizer),
        padding_side=padding_side,
        device=device,
        position_ids=position_ids,
    )
