"""Train a tiny model for a few steps under whatever engine the launcher set up, and dump what
the tests compare: per-step logs, the saved model, and proof of how the engine holds parameters.

One process (the reference, no engine)::

    python engine_train.py OUT --model DIR --variant lora --batch 4

Two processes under an accelerate config (DeepSpeed ZeRO-2/3 or FSDP2), or under torchrun with
``--deepspeed_json ds.json`` (transformers' ``TrainingArguments(deepspeed=...)`` route)::

    accelerate launch --config_file zero3.yaml --num_processes 2 engine_train.py OUT \\
        --model DIR --variant lora --batch 2

``--variant lora``: a LoRA adapter (loaded from ``DIR/adapter``) with the cosine and retain
losses; ``--variant layers``: full fine-tuning of layers 1-2 with a learning rate of their own for
the attention v/o projections, cosine and retain losses (the frozen reference model is loaded
from ``DIR`` like the trained one). ``--save_steps N`` writes checkpoints; ``--resume CKPT``
continues from one. FSDP2 runs on CPU through :func:`cpu_fsdp.keep_fsdp_on_cpu`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch
from cpu_fsdp import keep_fsdp_on_cpu
from rt_common import make_rows, random_vectors, sequential
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
from transformers.integrations import is_deepspeed_zero3_enabled

from reptune.training import RepTuneConfig, RepTuneTrainer

LOG_KEYS = ("loss", "grad_norm", "lm_loss", "rep_loss", "retain_loss", "cos_layer_1", "cos_layer_2")


class ShardingProbe(TrainerCallback):
    """Records, at the first step, how the engine holds the trained model's parameters."""

    def __init__(self, trainer):
        self.trainer = trainer
        self.facts: dict = {}

    def on_step_end(self, args, state, control, **kwargs):
        if not self.facts:
            self.facts = engine_facts(self.trainer)


def engine_facts(trainer) -> dict:
    """What a test needs to tell DeepSpeed ZeRO, FSDP2 and plain (or DDP) training apart."""
    from torch.distributed.tensor import DTensor

    acc = trainer.accelerator
    params = list(trainer.model_wrapped.parameters())
    facts = {
        "world_size": trainer.args.world_size,
        "distributed_type": str(acc.distributed_type),
        "is_deepspeed_enabled": trainer.is_deepspeed_enabled,
        "is_fsdp_enabled": trainer.is_fsdp_enabled,
        "wrapper": type(trainer.model_wrapped).__name__,
        "n_params": len(params),
        "n_dtensor": sum(isinstance(p, DTensor) for p in params),
        # ZeRO-3: the full size lives in ds_numel, the local tensor is empty (shape (0,)).
        "n_ds_partitioned": sum(
            hasattr(p, "ds_numel") and p.ds_numel > 0 and p.numel() == 0 for p in params
        ),
        "optimizer": type(getattr(trainer.optimizer, "optimizer", trainer.optimizer)).__name__,
    }
    if trainer.is_deepspeed_enabled:
        engine = trainer.model_wrapped
        facts["zero_stage"] = engine.zero_optimization_stage()
        facts["gather_16bit_on_save"] = engine.zero_gather_16bit_weights_on_model_save()
        # ZeRO-2: every rank owns a slice of the flat fp32 master weights (and their moments).
        optimizer = engine.optimizer
        flat = getattr(optimizer, "single_partition_of_fp32_groups", None)
        if flat is not None:
            facts["zero2_local_numel"] = sum(t.numel() for t in flat)
        facts["trainable_numel"] = sum(
            getattr(p, "ds_numel", p.numel()) for p in params if p.requires_grad
        )
    return facts


def build(model_dir: Path, variant: str, args: RepTuneConfig):
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    ref_model = None
    if variant == "lora":
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, model_dir / "adapter", is_trainable=True)
    elif is_deepspeed_zero3_enabled():
        # ZeRO-3 partitions the model as it loads: the frozen reference is loaded the same way
        # (a copy of partitioned weights would hold nothing).
        ref_model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    return model, ref_model


def train(args, model_dir: Path, opts, save_dir: Path, checkpoint=None):
    """Train (or resume), save to ``save_dir``; returns the engine facts and the step logs."""
    model, ref_model = build(model_dir, opts.variant, args)
    trainer = sequential(
        RepTuneTrainer(
            model,
            args,
            vectors=random_vectors(model.config.hidden_size, range(4)),
            train_dataset=make_rows(4 * opts.steps),
            processing_class=AutoTokenizer.from_pretrained(model_dir),
            ref_model=ref_model,
        )
    )
    probe = ShardingProbe(trainer)
    trainer.add_callback(probe)
    trainer.train(resume_from_checkpoint=None if checkpoint is None else str(checkpoint))
    trainer.save_model(str(save_dir))
    logs = [
        {k: h[k] for k in ("step", *LOG_KEYS) if k in h}
        for h in trainer.state.log_history
        if "loss" in h
    ]
    return probe.facts, logs


def main(argv=None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--model", required=True)
    parser.add_argument("--variant", choices=["lora", "layers"], default="lora")
    parser.add_argument("--batch", type=int, default=4, help="per-device batch size")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--save_steps", type=int, default=0)
    parser.add_argument(
        "--deepspeed_json", default=None, help="TrainingArguments(deepspeed=FILE) (torchrun)"
    )
    parser.add_argument(
        "--resume", type=int, default=0, help="then resume from the checkpoint of this step"
    )
    opts = parser.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(opts.out)
    model_dir = Path(opts.model)
    extra = {}
    if opts.variant == "layers":
        extra = dict(train_layers=[1, 2], param_lrs=[r"self_attn\.(v|o)_proj=5e-3"])
    args = RepTuneConfig(
        output_dir=str(out / "run"),
        # CI: CPU processes over gloo; scripts/gpu_smoke.sh runs the same file on GPUs.
        use_cpu=not torch.cuda.is_available(),
        report_to=[],
        disable_tqdm=True,
        logging_steps=1,
        seed=0,
        max_grad_norm=1.0,
        per_device_train_batch_size=opts.batch,
        max_steps=opts.steps,
        learning_rate=1e-3,
        rep_layers=[1, 2],
        rep_positions="completion",
        lm_weight=0.5,
        retain_weight=0.3,
        retain_layers=[2],
        save_strategy="steps" if opts.save_steps else "no",
        save_steps=opts.save_steps or 500,
        save_only_model=False,
        # CPU processes only: an explicit backend makes accelerate expect a process group
        ddp_backend="gloo"
        if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()
        else None,
        deepspeed=opts.deepspeed_json,
        **extra,
    )
    result = {}
    with keep_fsdp_on_cpu():
        result["facts"], result["logs"] = train(args, model_dir, opts, out / "final")
    if opts.resume:
        # A fresh model and trainer continue from a checkpoint of the run above. accelerate
        # allows one engine plugin per process state: start the second trainer from a new one
        # (the process group stays).
        from accelerate.state import AcceleratorState

        AcceleratorState._reset_state()
        checkpoint = out / "run" / f"checkpoint-{opts.resume}"
        with keep_fsdp_on_cpu():
            _, result["resumed"] = train(args, model_dir, opts, out / "resumed", checkpoint)
    if args.process_index == 0:
        (out / "result.json").write_text(json.dumps(result))
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
        # Interpreter shutdown can still meet a live gloo thread and abort: the results are
        # written, so leave without running the C++ static destructors.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


if __name__ == "__main__":
    main()
