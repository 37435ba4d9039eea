"""RepTuneTrainer: ``transformers.Trainer`` with the representation-tuning loss.

The loss wiring is :class:`~reptune.training.mixin.RepTuneLossMixin` (usable with any Trainer
subclass, e.g. trl's ``SFTTrainer``); this module adds the concrete trainer: a model spec or a
model, ``peft_config=`` as in trl, and the default collator.

Example:
    >>> trainer = RepTuneTrainer("embedded:smollm2-135m", RepTuneConfig(output_dir="runs/t"),
    ...                          vectors=vectors, train_dataset=rows, peft_config=LoraConfig(r=8))
"""

from __future__ import annotations

from torch import nn
from transformers import Trainer

from .checkpoints import REPTUNE_CONFIG_NAME, REPTUNE_VECTORS_DIR
from .collator import COLLATOR_COLUMNS, RepTuneCollator
from .config import RepTuneConfig
from .mixin import RepTuneLossMixin
from .parameters import freeze_except_layers
from .prompt_target import PromptTargetCollator
from .reference import is_peft_model

__all__ = [
    "RepTuneLossMixin",
    "RepTuneTrainer",
    "check_trainer_arguments",
    "freeze_except_layers",
    "REPTUNE_CONFIG_NAME",
    "REPTUNE_VECTORS_DIR",
]


def check_trainer_arguments(model, vectors, ref_model, peft_config) -> None:
    """Raise a ``TypeError`` naming the argument when one has the wrong type, before any work.

    Example:
        >>> check_trainer_arguments(model, "runs/vectors", None, LoraConfig(r=8))
    """
    from pathlib import Path

    from peft import PeftConfig

    from ..vectors import SteeringVectors

    def refuse(name: str, expected: str, value) -> None:
        raise TypeError(f"{name} must be {expected}, got {type(value).__name__}")

    if not isinstance(model, (nn.Module, str)):
        refuse("model", "a torch.nn.Module (a transformers model) or a model spec string", model)
    if peft_config is not None and not isinstance(peft_config, PeftConfig):
        refuse("peft_config", "a peft.PeftConfig (e.g. LoraConfig)", peft_config)
    if vectors is not None and not isinstance(vectors, (SteeringVectors, dict, str, Path)):
        refuse("vectors", "a SteeringVectors, a {layer: tensor} dict or a folder path", vectors)
    if ref_model is not None and not isinstance(ref_model, nn.Module):
        refuse("ref_model", "a torch.nn.Module", ref_model)


class RepTuneTrainer(RepTuneLossMixin, Trainer):
    """``transformers.Trainer`` for representation tuning.

    Loss: ``lm_weight * token_CE + rep_weight * rep + retain_weight * retain`` (see
    :class:`RepTuneConfig`). The representation term reads the decoder-block outputs at
    ``rep_layers`` and ``rep_positions`` through :func:`reptune.hooks.intervene`: a cosine to the
    vector, or with ``rep_target="steer"`` the distance to what the steered model computes (with
    ``rep_target="prompt"``: to what the frozen model computes with the instruction in context,
    its batches built by :class:`PromptTargetCollator`). The
    retain term compares the outputs at ``retain_layers`` with the original model's (PEFT: the
    adapter disabled, one extra no-grad pass). Logs ``lm_loss``, ``rep_loss``, ``retain_loss``
    and per-layer ``cos_layer_<i>`` or ``steer_distance_layer_<i>`` for train and eval.
    Checkpoints carry ``reptune_config.json`` and the vectors.

    ``model`` is a model or a reptune model spec (``embedded:smollm2-135m``, a folder, a Hub id);
    ``peft_config`` (a peft config, as in trl) wraps it in adapters. The dataset holds
    ``{"prompt", "completion"[, "system"]}`` rows, tokenized by :class:`RepTuneCollator` (built
    from ``processing_class`` when no collator is given).

    Args:
        model (`nn.Module` or `str`):
            The model to tune, or a reptune model spec (loaded with `reptune.load_model`).
        args (`RepTuneConfig`, *optional*, defaults to `None`):
            Training and loss settings. Default: `RepTuneConfig(output_dir="reptune-output")`.
        vectors (`SteeringVectors`, `dict` or `str`, *optional*, defaults to `None`):
            The behaviour vectors; takes precedence over `args.vectors`.
        data_collator (`Callable`, *optional*, defaults to `None`):
            Default: a `RepTuneCollator` built from `processing_class` and `args`.
        train_dataset (`Dataset` or list of `dict`, *optional*, defaults to `None`):
            `{"prompt", "completion"[, "system"]}` rows.
        eval_dataset (`Dataset` or list of `dict`, *optional*, defaults to `None`):
            Rows of the same form, evaluated with the same loss terms.
        processing_class (`PreTrainedTokenizerBase`, *optional*, defaults to `None`):
            The tokenizer (loaded with the model when `model` is a spec).
        ref_model (`nn.Module`, *optional*, defaults to `None`):
            The frozen original model of the retain and steer terms. Default: the same
            model with the adapter disabled (PEFT), or a frozen copy.
        peft_config (`PeftConfig`, *optional*, defaults to `None`):
            Wraps `model` in adapters, as in trl.

        Every other keyword goes to `transformers.Trainer`.

    Example:
        >>> args = RepTuneConfig(output_dir="runs/honest", rep_layers=[11, 12, 13, 14])
        >>> trainer = RepTuneTrainer(model, args, vectors=vectors, train_dataset=rows,
        ...                          processing_class=tokenizer,
        ...                          peft_config=LoraConfig(r=8, target_modules="all-linear"))
        >>> trainer.train()
    """

    def __init__(
        self,
        model: nn.Module | str,
        args: RepTuneConfig | None = None,
        vectors=None,
        data_collator=None,
        train_dataset=None,
        eval_dataset=None,
        processing_class=None,
        ref_model: nn.Module | None = None,
        peft_config=None,
        **kwargs,
    ):
        check_trainer_arguments(model, vectors, ref_model, peft_config)
        if args is None:
            args = RepTuneConfig(output_dir="reptune-output")
        if not isinstance(args, RepTuneConfig):
            raise TypeError(
                f"args must be a RepTuneConfig, got {type(args).__name__} (use RepTuneLossMixin "
                "with rep_config= to combine the loss with another config)"
            )
        if train_dataset is not None and hasattr(train_dataset, "__len__"):
            if len(train_dataset) == 0:
                raise ValueError("train_dataset is empty: give at least one training row")
        spec = model if isinstance(model, str) else None
        if isinstance(model, str):
            from ..models import load_model

            model, tokenizer = load_model(model)
            processing_class = tokenizer if processing_class is None else processing_class
        training = model.training
        if peft_config is not None:
            if is_peft_model(model):
                raise ValueError("the model already has PEFT adapters: drop peft_config")
            from peft import get_peft_model
            from transformers import set_seed

            # The adapters' random initialisation follows the run's seed, as the Trainer's own
            # initialisation does: two runs with the same settings start from the same weights.
            set_seed(args.seed)
            model = get_peft_model(model, peft_config)
        if data_collator is None:
            if processing_class is None:
                raise ValueError("pass processing_class=tokenizer (or a data_collator)")
            if args.rep_target == "prompt":
                data_collator = PromptTargetCollator(
                    processing_class,
                    args.target_instruction,
                    args.target_instruction_mode,
                    rep_positions=args.rep_positions,
                    examples=args.target_examples or (),
                    max_length=args.max_length,
                    completion_eos=args.completion_eos,
                )
            else:
                data_collator = RepTuneCollator(
                    processing_class,
                    rep_positions=args.rep_positions,
                    retain_positions=args.retain_positions if args.retain_weight > 0 else None,
                    max_length=args.max_length,
                    completion_eos=args.completion_eos,
                )
        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            vectors=vectors,
            ref_model=ref_model,
            **kwargs,
        )
        self._model_mode = training
        self.base_model_spec = spec

    def _set_signature_columns_if_needed(self):
        # The collator tokenizes text columns the model's forward does not name; with
        # remove_unused_columns=True the Trainer would drop them before they reach it.
        super()._set_signature_columns_if_needed()
        extra = [*COLLATOR_COLUMNS, "rep_mask", "retain_mask"]
        self._signature_columns = list(dict.fromkeys([*self._signature_columns, *extra]))
