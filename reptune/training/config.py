"""RepTuneConfig: the training arguments of representation tuning (trl's config style)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from transformers import TrainingArguments

from ..vectors import COEFFICIENT_UNITS, DEFAULT_COEFFICIENT_UNIT, check_coefficient_unit
from .collator import parse_positions
from .losses import TARGETS
from .precision import check_precision

__all__ = ["RepTuneConfig", "REP_FIELDS", "parse_param_lrs"]

#: The reptune-specific fields, saved as ``reptune_config.json`` next to every checkpoint.
REP_FIELDS = (
    "vectors",
    "rep_layers",
    "rep_positions",
    "rep_target",
    "steer_coefficient",
    "target_instruction",
    "target_instruction_mode",
    "target_examples",
    "coefficient_unit",
    "rep_weight",
    "lm_weight",
    "retain_weight",
    "retain_layers",
    "retain_positions",
    "max_length",
    "completion_eos",
    "train_layers",
    "train_modules",
    "param_lrs",
    "rep_params",
    "lm_params",
    "layer_path",
)


def parse_param_lrs(items) -> list[tuple[str, float]]:
    """``["self_attn\\.(v|o)_proj=1e-5"]`` -> ``[(pattern, 1e-5)]`` (patterns are regexes).

    Example:
        >>> parse_param_lrs(["v_proj=1e-5"])
        [('v_proj', 1e-05)]
    """
    out = []
    for item in items or ():
        pattern, sep, value = str(item).rpartition("=")
        if not sep or not pattern:
            raise ValueError(f"param_lrs entry {item!r} must look like 'REGEX=LR'")
        try:
            lr = float(value)
            re.compile(pattern)
        except (ValueError, re.error) as err:
            raise ValueError(f"param_lrs entry {item!r}: {err}") from err
        if not math.isfinite(lr) or lr < 0:
            raise ValueError(f"param_lrs entry {item!r}: the learning rate must be finite and >= 0")
        out.append((pattern, lr))
    return out


@dataclass
class RepTuneConfig(TrainingArguments):
    r"""Configuration of [`RepTuneTrainer`]: the Trainer's arguments plus the dual loss.

    The loss is ``lm_weight * token_CE + rep_weight * rep + retain_weight * retain``, where
    ``rep`` is a cosine to the vector (``rep_target`` toward / away / orthogonal) or, with
    ``rep_target="steer"``, the relative L2 distance to what the steered model computes
    (``h_ref + steer_coefficient * v`` in ``coefficient_unit``, the unit ``SteeredModel`` takes):
    the tuned model then behaves as steered without hooks. With ``rep_target="prompt"`` the
    target is the frozen model's activation with ``target_instruction`` in context (as a system
    prompt or a prefix of the user turn), aligned token by token over the response (assistant
    header and answer) while the trainee sees the plain prompt; a ``steer_coefficient`` adds
    ``c * v`` on top of it. The defaults are the published
    honesty recipe: ``toward`` = ``(1 - cos)/2``, ``away`` = the
    same with ``-v``, ``orthogonal`` = ``|cos|``, averaged over layers and selected positions;
    ``0.01 * CE + 1 * cosine``; no retain term. ``rep_weight=0`` (with ``lm_weight=1``) is the
    token-only "truth/lie-tuned" baseline and gives exactly the plain Trainer's loss.

    The published optimiser settings, to pass yourself: full fine-tuning of layers 11-17
    (``train_layers``), ``learning_rate=1e-6`` with ``param_lrs=["self_attn\.(v|o)_proj=1e-5"]``,
    ``adam_epsilon=1e-4``, ``weight_decay=0.1``, ``warmup_steps=10``, batch 4, 3 epochs.

    Args:
        > Parameters of the representation term

        vectors (`str`, `SteeringVectors` or `dict`, *optional*, defaults to `None`):
            Folder of the steering vectors; the trainer's `vectors=` argument takes precedence.
        rep_layers (`list[int]`, *optional*, defaults to `None`):
            Decoder-block outputs the term acts on. Default: every layer that has a vector.
        rep_positions (`str`, *optional*, defaults to `"-7"`):
            `"all"`, `"prompt"`, `"completion"`, an offset from the end of the prompt, or a
            comma-separated list of offsets.
        rep_target (`str`, *optional*, defaults to `"toward"`):
            `"toward"`, `"away"`, `"orthogonal"` (cosine losses) or `"steer"` (match the
            steered model).
        steer_coefficient (`float`, *optional*, defaults to `None`):
            With `rep_target="steer"`: the coefficient of the steered model to imitate.
        coefficient_unit (`str`, *optional*, defaults to `"residual_norm"`):
            Unit of `steer_coefficient`: `"residual_norm"` or `"raw"`.

        > Parameters that weigh the loss terms

        rep_weight (`float`, *optional*, defaults to `1.0`):
            Weight of the representation term (0 = token-only baseline).
        lm_weight (`float`, *optional*, defaults to `0.01`):
            Weight of the token (causal LM) loss.
        retain_weight (`float`, *optional*, defaults to `0.0`):
            Weight of the retain term: L2 distance to the original model's activations (0 = off).
        retain_layers (`list[int]`, *optional*, defaults to `None`):
            Layers of the retain term. Default: `rep_layers`.
        retain_positions (`str`, *optional*, defaults to `"all"`):
            Positions of the retain term (same language as `rep_positions`).

        > Parameters that control the data

        max_length (`int`, *optional*, defaults to `None`):
            Truncate prompt + completion to this many tokens.
        completion_eos (`bool`, *optional*, defaults to `True`):
            Append the EOS token to every completion.

        > Parameters that choose what trains

        train_layers (`list[int]`, *optional*, defaults to `None`):
            Full fine-tuning of these decoder blocks only (published: 11-17); not with PEFT.
        train_modules (`list[str]`, *optional*, defaults to `None`):
            With `train_layers`: regexes on parameter names inside those blocks that train.
        param_lrs (`list[str]`, *optional*, defaults to `None`):
            Per-group learning rates as `"REGEX=LR"` (first match wins).
        rep_params (`str`, *optional*, defaults to `None`):
            Gradient routing: the representation and retain terms reach only matching
            parameters.
        lm_params (`str`, *optional*, defaults to `None`):
            Gradient routing: the token loss reaches only matching parameters.
        layer_path (`str`, *optional*, defaults to `None`):
            Attribute path of the decoder-block list, for unknown architectures.

        Every other argument is a `transformers.TrainingArguments` argument.

    Example:
        >>> args = RepTuneConfig(output_dir="runs/honest", vectors="runs/vectors",
        ...                      rep_layers=[11, 12, 13], rep_positions="-7")
    """

    # Typed ``str`` for the command line; in Python an object is accepted as well.
    vectors: str | None = field(
        default=None,
        metadata={
            "help": "Folder of the steering vectors (SteeringVectors.save). In Python a "
            "SteeringVectors object or a {layer: tensor} dict is accepted too; the trainer's "
            "`vectors=` argument takes precedence."
        },
    )
    allow_vector_mismatch: bool = field(
        default=False,
        metadata={
            "help": "Use steering vectors recorded for another model_type or depth anyway (the "
            "width and layers must still fit)."
        },
    )
    rep_layers: list[int] | None = field(
        default=None,
        metadata={
            "help": "Layers (decoder-block outputs) the cosine loss acts on. Default: every layer "
            "that has a vector."
        },
    )
    rep_positions: str = field(
        default="-7",
        metadata={
            "help": "Positions of the cosine loss: 'all', 'prompt', 'completion', an offset from "
            "the end of the prompt (-1 = last prompt token; the published -7) or a comma-separated "
            "list of offsets (on the command line: --rep_positions=-7,-6)."
        },
    )
    rep_target: str = field(
        default="toward",
        metadata={
            "help": "Pull the activations 'toward' the vector ((1 - cos)/2), 'away' from it "
            "((1 + cos)/2), make them 'orthogonal' to it (|cos|), or 'steer': match what the "
            "model steered with steer_coefficient computes (relative L2 distance), or 'prompt': "
            "match what the frozen model computes with target_instruction in context (relative "
            "L2 distance over the response tokens).",
            "choices": list(TARGETS),
        },
    )
    steer_coefficient: float | None = field(
        default=None,
        metadata={
            "help": "With rep_target='steer': the coefficient of the steered model to imitate, "
            "in coefficient_unit (as SteeredModel takes it; it steers rep_layers at "
            "rep_positions). With rep_target='prompt' (optional): add this times the vector to "
            "the prompted target."
        },
    )
    target_instruction: str | None = field(
        default=None,
        metadata={
            "help": "With rep_target='prompt': the behaviour instruction the frozen model sees "
            "(the trainee sees the plain prompt)."
        },
    )
    target_instruction_mode: str = field(
        default="system",
        metadata={
            "help": "Where target_instruction goes: 'system' (the system prompt, before a row's "
            "own system text), 'prefix' (before the user's prompt) or 'template' (the user "
            "turn, with {prompt} standing for the row's prompt).",
            "choices": ["system", "prefix", "template"],
        },
    )
    target_examples: list[list[str]] | None = field(
        default=None,
        metadata={
            "help": "With rep_target='prompt' (optional): few-shot [user, assistant] exchanges "
            "the frozen model sees before the prompt."
        },
    )
    coefficient_unit: str = field(
        default=DEFAULT_COEFFICIENT_UNIT,
        metadata={
            "help": "Unit of steer_coefficient: 'residual_norm' (fraction of the layer's median "
            "residual norm, carried by the vectors) or 'raw' (multiples of the vector).",
            "choices": list(COEFFICIENT_UNITS),
        },
    )
    rep_weight: float = field(
        default=1.0, metadata={"help": "Weight of the cosine loss (0 = token-only baseline)."}
    )
    lm_weight: float = field(
        default=0.01, metadata={"help": "Weight of the token (causal LM) loss; published 0.01."}
    )
    retain_weight: float = field(
        default=0.0,
        metadata={
            "help": "Weight of the retain loss: L2 distance between the tuned and the original "
            "model's activations at `retain_layers` (0 = off). With a PEFT model the original "
            "comes from one extra no-grad pass with the adapter disabled."
        },
    )
    retain_layers: list[int] | None = field(
        default=None,
        metadata={"help": "Layers of the retain loss. Default: `rep_layers`."},
    )
    retain_positions: str = field(
        default="all",
        metadata={"help": "Positions of the retain loss (same language as `rep_positions`)."},
    )
    max_length: int | None = field(
        default=None,
        metadata={"help": "Truncate prompt + completion to this many tokens (None = no limit)."},
    )
    completion_eos: bool = field(
        default=True, metadata={"help": "Append the EOS token to every completion."}
    )
    train_layers: list[int] | None = field(
        default=None,
        metadata={
            "help": "Full fine-tuning of these decoder blocks only (published: 11-17); every "
            "other parameter is frozen. Not with a PEFT model."
        },
    )
    train_modules: list[str] | None = field(
        default=None,
        metadata={
            "help": "With `train_layers`: regexes on parameter names inside those blocks that "
            "train (e.g. 'self_attn'); default: all of them."
        },
    )
    param_lrs: list[str] | None = field(
        default=None,
        metadata={
            "help": "Per-group learning rates as 'REGEX=LR' (first match wins; the rest use "
            "`learning_rate`). Published: 'self_attn\\.(v|o)_proj=1e-5' with learning_rate 1e-6."
        },
    )
    rep_params: str | None = field(
        default=None,
        metadata={
            "help": "Gradient routing: a regex on parameter names; the cosine and retain losses "
            "reach only the trainable parameters it matches (default: all)."
        },
    )
    lm_params: str | None = field(
        default=None,
        metadata={
            "help": "Gradient routing: a regex; the token loss reaches only the trainable "
            "parameters it matches (default: all)."
        },
    )
    layer_path: str | None = field(
        default=None,
        metadata={"help": "Attribute path of the decoder-block list, for unknown architectures."},
    )

    def __post_init__(self):
        if self.rep_target not in TARGETS:
            raise ValueError(f"unknown rep_target {self.rep_target!r}: use one of {TARGETS}")
        for name in ("rep_weight", "lm_weight", "retain_weight"):
            value = getattr(self, name)
            # NaN passes `value < 0`, and a NaN weight would silently drop its loss term.
            if (
                not isinstance(value, (int, float))
                or isinstance(value, bool)
                or not math.isfinite(value)
                or value < 0
            ):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        check_coefficient_unit(self.coefficient_unit)
        if self.rep_target == "steer":
            c = self.steer_coefficient
            if isinstance(c, bool) or not isinstance(c, (int, float)) or not math.isfinite(c):
                raise ValueError(
                    "rep_target='steer' needs steer_coefficient: the finite coefficient of the "
                    f"steered model to imitate (in {self.coefficient_unit!r} units), got {c!r}"
                )
        elif self.steer_coefficient is not None and self.rep_target != "prompt":
            raise ValueError(
                f"steer_coefficient is only used with rep_target='steer' or 'prompt' (rep_target "
                f"is {self.rep_target!r}): drop it or set rep_target='steer'"
            )
        self._check_prompt_target()
        if self.max_length is not None and (
            not isinstance(self.max_length, int) or self.max_length < 2
        ):
            raise ValueError(f"max_length must be an int >= 2 or None, got {self.max_length!r}")
        if self.rep_weight == 0 and self.lm_weight == 0 and self.retain_weight == 0:
            raise ValueError("all loss weights are 0: nothing to train")
        parse_positions(self.rep_positions)
        parse_positions(self.retain_positions)
        for name in ("rep_layers", "retain_layers", "train_layers"):
            value = getattr(self, name)
            if isinstance(value, int) and not isinstance(value, bool):
                setattr(self, name, [value])
            elif value is not None:
                if not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
                    raise TypeError(f"{name} must be a list of ints, got {value!r}")
                if not value:
                    raise ValueError(f"{name} is empty: give at least one layer or leave it unset")
        if isinstance(self.param_lrs, str):
            self.param_lrs = [self.param_lrs]
        parse_param_lrs(self.param_lrs)
        for name in ("rep_params", "lm_params"):
            _check_regex(name, getattr(self, name))
        for pattern in self.train_modules or ():
            _check_regex("train_modules", pattern)
        if self.train_modules is not None and self.train_layers is None:
            raise ValueError("train_modules needs train_layers")
        # Before transformers reads the launch: its own errors for a conflict come later or name
        # the wrong file.
        check_precision(self)
        super().__post_init__()

    def _check_prompt_target(self) -> None:
        from .prompt_target import check_prompt_target_settings

        check_prompt_target_settings(self)

    def rep_settings(self) -> dict[str, Any]:
        """The reptune fields as JSON-ready values (vector objects become a description)."""
        out = {name: getattr(self, name) for name in REP_FIELDS}
        if out["vectors"] is not None and not isinstance(out["vectors"], str):
            out["vectors"] = _describe_vectors(out["vectors"])
        return out

    def to_dict(self) -> dict[str, Any]:
        # TrainingArguments serialises every field (TensorBoard/W&B hparams, JSON dumps): a vector
        # object would break that, so it is shown as a description.
        out = super().to_dict()
        if out.get("vectors") is not None and not isinstance(out["vectors"], str):
            out["vectors"] = _describe_vectors(out["vectors"])
        return out


def _check_regex(name: str, pattern) -> None:
    if pattern is None:
        return
    try:
        re.compile(pattern)
    except (re.error, TypeError) as err:
        raise ValueError(f"{name}={pattern!r} is not a valid regular expression: {err}") from err


def _describe_vectors(vectors) -> str:
    layers = getattr(vectors, "layers", None) or sorted(dict(vectors))
    return f"<{type(vectors).__name__} layers={list(layers)}>"
