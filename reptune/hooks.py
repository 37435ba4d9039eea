"""The one hook mechanism: read and edit decoder-block outputs at chosen layers and positions.

Extraction, steering and training all go through :func:`intervene`. Positions are *absolute*:
each forward call is located inside its sequence from the 2-D attention mask and the KV-cache
length, so a decode step that feeds one token still knows whether that token is part of the prompt
or was generated, and a left-padded row never counts its padding.

Position language (``positions=``):

- ``"all"``: every real (non-padding) token;
- ``"prompt"``: real tokens of the prompt;
- ``"generated"``: tokens after the prompt (those produced by ``generate``);
- an int or a sequence of ints: offsets from the end of the prompt, ``-1`` being the last prompt
  token and ``0`` the first generated one (``[-7]`` is "7 tokens before the end of the prompt");
- a boolean tensor ``(batch, seq)`` or ``(seq,)`` over absolute columns (the columns of the
  attention mask); columns past its end are not selected.

The prompt of a forward call without a KV cache is the whole input, unless a prompt length is set
(``SteeredModel.generate`` sets it to the input length). Calls that continue a cache keep the
prompt length of the call that started it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from .layers import LAYER_PATHS, _get_path, check_layers, find_layers, unwrap_model

__all__ = [
    "Positions",
    "CallPositions",
    "Intervention",
    "AddVector",
    "AblateVector",
    "Recorder",
    "StopForward",
    "intervene",
    "forward_until",
    "resolve_positions",
    "recording",
]

Positions = str | int | Sequence[int] | torch.Tensor
#: An intervention receives the block output ``(batch, q, hidden)``, the boolean mask of selected
#: positions ``(batch, q)`` and the call's :class:`CallPositions`; it returns a new output or None.
Intervention = Callable[[torch.Tensor, torch.Tensor, "CallPositions"], torch.Tensor | None]

_NAMED_POSITIONS = ("all", "prompt", "generated")
_PROMPT_END_ATTR = "_reptune_prompt_end"


class StopForward(Exception):
    """Raised after the deepest needed layer so the rest of the model never runs."""


@dataclass
class CallPositions:
    """Where the tokens of one forward call sit in their sequences.

    ``columns``: absolute column of each current token ``(q,)``; ``real``: non-padding mask of the
    current tokens ``(batch, q)``; ``prompt_end``: per-row column where the prompt ends
    (exclusive) ``(batch,)``.
    """

    columns: torch.Tensor
    real: torch.Tensor
    prompt_end: torch.Tensor
    past_length: int
    _masks: dict = field(default_factory=dict, repr=False)

    @property
    def batch_size(self) -> int:
        return self.real.shape[0]

    def select(self, positions: Positions) -> torch.Tensor:
        """Boolean ``(batch, q)`` mask of the current tokens selected by ``positions``."""
        key = positions if isinstance(positions, (str, int, tuple)) else id(positions)
        if key not in self._masks:
            self._masks[key] = resolve_positions(positions, self)
        return self._masks[key]


def resolve_positions(positions: Positions, call: CallPositions) -> torch.Tensor:
    """Turn a position spec into a ``(batch, q)`` boolean mask for one forward call."""
    cols = call.columns.unsqueeze(0)  # (1, q)
    end = call.prompt_end.unsqueeze(1)  # (batch, 1)
    if isinstance(positions, str):
        if positions == "all":
            return call.real
        if positions == "prompt":
            return call.real & (cols < end)
        if positions == "generated":
            return call.real & (cols >= end)
        raise ValueError(
            f"unknown positions {positions!r}: use one of {_NAMED_POSITIONS}, an int offset from "
            "the end of the prompt (-1 = last prompt token), a list of offsets, or a boolean mask"
        )
    if isinstance(positions, torch.Tensor) and positions.dtype == torch.bool:
        mask = positions.to(call.real.device)
        if mask.dim() == 1:
            mask = mask.unsqueeze(0).expand(call.batch_size, -1)
        if mask.dim() != 2 or mask.shape[0] != call.batch_size:
            raise ValueError(
                f"position mask has shape {tuple(positions.shape)}; expected (seq,) or "
                f"(batch={call.batch_size}, seq) over absolute columns"
            )
        width = mask.shape[1]
        idx = call.columns.clamp(max=max(width - 1, 0))
        picked = mask[:, idx] if width else torch.zeros_like(call.real)
        return picked & (call.columns < width).unsqueeze(0) & call.real
    if isinstance(positions, int) and not isinstance(positions, bool):
        positions = [positions]
    if isinstance(positions, torch.Tensor):
        positions = positions.tolist()
    if isinstance(positions, Sequence) and all(
        isinstance(p, int) and not isinstance(p, bool) for p in positions
    ):
        if not positions:
            raise ValueError("empty list of position offsets")
        offsets = torch.tensor(list(positions), device=cols.device)
        wanted = end.unsqueeze(-1) + offsets.view(1, 1, -1)  # (batch, 1, k)
        hit = (cols.unsqueeze(-1) == wanted).any(-1)
        return hit & call.real
    raise TypeError(f"cannot interpret positions={positions!r}")


def validate_positions(positions: Positions) -> None:
    """Raise early (before any forward pass) for a malformed position spec."""
    if isinstance(positions, str) and positions not in _NAMED_POSITIONS:
        raise ValueError(
            f"unknown positions {positions!r}: use one of {_NAMED_POSITIONS}, an int offset, a "
            "list of offsets or a boolean mask"
        )
    if isinstance(positions, torch.Tensor) and positions.dtype != torch.bool:
        if positions.dim() != 1:
            raise ValueError("a position tensor must be boolean (a mask) or 1-D integer offsets")
    if isinstance(positions, (list, tuple)) and not positions:
        raise ValueError("empty list of position offsets")


class _CallTracker:
    """Pre-hook on the decoder backbone that locates each forward call in its sequences."""

    def __init__(self, backbone: nn.Module, prompt_length: int | torch.Tensor | None):
        self.signature = inspect.signature(backbone.forward)
        self.prompt_length = prompt_length
        self.last_prompt_length: int | None = None
        self.current: CallPositions | None = None

    def __call__(self, module, args, kwargs):
        try:
            bound = self.signature.bind_partial(*args, **kwargs).arguments
        except TypeError:
            bound = dict(kwargs)
        extra = bound.pop("kwargs", None)
        if isinstance(extra, Mapping):
            bound.update(extra)
        ids = bound.get("input_ids")
        embeds = bound.get("inputs_embeds")
        ref = ids if ids is not None else embeds
        if ref is None:
            raise ValueError("forward call with neither input_ids nor inputs_embeds")
        batch, q = ref.shape[0], ref.shape[1]
        device = ref.device
        mask = bound.get("attention_mask")
        cache = bound.get("past_key_values")
        if isinstance(mask, torch.Tensor) and mask.dim() == 2:
            past = mask.shape[1] - q
            real = mask[:, past:].bool()
        else:
            past = int(cache.get_seq_length()) if hasattr(cache, "get_seq_length") else 0
            real = torch.ones(batch, q, dtype=torch.bool, device=device)
        if self.prompt_length is not None:
            end = self.prompt_length
        elif past == 0:
            end = q
            self.last_prompt_length = q
        else:
            # The prompt end travels with the KV cache, so a decode step run in another call (or
            # another context) still counts positions from the same prompt.
            end = getattr(cache, _PROMPT_END_ATTR, None)
            if end is None:
                end = self.last_prompt_length if self.last_prompt_length is not None else past
        if past == 0 and cache is not None:
            try:
                setattr(cache, _PROMPT_END_ATTR, end)
            except AttributeError:  # a cache type that refuses new attributes
                pass
        if isinstance(end, torch.Tensor):
            end = end.to(device).long().view(-1)
            if end.numel() != batch:
                # generate() may expand the batch (num_return_sequences, beams).
                end = end.repeat_interleave(batch // max(end.numel(), 1))
        else:
            end = torch.full((batch,), int(end), dtype=torch.long, device=device)
        self.current = CallPositions(
            columns=torch.arange(past, past + q, device=device),
            real=real.to(device),
            prompt_end=end,
            past_length=past,
        )


def _backbone(model: nn.Module, layer_path: str | None) -> tuple[nn.Module, nn.ModuleList]:
    """The module that owns the decoder blocks (it receives the 2-D attention mask)."""
    inner = unwrap_model(model)
    layers = find_layers(model, layer_path)
    for path in (layer_path,) if layer_path else LAYER_PATHS:
        if _get_path(inner, path) is layers:
            parent = path.rsplit(".", 1)[0] if "." in path else ""
            return (_get_path(inner, parent) if parent else inner), layers
    return inner, layers


def _layer_hook(tracker: _CallTracker, fn: Intervention, positions: Positions, stop: bool):
    def hook(module, args, output):
        hidden = output[0] if isinstance(output, tuple) else output
        call = tracker.current
        if call is None:
            raise RuntimeError("decoder block ran outside a tracked forward call")
        mask = call.select(positions)
        new = fn(hidden, mask, call)
        if stop:
            raise StopForward
        if new is None or new is hidden:
            return None
        return (new, *output[1:]) if isinstance(output, tuple) else new

    return hook


@contextmanager
def intervene(
    model: nn.Module,
    interventions: Mapping[int, Intervention],
    positions: Positions = "all",
    *,
    layer_path: str | None = None,
    prompt_length: int | torch.Tensor | None = None,
    stop_after_last: bool = False,
) -> Iterator[_CallTracker]:
    """Attach ``interventions`` (layer index -> function) to the model's decoder blocks.

    Each function sees the block output, the mask of positions selected by ``positions`` and the
    call's :class:`CallPositions`, and may return an edited output. All hooks are removed when the
    block exits, also on error. With ``stop_after_last`` the forward pass raises
    :class:`StopForward` after the deepest hooked layer (see :func:`forward_until`).

    Example:
        >>> rec, fns = recording([3])
        >>> with intervene(model, fns, positions=[-1]):
        ...     model(**batch)
        >>> rec.per_row_mean(3).shape  # (batch, hidden)
    """
    validate_positions(positions)
    backbone, layers = _backbone(model, layer_path)
    layer_ids = check_layers(list(interventions), len(layers))
    deepest = max(layer_ids)
    by_index = {(i + len(layers) if i < 0 else i): fn for i, fn in interventions.items()}
    tracker = _CallTracker(backbone, prompt_length)
    handles = []
    try:
        handles.append(backbone.register_forward_pre_hook(tracker, with_kwargs=True))
        for idx in layer_ids:
            stop = stop_after_last and idx == deepest
            hook = _layer_hook(tracker, by_index[idx], positions, stop)
            handles.append(layers[idx].register_forward_hook(hook))
        yield tracker
    finally:
        for handle in handles:
            handle.remove()


def forward_until(
    model: nn.Module,
    interventions: Mapping[int, Intervention],
    positions: Positions = "all",
    *,
    layer_path: str | None = None,
    **inputs,
) -> None:
    """Run ``model(**inputs)`` only up to the deepest hooked layer (no later blocks, no LM head).

    Example:
        >>> rec, fns = recording([2])
        >>> forward_until(model, fns, positions="all", **tokenizer("hi", return_tensors="pt"))
    """
    with intervene(model, interventions, positions, layer_path=layer_path, stop_after_last=True):
        try:
            model(**inputs, use_cache=False)
        except StopForward:
            pass


def _as_coefficient(coefficient, batch: int, device, dtype) -> torch.Tensor:
    coef = torch.as_tensor(coefficient, device=device, dtype=dtype).reshape(-1)
    if coef.numel() == 1:
        return coef.expand(batch)
    if batch % coef.numel():
        raise ValueError(
            f"coefficient has {coef.numel()} values but the batch has {batch} rows: pass one "
            "value per row or a single float"
        )
    # generate() expands rows for num_return_sequences/beams; repeat each row's coefficient.
    return coef.repeat_interleave(batch // coef.numel())


class AddVector:
    """Intervention adding ``coefficient * vector`` at the selected positions.

    ``coefficient`` is a float or a tensor with one value per batch row.

    Example:
        >>> with intervene(model, {5: AddVector(v, 4.0)}, positions="all"):
        ...     model.generate(**batch)
    """

    def __init__(self, vector: torch.Tensor, coefficient: float | torch.Tensor = 1.0):
        self.vector = vector
        self.coefficient = coefficient

    def __call__(self, hidden, mask, call):
        vec = self.vector.to(hidden.device, hidden.dtype)
        coef = _as_coefficient(self.coefficient, hidden.shape[0], hidden.device, hidden.dtype)
        delta = coef.view(-1, 1, 1) * vec
        return hidden + mask.unsqueeze(-1).to(hidden.dtype) * delta


class AblateVector:
    """Intervention projecting the direction out: ``h - (h . v / |v|^2) v`` at selected positions.

    Example:
        >>> with intervene(model, {5: AblateVector(v)}):
        ...     model(**batch)
    """

    def __init__(self, vector: torch.Tensor):
        self.vector = vector

    def __call__(self, hidden, mask, call):
        unit = self.vector.to(hidden.device, torch.float32)
        unit = unit / unit.norm()
        h32 = hidden.float()
        projected = h32 - (h32 @ unit).unsqueeze(-1) * unit
        return torch.where(mask.unsqueeze(-1), projected.to(hidden.dtype), hidden)


class Recorder:
    """Intervention that records block outputs at the selected positions.

    With ``detach=False`` the recorded tensors keep their autograd history (training). Only the
    latest call is kept unless ``keep_all`` (a gradient-checkpointing recompute overwrites it).

    Example:
        >>> rec = Recorder()
        >>> with intervene(model, {2: rec.bind(2), 4: rec.bind(4)}, positions=[-1]):
        ...     model(**batch)
        >>> rec.per_row_mean(4)
    """

    def __init__(self, detach: bool = True, keep_all: bool = False):
        self.detach = detach
        self.keep_all = keep_all
        self.records: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}

    def bind(self, layer: int) -> Intervention:
        """The intervention for ``layer`` (so one Recorder can serve several layers)."""

        def record(hidden, mask, call):
            h = hidden.detach() if self.detach else hidden
            entries = self.records.setdefault(layer, [])
            if not self.keep_all:
                entries.clear()
            entries.append((h, mask))
            return None

        return record

    def hidden(self, layer: int) -> torch.Tensor:
        """Recorded output ``(batch, q, hidden)`` of the latest call at ``layer``."""
        return self.records[layer][-1][0]

    def mask(self, layer: int) -> torch.Tensor:
        return self.records[layer][-1][1]

    def per_row_mean(self, layer: int) -> torch.Tensor:
        """Mean over selected positions of each row ``(batch, hidden)``; errors on empty rows."""
        hidden, mask = self.records[layer][-1]
        counts = mask.sum(1)
        if (counts == 0).any():
            rows = (counts == 0).nonzero().flatten().tolist()
            raise ValueError(
                f"no selected positions in batch rows {rows}: the position spec falls outside "
                "those sequences (too short, or an offset before the first token)"
            )
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(1) / counts.unsqueeze(-1).to(hidden.dtype)

    def clear(self) -> None:
        self.records.clear()


def recording(layers: Sequence[int], detach: bool = True) -> tuple[Recorder, dict]:
    """A Recorder and the ``{layer: intervention}`` map that feeds it."""
    rec = Recorder(detach=detach)
    return rec, {layer: rec.bind(layer) for layer in layers}
