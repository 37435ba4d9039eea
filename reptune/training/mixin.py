"""RepTuneLossMixin: the token loss plus a representation loss on hooked activations.

The loss terms are pure functions (:mod:`reptune.training.losses`); this module wires them to the
hook mechanism (:func:`reptune.hooks.intervene`), to the Trainer's gradient-accumulation and
multi-device normalisation, to logging and to checkpoints. The settings are resolved and checked
in :mod:`reptune.training.setup`; which parameters train is :mod:`reptune.training.parameters`,
which loss reaches them :mod:`reptune.training.routing`; the frozen reference pass (retain term,
steer objective) is :mod:`reptune.training.reference`.

Normalisation. transformers' causal-LM loss, given ``num_items_in_batch``, is ``summed CE /
label tokens in the whole accumulated batch`` (all devices when ``average_tokens_across_devices``,
then multiplied by the number of processes because DDP averages gradients), and the Trainer does
not divide it by the accumulation steps. The representation terms follow the same rule per
selected *position*: ``sum over the micro-batch's positions / positions in the accumulated
(all-device) batch``, times the number of processes in the same case. The counts are taken in
:meth:`get_batch_samples`, where the Trainer counts its label tokens. Accumulating 4 x 1 rows, or
running 2 processes x 2 rows, then gives the gradients of one batch of 4. When the Trainer does
not pass ``num_items_in_batch``, every term is a per-micro-batch mean and the Trainer divides the
sum by the accumulation steps, as it does for the token loss.

Scale. The vectors are plain float32 tensors kept outside the model, so ZeRO-3 and FSDP never
shard them. The token term always stays in the graph (weight 0 included), so DDP/FSDP see every
parameter in the backward pass. The one exception is a single process whose trainable weights all
sit at or below the deepest hooked layer with ``lm_weight=0`` (the steer objective on LoRA below
the steered layer): there the forward pass stops after that layer, skipping the later blocks and
the LM head. The gradient reaching the hooked activations is sparse (the selected rows), so the
backward's peak memory stays the plain Trainer's. With transformers 5 checkpointing wraps a
block's ``forward``, not its hooks, so captured outputs carry gradients with reentrant and
non-reentrant checkpointing alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers.trainer_utils import get_last_checkpoint

from ..hooks import Recorder, StopForward, intervene
from ..io import atomic_folder
from ..layers import unwrap_model
from ..version import __version__
from .checkpoints import REPTUNE_VECTORS_DIR, check_resume, write_rep_files
from .config import REP_FIELDS
from .losses import relative_l2_loss, representation_loss, retain_loss, steer_loss
from .parameters import parameter_groups
from .prompt_target import PROMPT_TARGET_KEYS, prompted_targets
from .setup import RepTuneSetup

__all__ = ["RepTuneLossMixin"]

# Training settings saved beside the reptune ones in reptune_config.json.
_TRAINING_KEYS = (
    "learning_rate",
    "num_train_epochs",
    "max_steps",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "seed",
)


def _accumulate(store: dict, key: str, value: torch.Tensor, count) -> None:
    """Add ``(value, count)`` to the running float32 ``(sum, count)`` of a metric.

    Running sums, not lists: nothing grows between two logs, and no host sync per step.
    """
    value = value.detach().float()
    pair = torch.stack([value, torch.as_tensor(count, dtype=torch.float32, device=value.device)])
    store[key] = pair if key not in store else store[key] + pair.to(store[key].device)


class RepTuneLossMixin(RepTuneSetup):
    """The representation-tuning loss for any ``transformers.Trainer`` subclass.

    Put it first in the bases: ``class MyTrainer(RepTuneLossMixin, SFTTrainer)``. Settings come
    from ``args`` when it has the :class:`RepTuneConfig` fields, else from ``rep_config``.
    Without a ``rep_mask`` column in the batch (another collator), positions are derived from the
    labels: the completion starts at the first labelled token. ``compute_loss`` runs the base
    class's loss inside the hooks and adds the weighted representation and retain terms.

    Example:
        >>> class RepSFTTrainer(RepTuneLossMixin, SFTTrainer):
        ...     pass
        >>> trainer = RepSFTTrainer(model=model, args=sft_args, rep_config=rep_args,
        ...                         vectors=vectors, train_dataset=dataset)
    """

    def __init__(self, *args, vectors=None, rep_config=None, ref_model=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._rep_setup(vectors, rep_config, ref_model)

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        batch_samples, num_items = super().get_batch_samples(epoch_iterator, num_batches, device)
        if self._rep_active and batch_samples:
            counts = torch.zeros(2, dtype=torch.long, device=device)
            for batch in batch_samples:
                rep, retain = self._masks(batch)
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
        if hidden.device not in self._vector_cache:
            moved = {k: v.to(hidden.device) for k, v in self._vectors.items()}
            self._vector_cache[hidden.device] = moved
        return self._vector_cache[hidden.device]

    # -- loss ------------------------------------------------------------------------------
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self._router is not None:
            self._router.clear()  # a step that failed before its backward
        inputs = dict(inputs)
        masks = {k: inputs.pop(k, None) for k in ("rep_mask", "retain_mask")}
        prompted = {k: inputs.pop(k) for k in PROMPT_TARGET_KEYS if k in inputs}
        if not self._rep_active:
            return super().compute_loss(
                model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
            )
        cfg, mode = self.rep_config, "train" if model.training else "eval"
        rep_mask, retain_mask = self._masks(
            {**inputs, **{k: v for k, v in masks.items() if v is not None}}
        )
        grad = torch.is_grad_enabled()
        if self._prompt_target:
            reference = prompted_targets(self._reference, model, prompted, rep_mask)
        else:
            reference = self._reference(model, inputs, rep_mask) if self._reference else {}
        # Token-only runs (rep_weight 0) still measure the representation, detached: the graph
        # and the loss stay exactly the plain Trainer's.
        rec = Recorder(detach=not (grad and (cfg.rep_weight > 0 or cfg.retain_weight > 0)))
        layers = sorted(set(self.rep_layers) | set(self.retain_layers))
        early = self._early_stop and model.training
        with intervene(
            model,
            {layer: rec.bind(layer) for layer in layers},
            rep_mask,
            layer_path=cfg.layer_path,
            stop_after_last=early,
        ):
            if early:
                feed = {k: v for k, v in inputs.items() if k != "labels"}
                try:
                    model(**feed, use_cache=False)
                except StopForward:
                    pass
                lm, outputs = None, None
            else:
                result = super().compute_loss(
                    model,
                    inputs,
                    return_outputs=return_outputs,
                    num_items_in_batch=num_items_in_batch,
                )
                lm, outputs = result if return_outputs else (result, None)
        norm = self._loss_is_global(model, num_items_in_batch)
        factor = self._device_factor(num_items_in_batch) if norm else 1
        # In global mode each micro-batch carries its share of the step's loss; scaling the
        # logged value by the number of micro-batches makes the logged mean the step's value.
        share = 1.0 / getattr(self, "current_gradient_accumulation_steps", 1) if norm else 1.0
        logs = self._rep_metrics[mode]
        # The token term stays in the graph even with lm_weight 0: DDP and FSDP expect every
        # parameter (the LM head included) to take part in the backward pass.
        lm_term = None
        if lm is not None:
            _accumulate(logs, "lm_loss", lm / share, 1.0)
            lm_term = lm if cfg.lm_weight == 1 else cfg.lm_weight * lm
        # Sparse gradients into the hooked activations keep the backward's peak memory that of
        # the plain Trainer; with routing or an early stop no dense gradient arrives to add them to.
        routed = self._router is not None and grad and model.training
        sparse = not (routed or early)
        rep_term = None
        if self.rep_layers:
            hidden = {layer: rec.hidden(layer) for layer in self.rep_layers}
            n_rep = self._rep_norm[0] if norm else None
            if self._steer:
                targets = {k: reference[k] for k in self.rep_layers}
                out = steer_loss(hidden, targets, rep_mask, num_positions=n_rep, sparse_grad=sparse)
                stat = "steer_distance_layer_{}"
            elif self._prompt_target:
                out = relative_l2_loss(
                    hidden, reference, rep_mask, num_positions=n_rep, sparse_grad=sparse
                )
                stat = "prompt_distance_layer_{}"
            else:
                vectors = self._vectors_like(hidden[self.rep_layers[0]])
                out = representation_loss(
                    hidden,
                    vectors,
                    rep_mask,
                    cfg.rep_target,
                    num_positions=n_rep,
                    sparse_grad=sparse,
                )
                stat = "cos_layer_{}"
            value = out.loss * factor
            _accumulate(logs, "rep_loss", value / share, 1.0)
            for layer, total in out.stat_sums.items():
                _accumulate(logs, stat.format(layer), total, out.count)
            if cfg.rep_weight > 0:
                rep_term = cfg.rep_weight * value
        if self.retain_layers:
            mask = retain_mask if retain_mask is not None else inputs["attention_mask"].bool()
            out = retain_loss(
                {layer: rec.hidden(layer) for layer in self.retain_layers},
                {layer: reference[layer] for layer in self.retain_layers},
                mask,
                num_positions=self._rep_norm[1] if norm else None,
                sparse_grad=sparse,
            )
            value = out.loss * factor
            _accumulate(logs, "retain_loss", value / share, 1.0)
            term = cfg.retain_weight * value
            rep_term = term if rep_term is None else rep_term + term
        if routed:
            loss = self._router.route(lm_term, rep_term)
        elif lm_term is None:
            loss = rep_term
        else:
            loss = lm_term if rep_term is None else lm_term + rep_term
        return (loss, outputs) if return_outputs else loss

    def training_step(self, *args, **kwargs):
        try:
            return super().training_step(*args, **kwargs)
        finally:
            if self._router is not None:
                self._router.clear()  # the routing hooks live for one step, also on error

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
        groups = parameter_groups(
            opt_model, self._param_lrs, self.args.learning_rate, self.args.weight_decay, decay
        )
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
        self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
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
        folder = Path(output_dir if output_dir is not None else self.args.output_dir)
        if not self.args.should_save or self.is_fsdp_enabled:
            # Other ranks only join the collective gathering; FSDP's sharded saves write from
            # every rank, so they cannot go through one rank's temporary folder.
            super().save_model(output_dir, _internal_call)
            if self.args.should_save:
                write_rep_files(folder, self._rep_settings(), self.rep_vectors)
            return
        # The weights and the reptune files are one folder: a crash leaves the previous save.
        with atomic_folder(folder) as tmp:
            super().save_model(str(tmp), _internal_call)
            write_rep_files(tmp, self._rep_settings(), self.rep_vectors)

    def _rep_settings(self) -> dict[str, Any]:
        cfg = self.rep_config
        if hasattr(cfg, "rep_settings"):
            settings = cfg.rep_settings()
        else:
            settings = {name: getattr(cfg, name) for name in REP_FIELDS}
        if settings.get("vectors") is not None and not isinstance(settings["vectors"], str):
            settings["vectors"] = str(settings["vectors"])
        args = self.args
        settings.update(
            resolved_rep_layers=self.rep_layers,
            resolved_retain_layers=self.retain_layers,
            vectors_dir=REPTUNE_VECTORS_DIR if self.rep_vectors is not None else None,
            reptune_version=__version__,
            # What the card shows about the training run, in the same file.
            base_model=getattr(self, "base_model_spec", None)
            or getattr(unwrap_model(self.model), "name_or_path", None),
            **{k: getattr(args, k) for k in _TRAINING_KEYS if hasattr(args, k)},
        )
        return settings

    def train(self, resume_from_checkpoint=None, trial=None, ignore_keys_for_eval=None, **kwargs):
        checkpoint = resume_from_checkpoint
        if isinstance(checkpoint, bool) and checkpoint:
            checkpoint = get_last_checkpoint(self.args.output_dir)
        if isinstance(checkpoint, (str, Path)):
            check_resume(Path(checkpoint), self.rep_vectors, self._rep_settings())
        # The mode the model came in with (PEFT wrapping may have changed it since).
        was_training = getattr(self, "_model_mode", self.model.training)
        try:
            return super().train(
                resume_from_checkpoint=resume_from_checkpoint,
                trial=trial,
                ignore_keys_for_eval=ignore_keys_for_eval,
                **kwargs,
            )
        finally:
            if self._router is not None:
                self._router.clear()
            self.model.train(was_training)  # hand the model back in the mode it came in
