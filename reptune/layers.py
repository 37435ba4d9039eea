"""Find the decoder blocks of a causal language model.

Layer index ``i`` always means the *output* of decoder block ``i`` (0-based): the residual stream
after that block. Reading, steering and training at layer ``i`` all act on that tensor. It equals
``output_hidden_states[i + 1]`` except for the last block, whose entry there has the final norm
applied.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = [
    "find_layers",
    "unwrap_model",
    "num_layers",
    "check_layers",
    "hidden_size",
    "model_device",
    "LAYER_PATHS",
]

# Attribute paths of the decoder-block list, tried in order. Most architectures (Llama, Mistral,
# Qwen2/3, Gemma2/3, Phi3) keep them at ``model.layers``; GPT-2 and GPT-NeoX use their own names.
LAYER_PATHS: tuple[str, ...] = (
    "model.layers",
    "model.language_model.layers",
    "language_model.model.layers",
    "transformer.h",
    "gpt_neox.layers",
    "model.decoder.layers",
    "layers",
    "h",
)


def unwrap_model(model: nn.Module) -> nn.Module:
    """Strip PEFT, accelerate/DDP/FSDP and ``torch.compile`` wrappers down to the HF model.

    Example:
        >>> base = unwrap_model(peft_model)  # the LlamaForCausalLM inside
    """
    seen = set()
    while id(model) not in seen:
        seen.add(id(model))
        wrapped = getattr(model, "_reptune_wrapped", None)  # SteeredModel
        if wrapped is not None:
            model = wrapped
        elif hasattr(model, "_orig_mod"):  # torch.compile
            model = model._orig_mod
        elif hasattr(model, "get_base_model") and callable(model.get_base_model):  # PEFT
            model = model.get_base_model()
        elif isinstance(model, nn.parallel.DistributedDataParallel) or (
            hasattr(model, "module") and isinstance(model.module, nn.Module)
        ):
            model = model.module
        elif (
            hasattr(model, "base_model")
            and hasattr(model.base_model, "model")
            and (type(model).__name__.startswith("Peft"))
        ):
            model = model.base_model.model
    return model


def _get_path(root: nn.Module, path: str):
    obj = root
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def find_layers(model: nn.Module, layer_path: str | None = None) -> nn.ModuleList:
    """Return the list of decoder blocks of ``model``.

    Works for Llama, Mistral, Qwen2, Qwen3, Gemma2, Gemma3, Phi3, GPT-2 and GPT-NeoX models, also
    when wrapped by PEFT or accelerate. For other models pass ``layer_path``, the attribute path
    of the block list (e.g. ``"model.decoder.layers"``).

    Example:
        >>> layers = find_layers(model)
        >>> len(layers)  # number of decoder blocks
        30
    """
    inner = unwrap_model(model)
    paths = (layer_path,) if layer_path else LAYER_PATHS
    for path in paths:
        found = _get_path(inner, path)
        if isinstance(found, nn.ModuleList) and len(found) > 0:
            return found
    if layer_path:
        raise ValueError(
            f"layer_path={layer_path!r} does not name a non-empty nn.ModuleList on "
            f"{type(inner).__name__}. Pass the attribute path of its decoder-block list."
        )
    raise ValueError(
        f"Cannot find the decoder blocks of {type(inner).__name__}: none of {list(LAYER_PATHS)} "
        "is a ModuleList. Pass layer_path='<attribute.path.to.blocks>' (for example "
        "'model.decoder.layers')."
    )


def num_layers(model: nn.Module, layer_path: str | None = None) -> int:
    """Number of decoder blocks of ``model``."""
    return len(find_layers(model, layer_path))


def check_layers(layers, n_layers: int, name: str = "layers") -> list[int]:
    """Validate layer indices (negative ones count from the end) and return them sorted.

    ``name`` is the argument the indices came from, for the error message.

    Example:
        >>> check_layers([-1, 2], 4)
        [2, 3]
    """
    if isinstance(layers, int) and not isinstance(layers, bool):
        layers = [layers]
    if isinstance(layers, (str, bytes, bool, float)) or not hasattr(layers, "__iter__"):
        raise TypeError(
            f"{name} must be an int or a list of ints, got {type(layers).__name__} {layers!r:.40}"
        )
    out = []
    for layer in layers:
        if not isinstance(layer, int) or isinstance(layer, bool):
            raise TypeError(f"layer indices must be ints, got {layer!r} in {name}")
        idx = layer + n_layers if layer < 0 else layer
        if not 0 <= idx < n_layers:
            raise ValueError(
                f"layer {layer} is out of range: the model has {n_layers} decoder blocks "
                f"(valid indices 0..{n_layers - 1}, or negative from the end)."
            )
        out.append(idx)
    if not out:
        raise ValueError("no layers given: pass at least one layer index")
    return sorted(set(out))


def hidden_size(model: nn.Module) -> int:
    """Width of the residual stream."""
    config = unwrap_model(model).config
    config = getattr(config, "get_text_config", lambda: config)()
    for name in ("hidden_size", "n_embd", "d_model"):
        if getattr(config, name, None):
            return int(getattr(config, name))
    raise ValueError(f"cannot read the hidden size from {type(config).__name__}")


def model_device(model: nn.Module) -> torch.device:
    return next(unwrap_model(model).parameters()).device
