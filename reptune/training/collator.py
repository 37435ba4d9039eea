"""Tokenize prompt + completion rows and build the position masks of the representation loss.

Training batches are right-padded, and the prompt of each row is known exactly (it is tokenized on
its own), so positions are resolved here into boolean ``(batch, seq)`` masks over absolute columns
and handed to :func:`reptune.hooks.intervene` as ``positions``.

Position language (``rep_positions`` / ``retain_positions``), as in :mod:`reptune.hooks` plus
``"completion"``:

- ``"all"``: every real token; ``"prompt"``: the prompt's tokens; ``"completion"`` (alias
  ``"generated"``): the completion's tokens;
- an int or a list of ints: offsets from the end of the prompt, ``-1`` being the last prompt token
  (``-7`` is the published "7 tokens before the end of the prompt"); on the command line
  ``"-7"`` or ``"-7,-6"``.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..pairs import format_chat
from ..tokenization import adds_bos, ensure_pad_token

__all__ = [
    "COLLATOR_COLUMNS",
    "POSITION_NAMES",
    "RepTuneCollator",
    "parse_positions",
    "position_mask",
    "prompt_end_from_labels",
]

POSITION_NAMES = ("all", "prompt", "completion")
_ALIASES = {"generated": "completion"}

#: Columns the collator reads from a dataset row (the Trainer must not drop them).
COLLATOR_COLUMNS = ("prompt", "completion", "system", "input_ids", "prompt_length")


def parse_positions(spec: Any) -> str | list[int]:
    """Normalise a position spec: a name or a list of int offsets from the end of the prompt.

    Example:
        >>> parse_positions("-7,-6")
        [-7, -6]
        >>> parse_positions("completion")
        'completion'
    """
    if isinstance(spec, str):
        text = spec.strip()
        name = _ALIASES.get(text, text)
        if name in POSITION_NAMES:
            return name
        try:
            value = json.loads(text) if text.startswith("[") else [int(p) for p in text.split(",")]
        except (ValueError, json.JSONDecodeError):
            value = None
        if value is None:
            raise ValueError(
                f"unknown positions {spec!r}: use one of {POSITION_NAMES}, an int offset from the "
                "end of the prompt (-1 = last prompt token) or a comma-separated list of offsets"
            )
        spec = value
    if isinstance(spec, int) and not isinstance(spec, bool):
        return [spec]
    if (
        isinstance(spec, Sequence)
        and spec
        and all(isinstance(p, int) and not isinstance(p, bool) for p in spec)
    ):
        return list(spec)
    raise ValueError(
        f"cannot interpret positions {spec!r}: use one of {POSITION_NAMES}, an int offset or a "
        "non-empty list of int offsets"
    )


def position_mask(
    spec: Any, attention_mask: torch.Tensor, prompt_end: torch.Tensor
) -> torch.Tensor:
    """Boolean ``(batch, seq)`` mask of the positions ``spec`` selects.

    ``prompt_end`` holds, per row, the absolute column where the completion starts; only real
    tokens (``attention_mask``) are ever selected, so left or right padding both work.

    Example:
        >>> position_mask(-1, torch.ones(1, 5), torch.tensor([3])).nonzero().tolist()
        [[0, 2]]
    """
    spec = parse_positions(spec)
    real = attention_mask.bool()
    cols = torch.arange(real.shape[1], device=real.device).unsqueeze(0)
    end = prompt_end.to(real.device).long().view(-1, 1)
    if spec == "all":
        return real
    if spec == "prompt":
        return real & (cols < end)
    if spec == "completion":
        return real & (cols >= end)
    offsets = torch.tensor(spec, device=real.device).view(1, 1, -1)
    return real & (cols.unsqueeze(-1) == (end.unsqueeze(-1) + offsets)).any(-1)


def prompt_end_from_labels(labels: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Column where each row's completion starts: its first real token with a label.

    For batches built by other collators (trl's SFT collator masks prompt labels with -100). A
    row with no label at all is treated as all prompt.

    Example:
        >>> prompt_end_from_labels(torch.tensor([[-100, -100, 7, 8]]), torch.ones(1, 4))
        tensor([2])
    """
    real = attention_mask.bool()
    labelled = (labels != -100) & real
    width = labels.shape[1]
    cols = torch.arange(width, device=labels.device).expand_as(labels)
    first = torch.where(labelled, cols, torch.full_like(cols, width)).min(1).values
    last_real = torch.where(real, cols + 1, torch.zeros_like(cols)).max(1).values
    return torch.minimum(first, last_real)


class RepTuneCollator:
    """Turn ``{"prompt", "completion"[, "system"]}`` rows into a right-padded training batch.

    The prompt goes through the chat template (:func:`reptune.pairs.format_chat`, the layout the
    vectors were extracted with) when the tokenizer has one; the completion follows it, then EOS.
    Prompt and padding labels are -100. The batch also carries ``rep_mask`` (and ``retain_mask``
    when ``retain_positions`` is set): boolean ``(batch, seq)`` masks the trainer removes before
    the forward pass. Rows already holding ``input_ids`` and ``prompt_length`` are used as is.

    Example:
        >>> collate = RepTuneCollator(tokenizer, rep_positions=-7)
        >>> batch = collate([{"prompt": "Is the sky green?", "completion": "(B"}])
        >>> sorted(batch)
        ['attention_mask', 'input_ids', 'labels', 'rep_mask']
    """

    def __init__(
        self,
        tokenizer,
        rep_positions: Any = -7,
        retain_positions: Any = None,
        max_length: int | None = None,
        completion_eos: bool = True,
        use_chat_template: bool = True,
        pad_to_multiple_of: int | None = None,
    ):
        if max_length is not None and (not isinstance(max_length, int) or max_length < 2):
            raise ValueError(f"max_length must be an int >= 2 or None, got {max_length!r}")
        self.tokenizer = ensure_pad_token(tokenizer)
        self.rep_positions = parse_positions(rep_positions)
        self.retain_positions = (
            None if retain_positions is None else parse_positions(retain_positions)
        )
        self.max_length = max_length
        self.completion_eos = completion_eos
        self.use_chat_template = use_chat_template
        self.pad_to_multiple_of = pad_to_multiple_of

    def prompt_text(self, row: Mapping[str, Any]) -> str:
        """The row's prompt as the model reads it (system text and earlier ``history``
        exchanges first, when the row has them)."""
        history = row.get("history") or ()
        if self.use_chat_template:
            return format_chat(self.tokenizer, row["prompt"], "", row.get("system"), history)
        shown = "".join(f"{u}\n{a}\n\n" for u, a in history)
        return (f"{row['system']}\n\n" if row.get("system") else "") + shown + row["prompt"]

    def encode(self, row: Mapping[str, Any]) -> tuple[list[int], int]:
        """Token ids of one row and the length of its prompt."""
        if not isinstance(row, Mapping):
            raise TypeError(f"a training row is a {type(row).__name__}, not a mapping")
        if "input_ids" in row and "prompt_length" in row:
            ids = list(row["input_ids"])
            try:
                n_prompt = operator.index(row["prompt_length"])
            except TypeError as err:
                raise TypeError(
                    f"prompt_length must be an int, got {row['prompt_length']!r}"
                ) from err
            if not 0 < n_prompt <= len(ids):
                raise ValueError(
                    f"prompt_length={n_prompt} does not fit a row of {len(ids)} input_ids: it "
                    "must be between 1 and the row's length"
                )
            return ids, n_prompt
        try:
            prompt, completion = row["prompt"], row["completion"]
        except KeyError as err:
            raise ValueError(
                f"a training row lacks {err}: rows need 'prompt' and 'completion' (optionally "
                "'system'), or pre-tokenized 'input_ids' and 'prompt_length'"
            ) from err
        for key, value in (("prompt", prompt), ("completion", completion)):
            if not isinstance(value, str):
                raise TypeError(f"a training row's {key!r} is a {type(value).__name__}, not text")
        if not prompt:
            raise ValueError("a training row has an empty 'prompt'")
        tok = self.tokenizer
        text = self.prompt_text({**row, "prompt": prompt})
        # Tokenized apart so the prompt/completion boundary is exact (BPE could merge across it).
        prompt_ids = tok(text, add_special_tokens=adds_bos(tok, text))["input_ids"]
        ids = list(prompt_ids) + list(tok(completion, add_special_tokens=False)["input_ids"])
        if self.completion_eos and tok.eos_token_id is not None:
            ids.append(tok.eos_token_id)
        if self.max_length is not None and len(ids) > self.max_length:
            if len(prompt_ids) >= self.max_length:
                raise ValueError(
                    f"a prompt has {len(prompt_ids)} tokens, not less than max_length="
                    f"{self.max_length}: raise max_length or shorten the prompt "
                    f"({text[:60]!r}...)"
                )
            ids = ids[: self.max_length]
        return ids, len(prompt_ids)

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        if not rows:
            raise ValueError("the collator got an empty batch of rows")
        encoded = [self.encode(row) for row in rows]
        width = max(len(ids) for ids, _ in encoded)
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        batch = len(encoded)
        input_ids = torch.full((batch, width), self.tokenizer.pad_token_id, dtype=torch.long)
        attention = torch.zeros((batch, width), dtype=torch.long)
        labels = torch.full((batch, width), -100, dtype=torch.long)
        prompt_end = torch.zeros(batch, dtype=torch.long)
        for i, (ids, n_prompt) in enumerate(encoded):
            input_ids[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention[i, : len(ids)] = 1
            labels[i, n_prompt : len(ids)] = input_ids[i, n_prompt : len(ids)]
            prompt_end[i] = n_prompt
        out = {"input_ids": input_ids, "attention_mask": attention, "labels": labels}
        out["rep_mask"] = position_mask(self.rep_positions, attention, prompt_end)
        if self.retain_positions is not None:
            out["retain_mask"] = position_mask(self.retain_positions, attention, prompt_end)
        return out
