"""Robustness to adversarial steering: steer several models against the behaviour, side by side.

The published test steers the tuned models with negative multiples of the very vector they were
tuned toward: a representation-tuned model should hold its behaviour where the untuned and the
token-tuned ones give way. Every model runs the same grid (layers x coefficients, plus ablation);
the rows gain a ``model`` column so one table and one plot compare them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from ...vectors import SteeringVectors
from ..ab.datasets import ABItem
from .sweep import SweepResult, steering_sweep

__all__ = ["negative_multiples", "robustness_sweep"]


def negative_multiples(coefficients: Sequence[float], include_zero: bool = True) -> list[float]:
    """``-|c|`` for each coefficient, deduplicated and sorted (0 kept as the baseline).

    Example:
        >>> negative_multiples([4, 8, -8])
        [-8.0, -4.0, 0.0]
    """
    values = {-abs(float(c)) for c in coefficients}
    values = values | {0.0} if include_zero else values - {0.0}
    return sorted(values)


def robustness_sweep(
    models: Mapping[str, object] | Sequence[tuple[str, Callable[[], object]]],
    tokenizer,
    vectors: SteeringVectors,
    items: Sequence[ABItem],
    layers: Sequence[int],
    coefficients: Sequence[float],
    *,
    negative: bool = True,
    **sweep_kwargs,
) -> SweepResult:
    """Run the same steering sweep on each model and merge the rows (column ``model``).

    ``models`` maps a name to a model, or is a list of ``(name, loader)`` pairs so only one model
    needs to be in memory at a time. With ``negative`` the grid is
    :func:`negative_multiples` of ``coefficients``. Other keywords go to
    :func:`~reptune.evaluation.studies.sweep.steering_sweep`.

    Example:
        >>> res = robustness_sweep({"base": base, "token-tuned": tok_model, "rep-tuned": rep},
        ...                        tok, vecs, items, layers=[14], coefficients=[4, 8, 16])
    """
    grid = negative_multiples(coefficients) if negative else [float(c) for c in coefficients]
    entries = list(models.items()) if isinstance(models, Mapping) else list(models)
    merged = SweepResult()
    for name, model in entries:
        if callable(model) and not hasattr(model, "config"):
            model = model()
        result = steering_sweep(
            model, tokenizer, vectors, items, layers, grid, extra={"model": name}, **sweep_kwargs
        )
        merged.rows.extend(result.rows)
        merged.results.update({(name, *key): value for key, value in result.results.items()})
        del model
    return merged
