"""The position language: which tokens of a forward call an intervention acts on.

``positions=`` takes:

- ``"all"``: every real (non-padding) token;
- ``"prompt"``: real tokens of the prompt;
- ``"generated"``: tokens after the prompt (those produced by ``generate``);
- an int or a list of ints: offsets from the end of each row's prompt, ``-1`` being its last real
  prompt token and ``0`` the first generated one (``[-7]`` is "7 tokens before the end of the
  prompt"). The end is found per row from the attention mask, so left- and right-padded batches
  both give each row the result it gets alone; a batch of several rows without an attention
  mask is refused, because its padding cannot be told apart from text (lm-eval's ``HFLM``
  right-pads and passes no mask: steer it with ``"all"``);
- a boolean tensor ``(batch, seq)`` or ``(seq,)`` over absolute columns (the columns of the
  attention mask); columns past its end are not selected.

Example:
    >>> validate_positions([-2, -1])
    [-2, -1]
    >>> check_call([-1], batch=8, has_mask=False)  # doctest: +SKIP
    ValueError: positions=[-1] counts from the end of each row's prompt, ...
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

__all__ = [
    "Positions",
    "NAMED_POSITIONS",
    "CallPositions",
    "validate_positions",
    "uses_offsets",
    "check_call",
    "prompt_ends",
    "resolve_positions",
]

Positions = str | int | Sequence[int] | torch.Tensor
NAMED_POSITIONS = ("all", "prompt", "generated")

_HELP = (
    f"use one of {NAMED_POSITIONS}, an int offset from the end of the prompt (-1 = last prompt "
    "token), a non-empty list of int offsets, or a boolean mask (seq,) or (batch, seq)"
)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def validate_positions(positions: Positions) -> Positions:
    """Return ``positions`` (lists of offsets as a list) or raise before any forward pass.

    Example:
        >>> validate_positions("all")
        'all'
    """
    if isinstance(positions, str):
        if positions not in NAMED_POSITIONS:
            raise ValueError(f"unknown positions {positions!r}: {_HELP}")
        return positions
    if _is_int(positions):
        return positions
    if isinstance(positions, torch.Tensor):
        if positions.dtype != torch.bool:
            raise TypeError(
                f"a position tensor must be a boolean mask, got dtype {positions.dtype}: turn a "
                "0/1 mask into one with .bool(), or pass offsets as a list of ints"
            )
        if positions.dim() not in (1, 2):
            raise ValueError(
                f"position mask has shape {tuple(positions.shape)}; expected (seq,) or "
                "(batch, seq) over absolute columns"
            )
        return positions
    if isinstance(positions, (list, tuple, range)):
        if len(positions) == 0:
            raise ValueError(f"empty list of position offsets: {_HELP}")
        bad = [p for p in positions if not _is_int(p)]
        if bad:
            raise TypeError(f"position offsets must be ints, got {bad[0]!r} in {positions!r}")
        return list(positions)
    raise TypeError(f"cannot interpret positions={positions!r}: {_HELP}")


def uses_offsets(positions: Positions) -> bool:
    """Whether ``positions`` counts from the end of the prompt (an int or a list of ints)."""
    return _is_int(positions) or isinstance(positions, (list, tuple, range))


def check_call(positions: Positions, batch: int, has_mask: bool, width: int | None = None) -> None:
    """Raise, before the forward pass, if one call of ``batch`` rows cannot honour ``positions``.

    ``has_mask``: whether the call passes a 2-D attention mask; ``width``: the columns of the
    call (cache + new tokens), to check a position mask's width when it is known.

    Example:
        >>> check_call("all", batch=8, has_mask=False)
    """
    if uses_offsets(positions) and batch > 1 and not has_mask:
        raise ValueError(
            f"positions={positions!r} counts from the end of each row's prompt, but this call "
            f"of {batch} rows passes no attention_mask, so padded rows cannot be told apart "
            "(lm-eval's HFLM right-pads and passes none): pass attention_mask=..., run one row "
            "per call, or steer positions='all'"
        )
    if isinstance(positions, torch.Tensor) and positions.dim() == 2:
        rows = positions.shape[0]
        if rows != 1 and (rows > batch or batch % rows):
            raise ValueError(
                f"position mask has {rows} rows but the batch has {batch}: pass a (seq,) mask or "
                "one row per batch row"
            )
    if isinstance(positions, torch.Tensor) and width is not None and positions.shape[-1] != width:
        raise ValueError(
            f"position mask covers {positions.shape[-1]} columns but this call has {width} "
            "(the attention mask's width): build the mask over the padded batch"
        )


def prompt_ends(attention_mask: torch.Tensor, limit: int) -> torch.Tensor:
    """Per row, one past the last real column among the first ``limit`` columns (0 if none).

    A left-padded row ends at ``limit``; a right-padded one at its own last real token.

    Example:
        >>> prompt_ends(torch.tensor([[1, 1, 0], [0, 1, 1]]), 3).tolist()
        [2, 3]
    """
    region = attention_mask[:, :limit].bool()
    cols = torch.arange(1, region.shape[1] + 1, device=region.device)
    return (region.long() * cols).max(1).values if region.shape[1] else region.sum(1)


@dataclass
class CallPositions:
    """Where the tokens of one forward call sit in their sequences.

    ``columns``: absolute column of each current token ``(q,)``; ``real``: non-padding mask of the
    current tokens ``(batch, q)``; ``prompt_end``: per-row column where the prompt ends
    (exclusive) ``(batch,)``; ``all_real``: whether no current token is padding (None: not
    known yet, found from ``real`` when first asked).
    """

    columns: torch.Tensor
    real: torch.Tensor
    prompt_end: torch.Tensor
    past_length: int
    all_real: bool | None = None
    _masks: dict = field(default_factory=dict, repr=False)

    @property
    def batch_size(self) -> int:
        return self.real.shape[0]

    def selects_every_token(self, mask: torch.Tensor) -> bool:
        """Whether ``mask`` is this call's ``"all"`` selection and no current token is padding,
        so an edit of every position needs no mask. Looks at ``real`` at most once per call.

        Example:
            >>> call.selects_every_token(call.select("all"))  # decode step of a generate
            True
        """
        if mask is not self.real:
            return False
        if self.all_real is None:
            self.all_real = bool(self.real.all())
        return self.all_real

    def select(self, positions: Positions) -> torch.Tensor:
        """Boolean ``(batch, q)`` mask of the current tokens selected by ``positions``."""
        key = positions if isinstance(positions, (str, int, tuple)) else id(positions)
        if key not in self._masks:
            self._masks[key] = resolve_positions(positions, self)
        return self._masks[key]


def resolve_positions(positions: Positions, call: CallPositions) -> torch.Tensor:
    """Turn a position spec into a ``(batch, q)`` boolean mask for one forward call."""
    positions = validate_positions(positions)
    cols = call.columns.unsqueeze(0)  # (1, q)
    end = call.prompt_end.unsqueeze(1)  # (batch, 1)
    if isinstance(positions, str):
        if positions == "all":
            return call.real
        if positions == "prompt":
            return call.real & (cols < end)
        return call.real & (cols >= end)
    if isinstance(positions, torch.Tensor):
        check_call(positions, call.batch_size, True)
        mask = positions.to(call.real.device)
        if mask.dim() == 1:
            mask = mask.unsqueeze(0)
        if mask.shape[0] != call.batch_size:
            # generate() may expand the batch (num_return_sequences, beams).
            mask = mask.repeat_interleave(call.batch_size // mask.shape[0], dim=0)
        width = mask.shape[1]
        idx = call.columns.clamp(max=max(width - 1, 0))
        picked = mask[:, idx] if width else torch.zeros_like(call.real)
        return picked & (call.columns < width).unsqueeze(0) & call.real
    offsets = torch.tensor([positions] if _is_int(positions) else positions, device=cols.device)
    wanted = end.unsqueeze(-1) + offsets.view(1, 1, -1)  # (batch, 1, k)
    return (cols.unsqueeze(-1) == wanted).any(-1) & call.real
