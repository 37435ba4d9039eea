"""SteeredModel: a model that adds (or projects out) ``c * v`` at chosen layers while it runs."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch

from .hooks import AblateVector, AddVector, Positions, intervene, validate_positions
from .vectors import DEFAULT_COEFFICIENT_UNIT, SteeringVectors

__all__ = ["SteeredModel", "MODES"]

MODES = ("add", "ablate")


def _batch_size(args, kwargs) -> int | None:
    for key in ("input_ids", "inputs_embeds"):
        value = kwargs.get(key)
        if isinstance(value, torch.Tensor):
            return value.shape[0]
    if args and isinstance(args[0], torch.Tensor):
        return args[0].shape[0]
    return None


def _check_coefficient(coefficient, batch: int | None) -> None:
    coef = torch.as_tensor(coefficient)
    if not torch.isfinite(coef).all():
        raise ValueError("coefficient contains NaN or inf")
    if coef.dim() > 1:
        raise ValueError(f"coefficient must be a float or 1-D tensor, not {tuple(coef.shape)}")
    n = coef.numel()
    if batch is not None and n not in (1, batch):
        raise ValueError(
            f"coefficient has {n} values but the batch has {batch} rows: pass one value per row "
            "or a single float"
        )


class SteeredModel:
    """Wrap ``model`` so every forward and ``generate`` call is steered.

    ``mode="add"`` adds ``coefficient * vectors.direction(layer, coefficient_unit)`` at ``layers``
    and ``positions`` (hook position language: ``"all"``, ``"prompt"``, ``"generated"``,
    offsets, a mask); ``mode="ablate"`` projects the direction out. The coefficient is a
    fraction of the layer's median residual norm by default (``coefficient_unit=
    "residual_norm"``, the unit of every reptune API, command and report); ``"raw"`` takes
    multiples of the stored vector. ``coefficient`` may be a tensor with one value per batch
    row, so a whole coefficient sweep runs in one batch. Attribute access falls through to the
    wrapped model (``config``, ``device``, ``generation_config``, ``name_or_path``...), so
    tools such as lm-eval's ``HFLM`` accept it. As a context manager it steers the wrapped
    model itself for the duration of the block; leaving it restores the model exactly.

    Example:
        >>> steered = SteeredModel(model, vectors, layers=[14], coefficient=0.2)
        >>> out = steered.generate(**batch, max_new_tokens=30)
        >>> sweep = steered.generate(**batch8, coefficient=torch.linspace(-0.3, 0.3, 8))
        >>> with SteeredModel(model, vectors, layers=[14], mode="ablate"):
        ...     model(**batch)  # the plain model, steered inside the block
    """

    def __init__(
        self,
        model,
        vectors: SteeringVectors | dict[int, torch.Tensor],
        layers: Sequence[int] | int | None = None,
        coefficient: float | torch.Tensor = 1.0,
        mode: str = "add",
        positions: Positions = "all",
        layer_path: str | None = None,
        coefficient_unit: str = DEFAULT_COEFFICIENT_UNIT,
    ):
        if not isinstance(vectors, SteeringVectors):
            vectors = SteeringVectors(dict(vectors))
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}: use one of {MODES}")
        validate_positions(positions)
        vectors.check_compatible(model)
        layers = vectors.layers if layers is None else layers
        layers = [layers] if isinstance(layers, int) else list(layers)
        vectors = vectors.select(layers)
        if mode == "add":
            vectors.check_unit(coefficient_unit, layers)
        _check_coefficient(coefficient, None)
        self.model = model
        self.vectors = vectors
        self.layers = layers
        self.coefficient = coefficient
        self.mode = mode
        self.positions = positions
        self.layer_path = layer_path
        self.coefficient_unit = coefficient_unit
        self._active: list = []

    @property
    def _reptune_wrapped(self):
        return self.model

    def __getattr__(self, name):
        # Only called for attributes not found on the wrapper: fall through to the model.
        if name == "model":
            raise AttributeError(name)
        return getattr(self.model, name)

    def __repr__(self) -> str:
        return (
            f"SteeredModel({type(self.model).__name__}, layers={self.layers}, mode={self.mode!r}, "
            f"coefficient={self.coefficient!r}, coefficient_unit={self.coefficient_unit!r}, "
            f"positions={self.positions!r})"
        )

    def interventions(self, coefficient=None) -> dict:
        """The ``{layer: intervention}`` map for :func:`reptune.hooks.intervene`."""
        coef = self.coefficient if coefficient is None else coefficient
        if self.mode == "ablate":
            return {layer: AblateVector(self.vectors[layer]) for layer in self.layers}
        return {
            layer: AddVector(self.vectors.direction(layer, self.coefficient_unit), coef)
            for layer in self.layers
        }

    @contextmanager
    def steering(self, coefficient=None, prompt_length=None) -> Iterator:
        """Steer the wrapped model inside the block (hooks removed on exit, also on error).

        Example:
            >>> with steered.steering(coefficient=-4.0):
            ...     model.generate(**batch)
        """
        if coefficient is not None:
            _check_coefficient(coefficient, None)
        with intervene(
            self.model,
            self.interventions(coefficient),
            self.positions,
            layer_path=self.layer_path,
            prompt_length=prompt_length,
        ) as tracker:
            yield tracker

    def __enter__(self) -> SteeredModel:
        ctx = self.steering()
        self._active.append((ctx, ctx.__enter__()))
        return self

    def __exit__(self, *exc) -> None:
        ctx, _ = self._active.pop()
        ctx.__exit__(*exc)

    def _run(self, fn, args, kwargs, coefficient, prompt_length):
        _check_coefficient(
            self.coefficient if coefficient is None else coefficient, _batch_size(args, kwargs)
        )
        if self._active:
            if coefficient is not None:
                raise ValueError("cannot override the coefficient inside `with steered:`")
            tracker = self._active[-1][1]
            saved, tracker.prompt_length = tracker.prompt_length, prompt_length
            try:
                return fn(*args, **kwargs)
            finally:
                tracker.prompt_length = saved
        with self.steering(coefficient, prompt_length):
            return fn(*args, **kwargs)

    def __call__(self, *args, coefficient=None, **kwargs):
        """Steered forward pass; ``coefficient`` overrides the default for this call."""
        return self._run(self.model, args, kwargs, coefficient, None)

    forward = __call__

    def generate(self, *args, coefficient=None, **kwargs):
        """Steered ``generate``; the input is the prompt, later tokens count as generated.

        Example:
            >>> steered.generate(**batch, max_new_tokens=20, do_sample=False)
        """
        prompt = kwargs.get("input_ids", kwargs.get("inputs_embeds"))
        if prompt is None and args:
            prompt = args[0]
        prompt_length = prompt.shape[1] if isinstance(prompt, torch.Tensor) else None
        # Compiled generation would bypass the Python hooks.
        kwargs.setdefault("disable_compile", True)
        return self._run(self.model.generate, args, kwargs, coefficient, prompt_length)
