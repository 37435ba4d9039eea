"""The frozen reference pass: the original model's activations, optionally steered.

One no-grad forward pass per training batch feeds both the retain term (stay near the original
activations) and the steer objective (match ``h_ref + c * v``, what the steered model computes).
The original model is the PEFT model with its adapter disabled, a frozen ``ref_model``, or a
frozen copy of the model (selected-layer fine-tuning). The pass stops after the deepest layer it
records (no later blocks, no LM head).

Example:
    >>> ref = ReferencePass(model, record=[10], steer={10: 0.2 * vecs.direction(10)})
    >>> targets = ref(model, batch, rep_mask)  # {10: (batch, seq, hidden)}
"""

from __future__ import annotations

import copy
import logging
from contextlib import nullcontext

import torch
from torch import nn

from ..hooks import AddVector, Recorder, StopForward, intervene
from ..layers import unwrap_model

__all__ = ["ReferencePass", "is_peft_model"]

logger = logging.getLogger(__name__)

_FEED = ("input_ids", "attention_mask", "position_ids")


def is_peft_model(model) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a dependency
        return False
    return isinstance(model, PeftModel)


def _peft_inside(model):
    """The PEFT model inside DDP/accelerate wrappers (``.module``), to disable its adapter."""
    while not is_peft_model(model) and isinstance(getattr(model, "module", None), nn.Module):
        model = model.module
    return model


def _steer_then_record(rec: Recorder, layer: int, add: AddVector | None):
    record = rec.bind(layer)

    def intervention(hidden, mask, call):
        new = add(hidden, mask, call) if add is not None else None
        record(hidden if new is None else new, mask, call)
        return new

    return intervention


class ReferencePass:
    """Record the original model's block outputs at ``record`` layers, with ``steer`` (``{layer:
    vector}``) added at the selected positions first.

    The added vector already includes the coefficient (``c * vectors.direction(layer, unit)``).
    Layers deeper than a steered layer see the steered stream, as in the steered model.
    """

    def __init__(
        self,
        model: nn.Module,
        record,
        steer: dict[int, torch.Tensor] | None = None,
        *,
        ref_model: nn.Module | None = None,
        accelerator=None,
        layer_path: str | None = None,
        stop_early: bool = True,
        device=None,
    ):
        self.record = sorted(set(record))
        self.steer = {k: v.detach().float().cpu() for k, v in (steer or {}).items()}
        self.layer_path = layer_path
        self.stop_early = stop_early
        self.from_adapter = is_peft_model(_peft_inside(model))
        self.ref_model = None
        if not self.from_adapter:
            if ref_model is None and any(
                hasattr(p, "ds_numel") or p.is_meta for p in model.parameters()
            ):
                raise ValueError(
                    "reference activations of a model without adapters that is loaded "
                    "partitioned (ZeRO-3) or on the meta device (FSDP's cpu_ram_efficient_loading):"
                    " a copy of it holds no weights. Pass ref_model= (ZeRO-3: loaded the same "
                    "way), or load the model whole"
                )
            if ref_model is None:
                logger.warning(
                    "reference activations of a model without adapters: keeping a frozen copy "
                    "of the whole model (twice the memory); pass ref_model= to choose"
                )
                ref_model = copy.deepcopy(unwrap_model(model))
            self.ref_model = ref_model.eval().requires_grad_(False)
            if accelerator is not None:
                # A DeepSpeed inference engine places the reference on the device and, under
                # ZeRO-3, gathers its partitioned weights at forward time (as trl does).
                from trl.models.utils import prepare_deepspeed

                self.ref_model = prepare_deepspeed(self.ref_model, accelerator)
            elif device is not None:
                self.ref_model.to(device)

    @torch.no_grad()
    def __call__(self, model, inputs, positions) -> dict[int, torch.Tensor]:
        """``{layer: (batch, seq, hidden)}`` for one batch; ``positions`` selects where the
        steering is added (a boolean mask or a position spec)."""
        feed = {k: inputs[k] for k in _FEED if k in inputs}
        rec = Recorder(detach=True)
        if self.from_adapter:
            target, context = model, _peft_inside(model).disable_adapter()
        else:
            target, context = self.ref_model, nullcontext()
        adds = {layer: AddVector(vec, 1.0) for layer, vec in self.steer.items()}
        layers = sorted(set(self.record) | set(adds))
        fns = {layer: _steer_then_record(rec, layer, adds.get(layer)) for layer in layers}
        with (
            context,
            intervene(
                target,
                fns,
                positions,
                layer_path=self.layer_path,
                stop_after_last=self.stop_early,
            ),
        ):
            try:
                target(**feed, use_cache=False)
            except StopForward:
                pass
        return {layer: rec.hidden(layer) for layer in self.record}
