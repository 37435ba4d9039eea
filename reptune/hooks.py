"""The one hook mechanism: read and edit decoder-block outputs at chosen layers and positions.

Extraction, steering and training all go through :func:`intervene`. Positions are *absolute*:
each forward call is located inside its sequence from the 2-D attention mask and the KV-cache
length, so a decode step that feeds one token still knows whether that token is part of the prompt
or was generated, and a padded row never counts its padding. The position language is described
in :mod:`reptune.positions`.

The prompt of a forward call without a KV cache is the whole input, unless a prompt length is set
(``SteeredModel.generate`` sets it to the input length); each row's prompt ends after its last
real token inside that span, so right-padded rows count offsets from their own end. Calls that
continue a cache keep the prompt ends of the call that started it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from .interventions import AblateVector, AddVector
from .layers import LAYER_PATHS, _get_path, check_layers, find_layers, unwrap_model
from .positions import (
    CallPositions,
    Positions,
    check_call,
    prompt_ends,
    resolve_positions,
    validate_positions,
)

__all__ = [
    "Positions",
    "CallPositions",
    "Intervention",
    "AddVector",
    "AblateVector",
    "Recorder",
    "StopForward",
    "eval_mode",
    "intervene",
    "forward_until",
    "resolve_positions",
    "recording",
]

#: An intervention receives the block output ``(batch, q, hidden)``, the boolean mask of selected
#: positions ``(batch, q)`` and the call's :class:`CallPositions`; it returns a new output or None.
Intervention = Callable[[torch.Tensor, torch.Tensor, "CallPositions"], torch.Tensor | None]

_PROMPT_END_ATTR = "_reptune_prompt_end"
_PROMPT_ENDS_MEMO_ATTR = "_reptune_prompt_ends_memo"


class StopForward(Exception):
    """Raised after the deepest needed layer so the rest of the model never runs."""


@contextmanager
def eval_mode(model) -> Iterator[None]:
    """Put every module of ``model`` in eval mode for the block; restore each one's mode after.

    Reading activations and steering are inference: dropout would make two runs on the same
    inputs disagree. The mode of each submodule is restored on exit, also on error. A
    :class:`~reptune.steering.SteeredModel` (or another reptune wrapper) is seen through.

    Example:
        >>> model.train()
        >>> with eval_mode(model):
        ...     vecs = extract_vectors(model, tok, pairs)  # deterministic
        >>> model.training
        True
    """
    while not isinstance(model, nn.Module) and getattr(model, "_reptune_wrapped", None) is not None:
        model = model._reptune_wrapped
    training = [m for m in model.modules() if m.training] if isinstance(model, nn.Module) else []
    for module in training:
        module.training = False
    try:
        yield
    finally:
        for module in training:
            module.training = True


class _CallTracker:
    """Pre-hook on the decoder backbone that locates each forward call in its sequences."""

    def __init__(
        self, backbone: nn.Module, prompt_length: int | torch.Tensor | None, positions: Positions
    ):
        self.signature = inspect.signature(backbone.forward)
        self.prompt_length = prompt_length
        self.positions = positions
        self.last_prompt_end: torch.Tensor | int | None = None
        self.current: CallPositions | None = None

    def _arguments(self, args, kwargs) -> Mapping:
        """The call's arguments by name (read only). Keyword-only calls, as ``generate`` makes
        them, skip signature binding."""
        if not args:
            return kwargs
        try:
            bound = self.signature.bind_partial(*args, **kwargs).arguments
        except TypeError:
            bound = dict(kwargs)
        extra = bound.pop("kwargs", None)
        if isinstance(extra, Mapping):
            bound.update(extra)
        return bound

    def __call__(self, module, args, kwargs):
        bound = self._arguments(args, kwargs)
        ids = bound.get("input_ids")
        embeds = bound.get("inputs_embeds")
        ref = ids if ids is not None else embeds
        if ref is None:
            raise ValueError("forward call with neither input_ids nor inputs_embeds")
        batch, q = ref.shape[0], ref.shape[1]
        device = ref.device
        mask = bound.get("attention_mask")
        cache = bound.get("past_key_values")
        has_mask = isinstance(mask, torch.Tensor) and mask.dim() == 2
        # Raised here, before any decoder block runs, for calls made on the hooked model itself.
        check_call(self.positions, batch, has_mask)
        if has_mask:
            past = mask.shape[1] - q
            real = mask[:, past:].bool()
        else:
            past = int(cache.get_seq_length()) if hasattr(cache, "get_seq_length") else 0
            real = torch.ones(batch, q, dtype=torch.bool, device=device)
        end = self.prompt_length
        if isinstance(end, torch.Tensor):
            pass  # explicit per-row prompt ends
        elif end is not None or past == 0:
            limit = q if end is None else int(end)
            # Each row's prompt ends after its last real token: a right-padded row counts its
            # offsets from its own end, not from the padded width.
            end = self._prompt_ends(mask, limit, past, cache) if has_mask else limit
            if past == 0:
                self.last_prompt_end = end
        else:
            # The prompt ends travel with the KV cache, so a decode step run in another call (or
            # another context) still counts positions from the same prompt.
            end = getattr(cache, _PROMPT_END_ATTR, None)
            if end is None:
                end = self.last_prompt_end if self.last_prompt_end is not None else past
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
            all_real=None if has_mask else True,
        )

    @staticmethod
    def _prompt_ends(mask: torch.Tensor, limit: int, past: int, cache) -> torch.Tensor:
        """``prompt_ends(mask, limit)``, computed once per cache: the decode steps of one
        generation see the same prompt columns, so they reuse what their first call found."""
        memo = getattr(cache, _PROMPT_ENDS_MEMO_ATTR, None)
        if past >= limit and memo is not None and memo[0] == limit:
            return memo[1]
        end = prompt_ends(mask, limit)
        if cache is not None:
            try:
                setattr(cache, _PROMPT_ENDS_MEMO_ATTR, (limit, end))
            except AttributeError:  # a cache type that refuses new attributes
                pass
        return end


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
    positions = validate_positions(positions)
    backbone, layers = _backbone(model, layer_path)
    layer_ids = check_layers(list(interventions), len(layers))
    deepest = max(layer_ids)
    by_index = {(i + len(layers) if i < 0 else i): fn for i, fn in interventions.items()}
    tracker = _CallTracker(backbone, prompt_length, positions)
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
