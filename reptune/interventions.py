"""The editing interventions of :func:`reptune.hooks.intervene`: add ``c * v``, project ``v`` out.

Each receives the block output ``(batch, q, hidden)``, the boolean mask of selected positions
``(batch, q)`` and the call's :class:`~reptune.positions.CallPositions` (or None), and returns the
edited output.

Example:
    >>> with intervene(model, {5: AddVector(v, 4.0), 7: AblateVector(v7)}):
    ...     model(**batch)
"""

from __future__ import annotations

from numbers import Number

import torch

__all__ = ["AddVector", "AblateVector"]


def _as_coefficient(coefficient, batch: int, device, dtype) -> torch.Tensor:
    """One coefficient per row ``(batch,)``, or ``(1,)`` for a single value (it broadcasts)."""
    coef = torch.as_tensor(coefficient, device=device, dtype=dtype).reshape(-1)
    if coef.numel() == 1:
        return coef
    if batch % coef.numel():
        raise ValueError(
            f"coefficient has {coef.numel()} values but the batch has {batch} rows: pass one "
            "value per row or a single float"
        )
    # generate() expands rows for num_return_sequences/beams; repeat each row's coefficient.
    return coef.repeat_interleave(batch // coef.numel())


def _unchanged_key(vector: torch.Tensor, coefficient) -> tuple | None:
    """What says that ``vector`` and ``coefficient`` are the ones a product was cached from
    (identity and in-place version); None when the product must not be cached (gradients,
    inference tensors, mutable sequences)."""
    if vector.requires_grad or vector.is_inference():
        return None
    if isinstance(coefficient, torch.Tensor):
        if coefficient.requires_grad or coefficient.is_inference():
            return None
        return (id(vector), vector._version, id(coefficient), coefficient._version)
    if type(coefficient) in (float, int) or isinstance(coefficient, Number):
        return (id(vector), vector._version, coefficient)
    return None


class AddVector:
    """Intervention adding ``coefficient * vector`` at the selected positions.

    ``coefficient`` is a float or a tensor with one value per batch row. The product
    ``coefficient * vector`` is computed once per batch size, device and dtype (again if the
    vector or coefficient tensor is changed in place, or always when either needs gradients).
    When a call selects every token (positions ``"all"``, no padding among the current tokens)
    the edit is a single add of that product, bit-identical to the masked add;
    ``fast_calls`` counts those calls.

    Example:
        >>> with intervene(model, {5: AddVector(v, 4.0)}, positions="all"):
        ...     model.generate(**batch)
    """

    #: Take the unmasked add when a call selects every token (off: always the masked add).
    fast_path = True

    def __init__(self, vector: torch.Tensor, coefficient: float | torch.Tensor = 1.0):
        self.vector = vector
        self.coefficient = coefficient
        self.fast_calls = 0
        self._deltas: dict = {}
        self._last: tuple | None = None  # the latest cached product and what it was made from

    def delta(self, batch: int, device, dtype) -> torch.Tensor:
        """``coefficient * vector`` as ``(rows, 1, hidden)``, rows being 1 or ``batch``."""
        vec, coef, last = self.vector, self.coefficient, self._last
        # The decode steps of one generate ask again and again for the product they used last:
        # identity and in-place versions say it is still valid, with no further work.
        if (
            last is not None
            and last[0] is vec
            and last[1] == vec._version
            and last[2] is coef
            and (last[3] is None or last[3] == coef._version)
            and last[4] == (batch, device, dtype)
        ):
            return last[5]
        versions = _unchanged_key(vec, coef)
        key = (batch, device, dtype)
        cached = self._deltas.get(key)
        if versions is None or cached is None or cached[0] != versions:
            delta = _as_coefficient(coef, batch, device, dtype).view(-1, 1, 1) * vec.to(
                device, dtype
            )
            if versions is None:
                self._last = None
                return delta
            cached = self._deltas[key] = (versions, delta)
        coef_version = coef._version if isinstance(coef, torch.Tensor) else None
        self._last = (vec, vec._version, coef, coef_version, key, cached[1])
        return cached[1]

    def __call__(self, hidden, mask, call):
        delta = self.delta(hidden.shape[0], hidden.device, hidden.dtype)
        if self.fast_path and call is not None and call.selects_every_token(mask):
            self.fast_calls += 1
            return hidden + delta
        return hidden + mask.unsqueeze(-1).to(hidden.dtype) * delta


class AblateVector:
    """Intervention projecting the direction out: ``h - (h . v / |v|^2) v`` at selected positions.

    Example:
        >>> with intervene(model, {5: AblateVector(v)}):
        ...     model(**batch)
    """

    def __init__(self, vector: torch.Tensor):
        norm = float(vector.detach().float().norm())
        if not norm > 0 or norm == float("inf"):
            # A zero direction would divide by zero and turn every ablated position into NaN.
            raise ValueError(
                f"cannot ablate a vector of norm {norm}: it has no direction to project out; "
                "re-extract it or leave that layer out"
            )
        self.vector = vector

    def __call__(self, hidden, mask, call):
        unit = self.vector.to(hidden.device, torch.float32)
        unit = unit / unit.norm()
        h32 = hidden.float()
        projected = h32 - (h32 @ unit).unsqueeze(-1) * unit
        return torch.where(mask.unsqueeze(-1), projected.to(hidden.dtype), hidden)
