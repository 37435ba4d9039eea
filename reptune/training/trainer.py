"""RepTuneTrainer: token loss + cosine loss on hooked activations (+ an optional retain loss).

The loss terms are pure functions (:mod:`reptune.training.losses`); this module wires them to the
hook mechanism (:func:`reptune.hooks.intervene`), to the Trainer's gradient-accumulation and
multi-device normalisation, to logging, checkpoints and optional gradient routing.

Normalisation. transformers' causal-LM loss, given ``num_items_in_batch``, is ``summed CE /
label tokens in the whole accumulated batch`` (all devices when ``average_tokens_across_devices``,
then multiplied by the number of processes because DDP averages gradients), and the Trainer does
not divide it by the accumulation steps. The representation terms follow the same rule per
selected *position*: ``sum over the micro-batch's positions / positions in the accumulated
(all-device) batch``, times the number of processes in the same case. The counts are taken in
:meth:`get_batch_samples`, where the Trainer counts its label tokens. Accumulating 4 x 1 rows, or
running 2 processes x 2 rows, then gives the gradients of one batch of 4. When the Trainer does
not pass ``num_items_in_batch`` (a model without loss kwargs), every term is a per-micro-batch
mean and the Trainer divides the sum by the accumulation steps, as it does for the token loss.

Scale. The vectors are plain float32 tensors kept outside the model, so ZeRO-3 and FSDP never
shard them; they are moved to the activations' device when used. The token term always stays in
the graph (weight 0 included), so DDP/FSDP see every parameter in the backward pass even when the
cosine loss flows only through hook-captured activations. The gradient reaching the hooked
activations is sparse (the selected rows), so the backward's peak memory stays the plain
Trainer's. With transformers 5 checkpointing wraps a block's ``forward``, not its hooks, so the
captured outputs carry gradients with reentrant and non-reentrant checkpointing alike.
"""

from __future__ import annotations

import copy
import json
import logging
import re
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import Trainer
from transformers.trainer_utils import get_last_checkpoint

from ..hooks import Recorder, StopForward, intervene
from ..io import atomic_write
from ..layers import check_layers, find_layers, num_layers, unwrap_model
from ..vectors import SteeringVectors
from ..version import __version__
from .collator import (
    COLLATOR_COLUMNS,
    RepTuneCollator,
    parse_positions,
    position_mask,
    prompt_end_from_labels,
)
from .config import REP_FIELDS, RepTuneConfig, parse_param_lrs
from .launch import check_launch
from .losses import representation_loss, retain_loss

__all__ = [
    "RepTuneLossMixin",
    "RepTuneTrainer",
    "freeze_except_layers",
    "REPTUNE_CONFIG_NAME",
    "REPTUNE_VECTORS_DIR",
]

logger = logging.getLogger(__name__)

#: Files written into every checkpoint and into the final output folder.
REPTUNE_CONFIG_NAME = "reptune_config.json"
REPTUNE_VECTORS_DIR = "reptune_vectors"

# Rows scanned before training to check that the position spec selects a token in each.
_VALIDATE_ROWS = 50_000


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


def _accumulate(store: dict, key: str, value: torch.Tensor, count) -> None:
    """Add ``(value, count)`` to the running float32 ``(sum, count)`` of a metric.

    Running sums, not lists: nothing grows between two logs, and no host sync per step.
    """
    value = value.detach().float()
    pair = torch.stack([value, torch.as_tensor(count, dtype=torch.float32, device=value.device)])
    store[key] = pair if key not in store else store[key] + pair.to(store[key].device)


def _one_shot_replace(grad: torch.Tensor | None):
    """Parameter hook replacing the incoming gradient by ``grad`` (zeros if None), once."""
    live = [True]

    def hook(incoming):
        if not live[0]:  # one backward only; the handle is removed at the next compute_loss
            return None
        live[0] = False
        return torch.zeros_like(incoming) if grad is None else grad.to(incoming.dtype)

    return hook


def _is_peft(model) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a dependency
        return False
    return isinstance(model, PeftModel)


def _load_vectors(vectors) -> SteeringVectors | None:
    if vectors is None or isinstance(vectors, SteeringVectors):
        return vectors
    if isinstance(vectors, (str, Path)):
        return SteeringVectors.load(vectors)
    if isinstance(vectors, dict):
        return SteeringVectors({int(k): torch.as_tensor(v) for k, v in vectors.items()})
    raise TypeError(
        f"vectors must be a SteeringVectors, a {{layer: tensor}} dict or a folder path, "
        f"got {type(vectors).__name__}"
    )


class RepTuneLossMixin:
    """The representation-tuning loss for any ``transformers.Trainer`` subclass.

    Put it first in the bases: ``class MyTrainer(RepTuneLossMixin, SFTTrainer)``. Settings come
    from ``args`` when it has the :class:`RepTuneConfig` fields, else from ``rep_config``.
    Without a ``rep_mask`` column in the batch (another collator), positions are derived from the
    labels: the completion starts at the first labelled token. ``compute_loss`` runs the base
    class's loss inside the hooks and adds the weighted cosine and retain terms.

    Example:
        >>> class RepSFTTrainer(RepTuneLossMixin, SFTTrainer):
        ...     pass
        >>> trainer = RepSFTTrainer(model=model, args=sft_args, rep_config=rep_args,
        ...                         vectors=vectors, train_dataset=dataset)
    """

    def __init__(self, *args, vectors=None, rep_config=None, ref_model=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._rep_setup(vectors, rep_config, ref_model)

    # -- setup ------------------------------------------------------------------------------
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
        self._rep_target = cfg.rep_target
        self._rep_positions = parse_positions(cfg.rep_positions)
        self._retain_positions = parse_positions(cfg.retain_positions)
        self._rep_norm: torch.Tensor | None = None
        self._vector_cache: dict = {}
        self._route_handles: list = []
        self._route_sets = None
        # trl's ``_metrics`` pattern, in a store of its own (SFTTrainer averages ``_metrics``
        # with sum/len): running (sum, count) pairs, reduced across processes in ``log``.
        self._rep_metrics: dict[str, dict[str, torch.Tensor]] = {"train": {}, "eval": {}}

        model = self.model
        n_layers = num_layers(model, cfg.layer_path)
        self.rep_vectors = _load_vectors(vectors if vectors is not None else cfg.vectors)
        if self.rep_vectors is None and cfg.rep_weight > 0:
            raise ValueError(
                "rep_weight > 0 needs steering vectors: pass vectors= (a SteeringVectors or a "
                "folder) or set the config's `vectors`, or set rep_weight=0 for token-only tuning"
            )
        self.rep_layers: list[int] = []
        if self.rep_vectors is not None:
            self.rep_vectors.check_compatible(model)
            wanted = cfg.rep_layers if cfg.rep_layers is not None else self.rep_vectors.layers
            self.rep_layers = check_layers(list(wanted), n_layers)
            absent = [layer for layer in self.rep_layers if layer not in self.rep_vectors]
            if absent:
                raise ValueError(
                    f"rep_layers {absent} have no steering vector (the vectors cover layers "
                    f"{self.rep_vectors.layers})"
                )
            # Plain float32 tensors kept off the model: never parameters or buffers, so ZeRO-3
            # and FSDP never partition them; moved to the activations' device when used.
            self._vectors = {
                layer: self.rep_vectors[layer].detach().float().cpu().clone()
                for layer in self.rep_layers
            }
        self.retain_layers: list[int] = []
        self.ref_model = None
        self._ref_from_adapter = False
        if cfg.retain_weight > 0:
            wanted = cfg.retain_layers if cfg.retain_layers is not None else self.rep_layers
            if not wanted:
                raise ValueError("retain_weight > 0 needs retain_layers (or rep_layers)")
            self.retain_layers = check_layers(list(wanted), n_layers)
            if _is_peft(model):
                self._ref_from_adapter = True
            elif ref_model is not None:
                self.ref_model = ref_model.eval().requires_grad_(False)
                if not (self.is_deepspeed_enabled or self.is_model_parallel):
                    self.ref_model.to(self.args.device)
            else:
                if any(hasattr(p, "ds_numel") or p.is_meta for p in model.parameters()):
                    raise ValueError(
                        "retain loss on a model without adapters that is loaded partitioned "
                        "(ZeRO-3) or on the meta device (FSDP's cpu_ram_efficient_loading): a "
                        "copy of it holds no weights. Pass ref_model= (ZeRO-3: loaded the same "
                        "way), or load the model whole"
                    )
                logger.warning(
                    "retain loss on a model without adapters: keeping a frozen copy of the "
                    "whole model as the reference (twice the memory); pass ref_model= to choose"
                )
                self.ref_model = copy.deepcopy(unwrap_model(model)).eval().requires_grad_(False)
            if self.ref_model is not None and self.is_deepspeed_enabled:
                # A DeepSpeed inference engine places the reference on the device and, under
                # ZeRO-3, gathers its partitioned weights at forward time (as trl does).
                from trl.models.utils import prepare_deepspeed

                self.ref_model = prepare_deepspeed(self.ref_model, self.accelerator)

        if cfg.train_layers is not None:
            if _is_peft(model):
                raise ValueError(
                    "train_layers selects layers for full fine-tuning; the model has PEFT "
                    "adapters (use the LoRA config's layers_to_transform instead)"
                )
            freeze_except_layers(model, cfg.train_layers, cfg.train_modules, cfg.layer_path)
        self._param_lrs = parse_param_lrs(cfg.param_lrs)
        trainable = [n for n, p in model.named_parameters() if p.requires_grad]
        for pattern, _ in self._param_lrs:
            if not any(re.search(pattern, n) for n in trainable):
                raise ValueError(f"param_lrs pattern {pattern!r} matches no trainable parameter")
        self._routing = cfg.rep_params is not None or cfg.lm_params is not None
        if self._routing:
            self._check_routing(trainable)

        if self._rep_active and self.args.n_gpu > 1:
            # nn.DataParallel runs replicas in threads that would share one set of hooks.
            raise ValueError(
                "several GPUs in one process (nn.DataParallel) are not supported: launch one "
                "process per GPU with torchrun or accelerate launch"
            )
        if self.is_deepspeed_enabled:
            self._check_zero3_save()
        for name, dataset in self._datasets_to_check():
            self._check_dataset_positions(dataset, name)

    def _check_routing(self, trainable: list[str]) -> None:
        cfg = self.rep_config
        for name in ("rep_params", "lm_params"):
            pattern = getattr(cfg, name)
            if pattern is not None and not any(re.search(pattern, n) for n in trainable):
                raise ValueError(f"{name}={pattern!r} matches no trainable parameter")
        ckpt_kwargs = self.args.activation_checkpointing_kwargs or {}
        if isinstance(ckpt_kwargs, str):
            ckpt_kwargs = json.loads(ckpt_kwargs)
        if self.args.activation_checkpointing and ckpt_kwargs.get("use_reentrant", False):
            raise ValueError(
                "gradient routing (rep_params/lm_params) needs torch.autograd.grad, which "
                "reentrant checkpointing does not support: use use_reentrant=False (the default)"
            )
        if self.is_deepspeed_enabled or self.is_fsdp_enabled:
            raise ValueError(
                "gradient routing (rep_params/lm_params) works with one process or DDP; with "
                "DeepSpeed or FSDP the parameters are sharded"
            )

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
        if zero.get("stage") == 3 and not _is_peft(self.model) and gather not in (True, "true"):
            raise ValueError(
                "DeepSpeed ZeRO-3 full fine-tuning saves no loadable weights unless "
                "`zero3_save_16bit_model: true` (accelerate config) or "
                "`stage3_gather_16bit_weights_on_model_save: true` (DeepSpeed JSON) is set"
            )

    def _datasets_to_check(self):
        if self.rep_vectors is None:
            return []
        out = [("train", self.train_dataset)]
        evals = self.eval_dataset
        if isinstance(evals, dict):
            out += [(f"eval[{k}]", v) for k, v in evals.items()]
        else:
            out.append(("eval", evals))
        return [(n, d) for n, d in out if d is not None]

    def _check_dataset_positions(self, dataset, name: str) -> None:
        """Raise before training when ``rep_positions`` selects no token of some row."""
        if isinstance(dataset, (str, bytes)) or not (
            hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")
        ):
            return  # iterable datasets are not scanned
        if self.data_collator is None:
            return
        own = isinstance(self.data_collator, RepTuneCollator)
        n = min(len(dataset), _VALIDATE_ROWS)
        bad: list[int] = []
        for start in range(0, n, 256):
            rows = [dataset[i] for i in range(start, min(n, start + 256))]
            try:
                batch = self.data_collator(rows)
            except Exception as err:
                if own:
                    raise
                # Another trainer's collator may need its column removal first: skip the scan.
                logger.info("positions not checked before training (%s rows: %s)", name, err)
                return
            rep_mask, _ = self._batch_masks(batch)
            bad += (start + (~rep_mask.any(1)).nonzero().flatten()).tolist()
        if bad:
            raise ValueError(
                f"rep_positions={self.rep_config.rep_positions!r} selects no token in {len(bad)} "
                f"of {n} {name} rows (first rows: {bad[:5]}): the position lies outside those "
                "sequences (prompt shorter than the offset, empty completion, or no labelled "
                "completion). Change rep_positions or fix the data."
            )

    # -- masks and normalisation -------------------------------------------------------------
    def _batch_masks(self, batch) -> tuple[torch.Tensor, torch.Tensor | None]:
        attention = batch.get("attention_mask")
        if attention is None or attention.dim() != 2:
            raise ValueError(
                "representation tuning needs a 2-D attention_mask in every batch (padding-free "
                "or packed batches are not supported)"
            )
        real = attention.bool()
        rep, retain = batch.get("rep_mask"), batch.get("retain_mask")
        want_retain = bool(self.retain_layers)
        if (rep is None and self.rep_layers) or (retain is None and want_retain):
            if "labels" not in batch:
                raise ValueError("batches need a rep_mask column or labels to locate the prompt")
            end = prompt_end_from_labels(batch["labels"], attention)
            if rep is None and self.rep_layers:
                rep = position_mask(self._rep_positions, attention, end)
            if retain is None and want_retain:
                retain = position_mask(self._retain_positions, attention, end)
        rep = rep.bool() & real if rep is not None else real
        retain = retain.bool() & real if retain is not None else None
        return rep, retain

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        batch_samples, num_items = super().get_batch_samples(epoch_iterator, num_batches, device)
        if self._rep_active and batch_samples:
            counts = torch.zeros(2, dtype=torch.long, device=device)
            for batch in batch_samples:
                rep, retain = self._batch_masks(batch)
                # Stored so compute_loss reuses the masks (they are derived for other collators).
                batch["rep_mask"] = rep
                counts[0] += rep.sum().to(device)
                if retain is not None:
                    batch["retain_mask"] = retain
                    counts[1] += retain.sum().to(device)
                elif self.retain_layers:
                    counts[1] += batch["attention_mask"].sum().to(device)
            if self.args.average_tokens_across_devices and self.args.world_size > 1:
                counts = self.accelerator.gather(counts).view(-1, 2).sum(0)
                # Ranks sharing one batch (tensor/context/sequence parallel) count it once, as
                # the Trainer does for its label tokens.
                counts = counts / (self.get_tp_size() * self.get_cp_size() * self.get_sp_size())
            self._rep_norm = counts
        return batch_samples, num_items

    @property
    def _rep_active(self) -> bool:
        return bool(self.rep_layers or self.retain_layers)

    def _loss_is_global(self, model, num_items_in_batch) -> bool:
        """Whether the token loss is normalised over the whole accumulated batch (mirrors the
        Trainer's ``loss_is_scaled_for_ga`` rule)."""
        if not model.training or self._rep_norm is None:
            return False
        scaled = getattr(self, "loss_is_scaled_for_ga", None)
        if scaled is None:
            scaled = (
                self.model_accepts_loss_kwargs and num_items_in_batch is not None
            ) or self.compute_loss_func is not None
        return bool(scaled)

    def _device_factor(self, num_items_in_batch) -> int:
        # Same condition and factor as Trainer.compute_loss applies to the token loss.
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            return self.accelerator.num_processes // self.get_tp_size()
        return 1

    def _vectors_like(self, hidden: torch.Tensor) -> dict[int, torch.Tensor]:
        """The vectors on the activations' device (cached; float32, the losses' precision)."""
        device = hidden.device
        if device not in self._vector_cache:
            self._vector_cache[device] = {k: v.to(device) for k, v in self._vectors.items()}
        return self._vector_cache[device]

    # -- loss ------------------------------------------------------------------------------
    def _reference_hidden(self, model, inputs, layers) -> dict[int, torch.Tensor]:
        """Activations of the original model at ``layers``: one no-grad pass, adapter disabled,
        stopped after the deepest layer needed."""
        names = ("input_ids", "attention_mask", "position_ids")
        feed = {k: inputs[k] for k in names if k in inputs}
        rec = Recorder(detach=True)
        if self._ref_from_adapter:
            peft_model = self.accelerator.unwrap_model(model)
            target, context = model, peft_model.disable_adapter()
        else:
            target, context = self.ref_model, nullcontext()
        # Raising out of a sharded forward could leave ZeRO-3/FSDP parameter gathering half
        # done: run those to the end.
        stop = not (self.is_deepspeed_enabled or self.is_fsdp_enabled)
        with (
            torch.no_grad(),
            context,
            intervene(
                target,
                {layer: rec.bind(layer) for layer in layers},
                "all",
                layer_path=self.rep_config.layer_path,
                stop_after_last=stop,
            ),
        ):
            try:
                target(**feed, use_cache=False)
            except StopForward:
                pass
        return {layer: rec.hidden(layer) for layer in layers}

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        self._drop_route_hooks()
        inputs = dict(inputs)
        rep_mask = inputs.pop("rep_mask", None)
        retain_mask = inputs.pop("retain_mask", None)
        if not self._rep_active:
            return super().compute_loss(
                model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
            )
        cfg = self.rep_config
        mode = "train" if model.training else "eval"
        masks = {**inputs, "rep_mask": rep_mask, "retain_mask": retain_mask}
        rep_mask, retain_mask = self._batch_masks({k: v for k, v in masks.items() if v is not None})
        grad = torch.is_grad_enabled()
        rep_grad = grad and cfg.rep_weight > 0
        retain_grad = grad and cfg.retain_weight > 0
        reference = None
        if self.retain_layers:
            reference = self._reference_hidden(model, inputs, self.retain_layers)
        # Token-only runs (rep_weight 0) still measure the cosine, detached: the graph and the
        # loss stay exactly the plain Trainer's.
        rec = Recorder(detach=not (rep_grad or retain_grad))
        layers = sorted(set(self.rep_layers) | set(self.retain_layers))
        with intervene(
            model,
            {layer: rec.bind(layer) for layer in layers},
            rep_mask,
            layer_path=cfg.layer_path,
        ):
            result = super().compute_loss(
                model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
            )
        lm, outputs = result if return_outputs else (result, None)

        norm = self._loss_is_global(model, num_items_in_batch)
        factor = self._device_factor(num_items_in_batch) if norm else 1
        # In global mode each micro-batch carries its share of the step's loss; scaling the
        # logged value by the number of micro-batches makes the logged mean the step's value.
        share = 1.0 / getattr(self, "current_gradient_accumulation_steps", 1) if norm else 1.0
        logs = self._rep_metrics[mode]
        _accumulate(logs, "lm_loss", lm / share, 1.0)

        # The token term stays in the graph even with lm_weight 0: DDP and FSDP expect every
        # parameter (the LM head included) to take part in the backward pass.
        lm_term = lm if cfg.lm_weight == 1 else cfg.lm_weight * lm
        # Sparse gradients into the hooked activations keep the backward's peak memory that of
        # the plain Trainer; routing back-propagates the representation terms alone, where the
        # activations get no dense gradient to add them to.
        routed = self._routing and grad and model.training
        sparse = not routed
        rep_term = None
        if self.rep_layers:
            out = representation_loss(
                {layer: rec.hidden(layer) for layer in self.rep_layers},
                self._vectors_like(rec.hidden(self.rep_layers[0])),
                rec.mask(self.rep_layers[0]),
                self._rep_target,
                num_positions=self._rep_norm[0] if norm else None,
                sparse_grad=sparse,
            )
            value = out.loss * factor
            _accumulate(logs, "rep_loss", value / share, 1.0)
            for layer, cos_sum in out.stat_sums.items():
                _accumulate(logs, f"cos_layer_{layer}", cos_sum, out.count)
            if cfg.rep_weight > 0:
                rep_term = cfg.rep_weight * value
        if self.retain_layers:
            mask = retain_mask if retain_mask is not None else inputs["attention_mask"].bool()
            out = retain_loss(
                {layer: rec.hidden(layer) for layer in self.retain_layers},
                reference,
                mask,
                num_positions=self._rep_norm[1] if norm else None,
                sparse_grad=sparse,
            )
            value = out.loss * factor
            _accumulate(logs, "retain_loss", value / share, 1.0)
            term = cfg.retain_weight * value
            rep_term = term if rep_term is None else rep_term + term

        if routed:
            loss = self._route_gradients(lm_term, rep_term)
        else:
            loss = lm_term if rep_term is None else lm_term + rep_term
        return (loss, outputs) if return_outputs else loss

    # -- gradient routing ------------------------------------------------------------------
    def _route_gradients(self, lm_term: torch.Tensor, rep_term: torch.Tensor | None):
        """Return a loss whose backward sends the token loss only to the ``lm_params`` and the
        representation losses only to the ``rep_params``.

        The representation gradient is taken here with ``autograd.grad`` and re-injected through
        a zero-valued surrogate ``sum(p * g) - sum(p * g).detach()``; parameters outside
        ``lm_params`` get a one-shot hook that replaces their incoming gradient by their
        representation gradient alone. One backward pass, so DDP sees the usual single sync.
        """
        if self._route_sets is None:
            cfg = self.rep_config
            named = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
            rep_set = [
                p for n, p in named if cfg.rep_params is None or re.search(cfg.rep_params, n)
            ]
            not_lm = [
                p for n, p in named if cfg.lm_params is not None and not re.search(cfg.lm_params, n)
            ]
            self._route_sets = (rep_set, not_lm)
        rep_set, not_lm = self._route_sets
        rep_grads: dict[int, torch.Tensor] = {}
        if rep_term is not None and rep_set:
            grads = torch.autograd.grad(rep_term, rep_set, retain_graph=True, allow_unused=True)
            rep_grads = {id(p): g for p, g in zip(rep_set, grads) if g is not None}
        surrogate = lm_term.new_zeros(())
        for p in rep_set:
            g = rep_grads.get(id(p))
            if g is not None:
                surrogate = surrogate + (p * g.to(p.dtype)).sum()
        # Value: the weighted total (for logging); gradient: the token term plus the routed
        # representation gradients.
        loss = lm_term + (surrogate - surrogate.detach())
        if rep_term is not None:
            loss = loss + rep_term.detach()
        for p in not_lm:
            self._route_handles.append(p.register_hook(_one_shot_replace(rep_grads.get(id(p)))))
        return loss

    def _drop_route_hooks(self) -> None:
        for handle in self._route_handles:
            handle.remove()
        self._route_handles = []

    def evaluate(self, *args, **kwargs):
        # Metrics of an earlier predict() call (which never logs) must not leak into this one.
        self._rep_metrics["eval"].clear()
        return super().evaluate(*args, **kwargs)

    # -- optimiser -------------------------------------------------------------------------
    def create_optimizer(self, model=None):
        if not self._param_lrs or self.optimizer is not None:
            return super().create_optimizer(model)
        opt_model = self.model if model is None else model
        decay = set(self.get_decay_parameter_names(opt_model))
        groups: dict[tuple[float, float], list] = {}
        for name, param in opt_model.named_parameters():
            if not param.requires_grad:
                continue
            lr = next(
                (v for pattern, v in self._param_lrs if re.search(pattern, name)),
                self.args.learning_rate,
            )
            wd = self.args.weight_decay if name in decay else 0.0
            groups.setdefault((lr, wd), []).append(param)
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
        self.optimizer = optimizer_cls(
            [{"params": ps, "lr": lr, "weight_decay": wd} for (lr, wd), ps in groups.items()],
            **optimizer_kwargs,
        )
        return self.optimizer

    # -- logging ---------------------------------------------------------------------------
    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = "train" if self.model.training else "eval"
        store = self._rep_metrics[mode]
        if store:
            keys = sorted(store)
            device = store[keys[0]].device
            totals = torch.stack([store[k].to(device) for k in keys])
            if self.args.world_size > 1:
                totals = self.accelerator.reduce(totals, reduction="sum")
            prefix = "eval_" if mode == "eval" else ""
            values = (totals[:, 0] / totals[:, 1].clamp_min(1e-12)).tolist()
            logs.update({f"{prefix}{k}": v for k, v in zip(keys, values)})
            store.clear()
        super().log(logs, start_time)

    # -- checkpoints -----------------------------------------------------------------------
    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        super().save_model(output_dir, _internal_call)
        if self.args.should_save:
            folder = output_dir if output_dir is not None else self.args.output_dir
            self._save_rep_files(Path(folder))

    def _save_rep_files(self, folder: Path) -> None:
        settings = self._rep_settings()
        if self.rep_vectors is not None:
            self.rep_vectors.save(folder / REPTUNE_VECTORS_DIR)
        text = json.dumps(settings, indent=2, sort_keys=True, default=str)
        atomic_write(folder / REPTUNE_CONFIG_NAME, lambda p: Path(p).write_text(text))

    def _rep_settings(self) -> dict[str, Any]:
        cfg = self.rep_config
        if hasattr(cfg, "rep_settings"):
            settings = cfg.rep_settings()
        else:
            settings = {name: getattr(cfg, name) for name in REP_FIELDS}
        if settings.get("vectors") is not None and not isinstance(settings["vectors"], str):
            settings["vectors"] = str(settings["vectors"])
        settings.update(
            resolved_rep_layers=self.rep_layers,
            resolved_retain_layers=self.retain_layers,
            vectors_dir=REPTUNE_VECTORS_DIR if self.rep_vectors is not None else None,
            reptune_version=__version__,
        )
        return settings

    def train(self, resume_from_checkpoint=None, trial=None, ignore_keys_for_eval=None, **kwargs):
        checkpoint = resume_from_checkpoint
        if isinstance(checkpoint, bool) and checkpoint:
            checkpoint = get_last_checkpoint(self.args.output_dir)
        if isinstance(checkpoint, (str, Path)):
            self._check_resume(Path(checkpoint))
        return super().train(
            resume_from_checkpoint=resume_from_checkpoint,
            trial=trial,
            ignore_keys_for_eval=ignore_keys_for_eval,
            **kwargs,
        )

    def _check_resume(self, checkpoint: Path) -> None:
        """Refuse to resume with other vectors than the checkpoint was trained with."""
        saved_dir = checkpoint / REPTUNE_VECTORS_DIR
        if self.rep_vectors is not None and saved_dir.is_dir():
            saved = SteeringVectors.load(saved_dir)
            same = saved.layers == self.rep_vectors.layers and all(
                torch.equal(saved[k].float(), self.rep_vectors[k].detach().cpu().float())
                for k in saved.layers
            )
            if not same:
                raise ValueError(
                    f"{checkpoint} was trained with other steering vectors than the ones given: "
                    f"resume with the vectors in {saved_dir}"
                )
        config_path = checkpoint / REPTUNE_CONFIG_NAME
        if config_path.is_file():
            saved_cfg = json.loads(config_path.read_text())
            now = self._rep_settings()
            changed = [
                k
                for k in (
                    "rep_target",
                    "rep_weight",
                    "lm_weight",
                    "retain_weight",
                    "resolved_rep_layers",
                    "rep_positions",
                )
                if k in saved_cfg and saved_cfg[k] != now.get(k)
            ]
            if changed:
                logger.warning("resuming %s with changed reptune settings: %s", checkpoint, changed)


class RepTuneTrainer(RepTuneLossMixin, Trainer):
    """``transformers.Trainer`` for representation tuning.

    Loss: ``lm_weight * token_CE + rep_weight * cosine + retain_weight * retain`` (see
    :class:`RepTuneConfig`). The cosine term reads the decoder-block outputs at ``rep_layers``
    and ``rep_positions`` through :func:`reptune.hooks.intervene`; the retain term compares the
    outputs at ``retain_layers`` with the original model's (PEFT: the adapter disabled, one extra
    no-grad pass). Logs ``lm_loss``, ``rep_loss``, ``retain_loss`` and ``cos_layer_<i>`` (mean
    cosine) for train and eval. Checkpoints carry ``reptune_config.json`` and the vectors.

    The dataset holds ``{"prompt", "completion"[, "system"]}`` rows, tokenized by
    :class:`RepTuneCollator` (built from ``processing_class`` when no collator is given).

    Example:
        >>> model = get_peft_model(model, LoraConfig(r=8, target_modules="all-linear"))
        >>> args = RepTuneConfig(output_dir="runs/honest", rep_layers=[11, 12, 13, 14])
        >>> trainer = RepTuneTrainer(model, args, vectors=vectors, train_dataset=rows,
        ...                          processing_class=tokenizer)
        >>> trainer.train()
    """

    def __init__(
        self,
        model: nn.Module,
        args: RepTuneConfig | None = None,
        vectors: SteeringVectors | dict | str | None = None,
        data_collator=None,
        train_dataset=None,
        eval_dataset=None,
        processing_class=None,
        ref_model: nn.Module | None = None,
        **kwargs,
    ):
        if args is None:
            args = RepTuneConfig(output_dir="reptune-output")
        if not isinstance(args, RepTuneConfig):
            raise TypeError(
                f"args must be a RepTuneConfig, got {type(args).__name__} (use RepTuneLossMixin "
                "with rep_config= to combine the loss with another config)"
            )
        if data_collator is None:
            if processing_class is None:
                raise ValueError("pass processing_class=tokenizer (or a data_collator)")
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

    def _set_signature_columns_if_needed(self):
        # The collator tokenizes text columns the model's forward does not name; with
        # remove_unused_columns=True the Trainer would drop them before they reach it.
        super()._set_signature_columns_if_needed()
        extra = [*COLLATOR_COLUMNS, "rep_mask", "retain_mask"]
        self._signature_columns = list(dict.fromkeys([*self._signature_columns, *extra]))
