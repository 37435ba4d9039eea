"""Train a tiny LoRA model for a few steps and dump its logs and adapter weights.

Run as one process (``python ddp_train.py OUT BATCH [OBJECTIVE]``) or under
``python -m torch.distributed.run --standalone --nproc_per_node 2 ddp_train.py OUT BATCH``; the
test compares the two. ``BATCH`` is the per-device batch size; ``OBJECTIVE`` is ``cosine`` (the
published loss plus retain, the default), ``steer`` (the steer objective), ``prompt`` (the prompt
objective) or ``prompt+steer`` (its combined target).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
from rt_common import make_args, make_rows, make_tokenizer, random_vectors, sequential, tiny_model
from safetensors.torch import save_file

from reptune.training import RepTuneTrainer


def main(out: str, batch: int, objective: str = "cosine") -> None:
    torch.set_num_threads(1)
    out_dir = Path(out)
    if objective == "steer":
        terms = dict(rep_target="steer", steer_coefficient=2.0, coefficient_unit="raw")
    elif objective == "prompt":
        terms = dict(rep_target="prompt", target_instruction="Answer with a happy tone.")
    elif objective == "prompt+steer":
        terms = dict(
            rep_target="prompt",
            target_instruction="Answer with a happy tone.",
            steer_coefficient=2.0,
            coefficient_unit="raw",
        )
    else:
        terms = dict(retain_weight=0.3, retain_layers=[3])
    args = make_args(
        out_dir / "run",
        per_device_train_batch_size=batch,
        max_steps=3,
        learning_rate=1e-2,
        rep_layers=[1, 2],
        rep_positions="completion",
        **terms,
        # only under torchrun: an explicit backend makes accelerate expect a process group
        ddp_backend="gloo" if int(os.environ.get("WORLD_SIZE", "1")) > 1 else None,
    )
    trainer = sequential(
        RepTuneTrainer(
            tiny_model(init_lora_weights=False),
            args,
            vectors=random_vectors(32, range(4)),
            train_dataset=make_rows(12),
            processing_class=make_tokenizer(),
        )
    )
    trainer.train()
    if trainer.args.process_index == 0:
        logs = [h for h in trainer.state.log_history if "loss" in h]
        (out_dir / "logs.json").write_text(
            json.dumps({"world_size": trainer.args.world_size, "logs": logs})
        )
        weights = {
            n: p.detach().contiguous()
            for n, p in trainer.model.named_parameters()
            if p.requires_grad
        }
        save_file(weights, str(out_dir / "adapter.safetensors"))
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
        # Interpreter shutdown can still meet a live gloo thread and abort ("terminate called
        # without an active exception", about one run in twenty): the results are written, so
        # leave without running the C++ static destructors.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), *sys.argv[3:])
