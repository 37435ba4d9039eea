"""Choices a run makes on held-out or dev data only: which layers carry the behaviour, which
layers to tune, which steering coefficient to use, and how prompts split into dev and test.

Nothing here sees test data: callers pass dev prompts or held-out pairs, never the test split.

Example:
    >>> acc = heldout_separation(model, tok, vectors, heldout_pairs, position=-1)
    >>> rep_layers = layer_window(best_layer(acc), vectors.layers, 3)
    >>> dev, test = split_dev_test(prompts, dev_size=20)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch

from ..extract import read_activations
from ..hooks import Positions
from ..pairs import ContrastivePair
from ..vectors import SteeringVectors

__all__ = [
    "heldout_separation",
    "best_layer",
    "layer_window",
    "split_dev_test",
    "choose_best",
]


@torch.no_grad()
def heldout_separation(
    model,
    tokenizer,
    vectors: SteeringVectors,
    pairs: Sequence[ContrastivePair],
    position: Positions = -1,
    batch_size: int = 16,
) -> dict[int, float]:
    """Per layer, the share of held-out pairs whose positive text projects higher on the
    vector than its negative partner (pairs the vectors were not extracted from).

    Example:
        >>> heldout_separation(model, tok, vecs, test_pairs)[10]
        0.95
    """
    if not pairs:
        raise ValueError("heldout_separation needs at least one held-out pair")
    layers = vectors.layers
    gaps: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        texts = [p.positive for p in chunk] + [p.negative for p in chunk]
        acts = read_activations(model, tokenizer, texts, layers, position)
        for layer in layers:
            a = acts[layer]
            gaps[layer].append((a[: len(chunk)] - a[len(chunk) :]) @ vectors[layer].to(a))
    return {layer: float((torch.cat(g) > 0).float().mean()) for layer, g in gaps.items()}


def best_layer(accuracy: Mapping[int, float], tie_break: Mapping[int, float] | None = None) -> int:
    """The layer with the highest held-out separation; ties go to the higher ``tie_break``
    (e.g. the explained variance), then to the shallower layer.

    Example:
        >>> best_layer({4: 0.9, 8: 1.0, 12: 1.0})
        8
    """
    if not accuracy:
        raise ValueError("no layer accuracies to choose from")
    extra = tie_break or {}
    return min(accuracy, key=lambda k: (-accuracy[k], -extra.get(k, 0.0), k))


def layer_window(center: int, available: Sequence[int], size: int) -> list[int]:
    """``size`` consecutive layers around ``center``, shifted to stay inside ``available``;
    only layers that have a vector are returned.

    Example:
        >>> layer_window(10, range(30), 3)
        [9, 10, 11]
    """
    if size < 1:
        raise ValueError(f"the layer window needs size >= 1, got {size}")
    top = max(available)
    low = max(0, min(center - size // 2, top - size + 1))
    return [k for k in range(low, low + size) if k in set(available)]


def split_dev_test(units: Sequence, dev_size: int, test_size: int | None = None):
    """The first ``dev_size`` units for choices, the next ``test_size`` (default: the rest)
    for the report. A fixed order, so the split is the same on every run and machine. Sizes
    the units cannot fill are refused, never shrunk.

    Example:
        >>> dev, test = split_dev_test(prompts, dev_size=20, test_size=40)
    """
    if dev_size < 1:
        raise ValueError(f"dev_size must be >= 1, got {dev_size}")
    if test_size is not None and test_size < 1:
        raise ValueError(f"test_size must be >= 1, got {test_size}")
    if test_size is not None and dev_size + test_size > len(units):
        raise ValueError(
            f"dev_size={dev_size} + test_size={test_size} asks for {dev_size + test_size} units "
            f"but only {len(units)} exist: lower the sizes or add data (a smaller split would "
            "make the report quote fewer units than asked)"
        )
    test = (
        list(units[dev_size:])
        if test_size is None
        else list(units[dev_size : dev_size + test_size])
    )
    if not test:
        raise ValueError(
            f"only {len(units)} units: nothing is left for the test split after {dev_size} dev "
            "units (lower dev_size or add data)"
        )
    return list(units[:dev_size]), test


def choose_best(
    candidates: Sequence, score: Callable[[object], float], prefer: Callable[[object], float]
):
    """The candidate with the highest ``score``; ties go to the lowest ``prefer``.

    Example:
        >>> choose_best(rows, lambda r: r["harmonic"], lambda r: abs(r["coefficient"]))
    """
    if not candidates:
        raise ValueError("no candidates to choose from")
    return max(candidates, key=lambda c: (score(c), -prefer(c)))
