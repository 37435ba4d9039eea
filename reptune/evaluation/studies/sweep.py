"""Steering sweeps: layers x coefficients (and the ablation condition), batched per layer.

For each layer the rows ``condition x coefficient x item`` are scored in shared batches, each row
carrying its own coefficient (per-row coefficients of :class:`~reptune.steering.SteeredModel`).
The result is one table row per (layer, mode, coefficient, condition) with the rates of
:class:`~reptune.evaluation.ab.scoring.ABResult`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from ...hooks import Positions
from ...steering import SteeredModel
from ...vectors import DEFAULT_COEFFICIENT_UNIT, SteeringVectors
from ..ab.datasets import ABItem
from ..ab.scoring import CONDITIONS, ABResult, ItemResult, score_items, summarize

__all__ = ["SweepResult", "check_sweep", "resolve_conditions", "steering_sweep"]


def resolve_conditions(
    conditions: Sequence[str] | Mapping[str, str | None] | None,
    known: Mapping[str, str | None] = CONDITIONS,
) -> dict[str, str | None]:
    """Condition name -> system prompt: a mapping is taken as it is, names are looked up in
    ``known`` (default :data:`~reptune.evaluation.ab.scoring.CONDITIONS`, i.e. ``"none"``).

    Example:
        >>> resolve_conditions({"custom": "Answer briefly."})
        >>> resolve_conditions(["honest"], known=HONESTY_CONDITIONS)
    """
    if conditions is None:
        return {"none": None}
    if isinstance(conditions, Mapping):
        return dict(conditions)
    if isinstance(conditions, str):
        conditions = [conditions]
    unknown = [c for c in conditions if c not in known]
    if unknown:
        raise ValueError(f"unknown conditions {unknown}: use {sorted(known)} or a mapping")
    return {c: known[c] for c in conditions}


@dataclass
class SweepResult:
    """Sweep rows plus the underlying :class:`ABResult` of each cell.

    ``rows`` are flat dicts (``layer``, ``mode``, ``coefficient``, ``condition``, rates...) ready
    for CSV/JSON; ``results`` maps ``(layer, mode, coefficient, condition)`` to the full result.

    Example:
        >>> res = steering_sweep(model, tok, vecs, items, layers=[12], coefficients=[-4, 0, 4])
        >>> res.rows[0]["target_rate"]
    """

    rows: list[dict] = field(default_factory=list)
    results: dict[tuple, ABResult] = field(default_factory=dict, repr=False)

    def add(self, key: tuple, result: ABResult, extra: Mapping | None = None) -> None:
        layer, mode, coefficient, condition = key
        row = {"layer": layer, "mode": mode, "coefficient": coefficient}
        row.update(extra or {})
        row.update(result.row())
        row["condition"] = condition
        self.rows.append(row)
        self.results[key] = result


def check_sweep(
    vectors: SteeringVectors,
    layers: Sequence[int],
    coefficients: Sequence[float],
    ablate: bool = False,
    coefficient_unit: str = DEFAULT_COEFFICIENT_UNIT,
) -> list[float]:
    """Raise for a layer or coefficient the sweep cannot use; return the coefficients as floats.

    Example:
        >>> check_sweep(vecs, [12, 14], [-0.1, 0.0, 0.1])
        [-0.1, 0.0, 0.1]
    """
    chosen = vectors.select(layers)
    values = []
    for c in coefficients:
        try:
            value = float(c) if not isinstance(c, (bool, str, bytes)) else math.nan
        except (TypeError, ValueError):
            value = math.nan
        if not math.isfinite(value):
            raise ValueError(f"coefficients must be finite numbers, got {c!r}")
        values.append(value)
    if values:
        chosen.check_unit(coefficient_unit, layers)
    zero = [layer for layer in chosen.layers if not float(chosen[layer].norm()) > 0]
    if zero and (ablate or values):
        raise ValueError(f"the vector of layers {zero} is zero: it has no direction to steer with")
    return values


def _cells(items, conditions, coefficients):
    """Flatten (condition, coefficient, item) into per-row systems, coefficients and keys."""
    systems, coefs, keys = [], [], []
    for name, system in conditions.items():
        for coef in coefficients:
            systems.extend([system] * len(items))
            coefs.extend([coef] * len(items))
            keys.extend([(name, coef)] * len(items))
    return systems, coefs, keys


def _group(records: Sequence[ItemResult], keys, n_items: int) -> dict[tuple, list[ItemResult]]:
    groups: dict[tuple, list[ItemResult]] = {}
    for i, (record, key) in enumerate(zip(records, keys)):
        record.index = i % n_items  # index within the item list, not within the flat batch
        groups.setdefault(key, []).append(record)
    return groups


def steering_sweep(
    model,
    tokenizer,
    vectors: SteeringVectors,
    items: Sequence[ABItem],
    layers: Sequence[int],
    coefficients: Sequence[float],
    *,
    ablate: bool = False,
    scorer: str = "letter",
    conditions: Sequence[str] | Mapping[str, str | None] | None = None,
    positions: Positions = "all",
    coefficient_unit: str = DEFAULT_COEFFICIENT_UNIT,
    answer_prefix: str | None = None,
    batch_size: int = 16,
    max_new_tokens: int = 30,
    extra: Mapping | None = None,
    progress: bool = True,
) -> SweepResult:
    """Score ``items`` steered at each layer with each coefficient (plus ablation if asked).

    ``coefficients`` are in ``coefficient_unit`` (default: fractions of each layer's median
    residual norm, see :class:`~reptune.steering.SteeredModel`); include 0 for the unsteered
    baseline. Every row records the unit. ``extra`` adds fixed columns
    to every row (e.g. ``{"model": "rep-tuned"}``).

    Example:
        >>> res = steering_sweep(model, tok, vecs, items, [10, 14], [-0.2, -0.1, 0, 0.1, 0.2],
        ...                      ablate=True, conditions=HONESTY_CONDITIONS)
    """
    if not layers or not (coefficients or ablate):
        raise ValueError("a sweep needs at least one layer and one coefficient (or ablate=True)")
    if not items:
        raise ValueError("no items to evaluate")
    conditions = resolve_conditions(conditions)
    # Every layer is checked before the first one runs (a bad one would fail half-way).
    coefficients = check_sweep(vectors, layers, coefficients, ablate, coefficient_unit)
    extra = {**(extra or {}), "coefficient_unit": coefficient_unit}
    result = SweepResult()
    n = len(items)
    bar = tqdm(total=len(layers) * (1 + ablate), desc="sweep", disable=not progress)
    for layer in layers:
        if coefficients:
            steered = SteeredModel(
                model,
                vectors,
                layers=[layer],
                positions=positions,
                coefficient_unit=coefficient_unit,
            )
            systems, coefs, keys = _cells(items, conditions, coefficients)
            records = score_items(
                steered,
                tokenizer,
                list(items) * (len(keys) // n),
                scorer,
                systems=systems,
                coefficients=torch.tensor(coefs, dtype=torch.float32),
                answer_prefix=answer_prefix,
                batch_size=batch_size,
                max_new_tokens=max_new_tokens,
                progress=progress,
            )
            for (name, coef), group in _group(records, keys, n).items():
                result.add((layer, "add", float(coef), name), summarize(group, scorer, name), extra)
            bar.update()
        if ablate:
            steered = SteeredModel(
                model, vectors, layers=[layer], mode="ablate", positions=positions
            )
            systems, _, keys = _cells(items, conditions, [None])
            records = score_items(
                steered,
                tokenizer,
                list(items) * len(conditions),
                scorer,
                systems=systems,
                answer_prefix=answer_prefix,
                batch_size=batch_size,
                max_new_tokens=max_new_tokens,
                progress=progress,
            )
            for (name, _), group in _group(records, keys, n).items():
                result.add((layer, "ablate", None, name), summarize(group, scorer, name), extra)
            bar.update()
    bar.close()
    return result
