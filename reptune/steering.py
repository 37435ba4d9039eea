"""SteeredModel: a model that adds (or projects out) ``c * v`` at chosen layers while it runs."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import torch

from .hooks import AblateVector, AddVector, Positions, eval_mode, intervene, validate_positions
from .layers import check_layers, num_layers
from .positions import check_call
from .tokenization import check_fits_context
from .vectors import DEFAULT_COEFFICIENT_UNIT, SteeringVectors

__all__ = ["SteeredModel", "MODES"]

MODES = ("add", "ablate")


def _call_inputs(args, kwargs) -> tuple[torch.Tensor | None, torch.Tensor | None, int]:
    """The call's token tensor (ids or embeddings), its 2-D attention mask and cache length."""
    ref = None
    for key in ("input_ids", "inputs_embeds", "inputs"):
        if isinstance(kwargs.get(key), torch.Tensor):
            ref = kwargs[key]
            break
    if ref is None and args and isinstance(args[0], torch.Tensor):
        ref = args[0]
    mask = kwargs.get("attention_mask")
    mask = mask if isinstance(mask, torch.Tensor) and mask.dim() == 2 else None
    cache = kwargs.get("past_key_values")
    past = int(cache.get_seq_length()) if hasattr(cache, "get_seq_length") else 0
    return ref, mask, past


def _check_coefficient(coefficient, batch: int | None) -> None:
    """Raise (before any forward pass) unless ``coefficient`` is a finite float or one per row."""
    kind = type(coefficient).__name__
    if isinstance(coefficient, (bool, str, bytes)) or coefficient is None:
        raise TypeError(
            f"coefficient must be a number or a 1-D tensor of numbers, got {kind} {coefficient!r}"
        )
    if isinstance(coefficient, torch.Tensor) and (
        coefficient.dtype == torch.bool or coefficient.is_complex()
    ):
        raise TypeError(f"coefficient must hold real numbers, got a {coefficient.dtype} tensor")
    try:
        coef = torch.as_tensor(coefficient, dtype=torch.float32)
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(
            f"coefficient must be a number or a 1-D tensor of numbers, got {kind} {coefficient!r}"
        ) from err
    if coef.dim() > 1:
        raise ValueError(f"coefficient must be a float or 1-D tensor, not {tuple(coef.shape)}")
    if coef.numel() == 0:
        raise ValueError("coefficient is empty: pass a float or one value per batch row")
    if not torch.isfinite(coef).all():
        raise ValueError("coefficient contains NaN or inf")
    n = coef.numel()
    if batch is not None and n not in (1, batch):
        raise ValueError(
            f"coefficient has {n} values but the batch has {batch} rows: pass one value per row "
            "or a single float"
        )


def _vectors_for(model, vectors, layer_path) -> SteeringVectors:
    """``vectors`` as SteeringVectors; negative layer keys of a dict count from the end."""
    if isinstance(vectors, SteeringVectors):
        return vectors
    if not isinstance(vectors, Mapping):
        raise TypeError(
            f"vectors must be SteeringVectors or a {{layer: tensor}} dict, got "
            f"{type(vectors).__name__}"
        )
    n = num_layers(model, layer_path)
    resolved = {}
    for layer, vec in vectors.items():
        negative = isinstance(layer, int) and not isinstance(layer, bool) and layer < 0
        idx = check_layers([layer], n)[0] if negative else layer
        if idx in resolved:
            raise ValueError(f"layers {layer} and {idx} name the same decoder block")
        resolved[idx] = vec
    return SteeringVectors(resolved)


def _new_tokens(model, kwargs, width: int) -> int:
    """How many tokens ``generate`` may add, from its arguments or generation config."""
    config = kwargs.get("generation_config") or getattr(model, "generation_config", None)
    for source in (kwargs, vars(config) if config is not None else {}):
        if source.get("max_new_tokens") is not None:
            return int(source["max_new_tokens"])
        if source.get("max_length") is not None:
            return max(int(source["max_length"]) - width, 0)
    return 0


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

    Steering is inference: every call (and the ``with`` block) runs the model in eval mode and
    gives each module its mode back afterwards, also on error, so dropout never makes two runs
    disagree. Everything a call can get wrong (coefficient shape, position mask shape, offsets
    without an attention mask, input or generation past the context) is refused before the
    model runs. Negative layers count from the end. Vectors recorded for another model type or
    depth are refused (:meth:`~reptune.vectors.SteeringVectors.check_compatible`) unless
    ``allow_mismatch=True``.

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
        allow_mismatch: bool = False,
    ):
        if not isinstance(model, torch.nn.Module):
            raise TypeError(
                f"model must be a torch.nn.Module (a transformers model), got "
                f"{type(model).__name__}"
            )
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}: use one of {MODES}")
        positions = validate_positions(positions)
        vectors = _vectors_for(model, vectors, layer_path)
        vectors.check_compatible(model, allow_mismatch=allow_mismatch)
        # Negative layers count from the end, as in extraction and training.
        n_layers = num_layers(model, layer_path)
        layers = check_layers(vectors.layers if layers is None else layers, n_layers)
        vectors = vectors.select(layers)
        if mode == "add":
            vectors.check_unit(coefficient_unit, layers)
        zero = [layer for layer in layers if not float(vectors[layer].norm()) > 0]
        if zero:
            raise ValueError(
                f"the vector of layers {zero} is zero: it has no direction to {mode}; "
                "re-extract it or leave those layers out"
            )
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
        with (
            eval_mode(self.model),
            intervene(
                self.model,
                self.interventions(coefficient),
                self.positions,
                layer_path=self.layer_path,
                prompt_length=prompt_length,
            ) as tracker,
        ):
            yield tracker

    def __enter__(self) -> SteeredModel:
        ctx = self.steering()
        self._active.append((ctx, ctx.__enter__()))
        return self

    def __exit__(self, *exc) -> None:
        ctx, _ = self._active.pop()
        ctx.__exit__(*exc)

    def _check_call(self, args, kwargs, coefficient, new_tokens: int | None) -> None:
        """Everything a forward or generate call can get wrong, raised before it runs."""
        ref, mask, past = _call_inputs(args, kwargs)
        coefficient = self.coefficient if coefficient is None else coefficient
        if ref is None:
            _check_coefficient(coefficient, None)
            return
        batch, width = ref.shape[0], past + ref.shape[1]
        if mask is not None:
            width = mask.shape[1]
            if mask.shape[0] != batch:
                raise ValueError(
                    f"attention_mask has {mask.shape[0]} rows but the input has {batch}"
                )
        _check_coefficient(coefficient, batch)
        # A forward call's position mask must cover exactly its columns; generate's may cover
        # the prompt only (later columns are then not selected).
        check_call(
            self.positions,
            batch,
            mask is not None,
            width=width if new_tokens is None and past == 0 else None,
        )
        if new_tokens is None:
            check_fits_context(self.model, width, f"this call's input of {width} tokens")
        else:
            check_fits_context(
                self.model,
                width + new_tokens,
                f"the prompt ({width} tokens) plus {new_tokens} new tokens",
            )

    def _run(self, fn, args, kwargs, coefficient, prompt_length, new_tokens=None):
        self._check_call(args, kwargs, coefficient, new_tokens)
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

        Raises before generating when the prompt plus ``max_new_tokens`` exceeds the model's
        context.

        Example:
            >>> steered.generate(**batch, max_new_tokens=20, do_sample=False)
        """
        prompt, _, _ = _call_inputs(args, kwargs)
        prompt_length = prompt.shape[1] if prompt is not None else None
        new_tokens = _new_tokens(self.model, kwargs, prompt_length or 0)
        # Compiled generation would bypass the Python hooks.
        kwargs.setdefault("disable_compile", True)
        return self._run(self.model.generate, args, kwargs, coefficient, prompt_length, new_tokens)
