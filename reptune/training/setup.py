"""Setting up representation tuning: which layers, which vectors, which reference, which
parameters, and the checks that fail before the first step.

:class:`RepTuneSetup` is the first half of :class:`~reptune.training.mixin.RepTuneLossMixin`: it
reads the :class:`~reptune.training.config.RepTuneConfig` fields, resolves layers and vectors,
builds the frozen reference pass and the gradient router, freezes layers for selected-layer
fine-tuning, and refuses settings and data that cannot work.

Example:
    >>> trainer = RepTuneTrainer(model, args, vectors=vectors, train_dataset=rows)
    >>> trainer.rep_layers, trainer.retain_layers
"""

from __future__ import annotations

import json
import re

import torch

from ..layers import check_layers, find_layers, num_layers
from .checkpoints import as_vectors
from .collator import RepTuneCollator, parse_positions
from .config import REP_FIELDS, parse_param_lrs
from .launch import check_launch
from .masks import batch_masks, rows_without_positions
from .parameters import freeze_except_layers
from .reference import ReferencePass, is_peft_model
from .routing import GradientRouter

__all__ = ["RepTuneSetup"]


class RepTuneSetup:
    """Resolve and check the representation-tuning settings of a Trainer (see the module)."""

    def _rep_setup(self, vectors, rep_config, ref_model) -> None:
        cfg = rep_config if rep_config is not None else self.args
        missing = [name for name in REP_FIELDS if not hasattr(cfg, name)]
        if missing:
            raise TypeError(
                f"{type(cfg).__name__} lacks the reptune fields {missing}: pass args that "
                "subclass RepTuneConfig, or rep_config=RepTuneConfig(...)"
            )
        self.rep_config = cfg
        check_launch(self.args, self.is_fsdp_enabled)
        self._steer = cfg.rep_target == "steer"
        self._prompt_target = cfg.rep_target == "prompt"
        self._positions = (
            parse_positions(cfg.rep_positions),
            parse_positions(cfg.retain_positions),
        )
        self._rep_norm: torch.Tensor | None = None
        self._vector_cache: dict = {}
        # trl's ``_metrics`` pattern, in a store of its own (SFTTrainer averages ``_metrics``
        # with sum/len): running (sum, count) pairs, reduced across processes in ``log``.
        self._rep_metrics: dict[str, dict[str, torch.Tensor]] = {"train": {}, "eval": {}}
        model = self.model
        n_layers = num_layers(model, cfg.layer_path)
        self.rep_vectors = as_vectors(vectors if vectors is not None else cfg.vectors)
        # The prompt objective needs a vector only for its combined target (prompted + c * v).
        needs_vectors = not self._prompt_target or cfg.steer_coefficient is not None
        if self.rep_vectors is None and needs_vectors and (cfg.rep_weight > 0 or self._steer):
            raise ValueError(
                "rep_weight > 0 needs steering vectors: pass vectors= (a SteeringVectors or a "
                "folder) or set the config's `vectors`, or set rep_weight=0 for token-only tuning"
            )
        self.rep_layers = self._resolve_rep_layers(cfg, n_layers, needs_vectors)
        self.retain_layers: list[int] = []
        if cfg.retain_weight > 0:
            wanted = cfg.retain_layers if cfg.retain_layers is not None else self.rep_layers
            if not wanted:
                raise ValueError("retain_weight > 0 needs retain_layers (or rep_layers)")
            self.retain_layers = check_layers(list(wanted), n_layers)
        if cfg.train_layers is not None:
            if is_peft_model(model):
                raise ValueError(
                    "train_layers selects layers for full fine-tuning; the model has PEFT "
                    "adapters (use the LoRA config's layers_to_transform instead)"
                )
            freeze_except_layers(model, cfg.train_layers, cfg.train_modules, cfg.layer_path)
        self._reference = self._build_reference(ref_model)
        self._param_lrs = parse_param_lrs(cfg.param_lrs)
        trainable = [n for n, p in model.named_parameters() if p.requires_grad]
        for pattern, _ in self._param_lrs:
            if not any(re.search(pattern, n) for n in trainable):
                raise ValueError(f"param_lrs pattern {pattern!r} matches no trainable parameter")
        self._router = None
        if cfg.rep_params is not None or cfg.lm_params is not None:
            self._check_routing()
            self._router = GradientRouter(model, cfg.rep_params, cfg.lm_params)
        self._early_stop = self._can_stop_early()
        if self._rep_active and self.args.n_gpu > 1:
            # nn.DataParallel runs replicas in threads that would share one set of hooks.
            raise ValueError(
                "several GPUs in one process (nn.DataParallel) are not supported: launch one "
                "process per GPU with torchrun or accelerate launch"
            )
        if self.is_deepspeed_enabled:
            self._check_zero3_save()
        self._check_datasets()

    def _resolve_rep_layers(self, cfg, n_layers: int, needs_vectors: bool) -> list[int]:
        """The rep layers, checked against the model and (when a vector is used) the vectors."""
        if self.rep_vectors is not None:
            self.rep_vectors.check_compatible(self.model, allow_mismatch=cfg.allow_vector_mismatch)
        if self.rep_vectors is not None and needs_vectors:
            wanted = cfg.rep_layers if cfg.rep_layers is not None else self.rep_vectors.layers
            layers = check_layers(list(wanted), n_layers)
            absent = [layer for layer in layers if layer not in self.rep_vectors]
            if absent:
                raise ValueError(
                    f"rep_layers {absent} have no steering vector (the vectors cover layers "
                    f"{self.rep_vectors.layers})"
                )
            # Plain float32 tensors kept off the model: never parameters or buffers, so ZeRO-3
            # and FSDP never partition them; moved to the activations' device when used.
            self._vectors = {k: self.rep_vectors[k].detach().float().cpu() for k in layers}
            return layers
        if not self._prompt_target:
            return []
        wanted = cfg.rep_layers
        if wanted is None and self.rep_vectors is not None:
            wanted = self.rep_vectors.layers
        if wanted is None:
            raise ValueError(
                "rep_target='prompt' without vectors needs rep_layers: the layers whose "
                "activations should match the prompted model's"
            )
        return check_layers(list(wanted), n_layers)

    def _build_reference(self, ref_model) -> ReferencePass | None:
        cfg = self.rep_config
        steer = {}
        combined = self._prompt_target and cfg.steer_coefficient is not None
        if (self._steer or combined) and self.rep_layers:
            self.rep_vectors.check_unit(cfg.coefficient_unit, self.rep_layers)
            c = float(cfg.steer_coefficient)
            steer = {
                k: c * self.rep_vectors.direction(k, cfg.coefficient_unit) for k in self.rep_layers
            }
        prompted = set(self.rep_layers) if self._prompt_target else set()
        record = sorted(set(self.retain_layers) | set(steer) | prompted)
        if not record:
            return None
        sharded = self.is_deepspeed_enabled or self.is_fsdp_enabled
        return ReferencePass(
            self.model,
            record,
            steer,
            ref_model=ref_model,
            accelerator=self.accelerator if self.is_deepspeed_enabled else None,
            layer_path=cfg.layer_path,
            # Raising out of a sharded forward could leave ZeRO-3/FSDP gathering half done.
            stop_early=not sharded,
            device=None if sharded or self.is_model_parallel else self.args.device,
        )

    def _check_routing(self) -> None:
        kwargs = self.args.activation_checkpointing_kwargs or {}
        if isinstance(kwargs, str):
            kwargs = json.loads(kwargs)
        if self.args.activation_checkpointing and kwargs.get("use_reentrant", False):
            raise ValueError(
                "gradient routing (rep_params/lm_params) needs torch.autograd.grad, which "
                "reentrant checkpointing does not support: use use_reentrant=False (the default)"
            )
        if self.is_deepspeed_enabled or self.is_fsdp_enabled:
            raise ValueError(
                "gradient routing (rep_params/lm_params) works with one process or DDP; with "
                "DeepSpeed or FSDP the parameters are sharded"
            )

    def _can_stop_early(self) -> bool:
        """Whether the forward pass may stop after the deepest hooked layer: no token loss, one
        unsharded process, and no trainable weight past that layer (nothing there could learn)."""
        cfg, model = self.rep_config, self.model
        layers = sorted(set(self.rep_layers) | set(self.retain_layers))
        if cfg.lm_weight != 0 or not layers or self._router is not None:
            return False
        if self.args.world_size > 1 or self.is_deepspeed_enabled or self.is_fsdp_enabled:
            return False
        blocks = find_layers(model, cfg.layer_path)
        below = {id(p) for block in blocks[: max(layers) + 1] for p in block.parameters()}
        below |= {id(p) for p in model.get_input_embeddings().parameters()}
        return all(id(p) in below for p in model.parameters() if p.requires_grad)

    def _check_zero3_save(self) -> None:
        """Refuse, before training, a ZeRO-3 run whose final save would hold no weights.

        With a PEFT model the Trainer gathers the trainable (adapter) weights itself under
        ZeRO-3, whatever the setting. A full model is gathered only with the 16-bit gather on;
        without it the Trainer writes a DeepSpeed checkpoint that ``from_pretrained`` cannot read.
        """
        plugin = getattr(self.accelerator.state, "deepspeed_plugin", None)
        config = getattr(getattr(plugin, "hf_ds_config", None), "config", {}) or {}
        zero = config.get("zero_optimization", {})
        gather = zero.get("stage3_gather_16bit_weights_on_model_save")
        if (
            zero.get("stage") == 3
            and not is_peft_model(self.model)
            and gather not in (True, "true")
        ):
            raise ValueError(
                "DeepSpeed ZeRO-3 full fine-tuning saves no loadable weights unless "
                "`zero3_save_16bit_model: true` (accelerate config) or "
                "`stage3_gather_16bit_weights_on_model_save: true` (DeepSpeed JSON) is set"
            )

    def _check_datasets(self) -> None:
        """Raise before training when ``rep_positions`` selects no token of some row."""
        if not self.rep_layers or self.data_collator is None:
            return
        named = [("train", self.train_dataset)]
        evals = self.eval_dataset
        named += (
            [(f"eval[{k}]", v) for k, v in evals.items()]
            if isinstance(evals, dict)
            else [("eval", evals)]
        )
        strict = isinstance(self.data_collator, RepTuneCollator)
        for name, dataset in named:
            if dataset is None:
                continue
            bad, n = rows_without_positions(dataset, self.data_collator, self._masks, strict=strict)
            if bad:
                raise ValueError(
                    f"rep_positions={self.rep_config.rep_positions!r} selects no token in "
                    f"{len(bad)} of {n} {name} rows (first rows: {bad[:5]}): the position lies "
                    "outside those sequences (prompt shorter than the offset, empty completion, "
                    "or no labelled completion). Change rep_positions or fix the data."
                    + (
                        " With rep_target='prompt' only the response (assistant header and "
                        "answer) is aligned: use rep_positions='all' or 'completion'."
                        if self._prompt_target
                        else ""
                    )
                )

    # -- masks and normalisation -------------------------------------------------------------
    def _masks(self, batch):
        rep, retain = self._positions
        return batch_masks(
            batch, rep, retain, want_rep=bool(self.rep_layers), want_retain=bool(self.retain_layers)
        )
