"""Which parameters train and at which learning rate.

- :func:`freeze_except_layers`: selected-layer full fine-tuning (the published layers 11-17);
- :func:`parameter_groups`: per-group learning rates (``param_lrs``, first match wins).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from torch import nn

from ..layers import check_layers, find_layers

__all__ = ["freeze_except_layers", "parameter_groups"]


def freeze_except_layers(
    model: nn.Module,
    layers,
    modules=None,
    layer_path: str | None = None,
) -> list[str]:
    """Freeze every parameter except those of decoder blocks ``layers`` (full fine-tuning).

    ``modules``: regexes on the parameter names inside those blocks that stay trainable (default:
    all). Returns the names of the trainable parameters.

    Example:
        >>> names = freeze_except_layers(model, range(11, 18))  # the published layers 11-17
        >>> names = freeze_except_layers(model, [3], modules=[r"self_attn\\.(v|o)_proj"])
    """
    blocks = find_layers(model, layer_path)
    layers = check_layers(list(layers), len(blocks))
    patterns = [re.compile(m) for m in (modules or [])]
    keep = set()
    for idx in layers:
        for name, param in blocks[idx].named_parameters():
            if not patterns or any(p.search(name) for p in patterns):
                keep.add(id(param))
    if not keep:
        raise ValueError(f"no parameter of layers {layers} matches train_modules={modules}")
    names = []
    for name, param in model.named_parameters():
        param.requires_grad_(id(param) in keep)
        if id(param) in keep:
            names.append(name)
    return names


def parameter_groups(
    model: nn.Module,
    param_lrs: Sequence[tuple[str, float]],
    learning_rate: float,
    weight_decay: float,
    decay_names: set[str],
) -> list[dict]:
    """Optimizer groups: each trainable parameter at the rate of the first matching pattern.

    Example:
        >>> groups = parameter_groups(model, [(r"v_proj", 1e-5)], 1e-6, 0.1, decay_names)
    """
    groups: dict[tuple[float, float], list] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        lr = next((v for pattern, v in param_lrs if re.search(pattern, name)), learning_rate)
        wd = weight_decay if name in decay_names else 0.0
        groups.setdefault((lr, wd), []).append(param)
    return [{"params": ps, "lr": lr, "weight_decay": wd} for (lr, wd), ps in groups.items()]
