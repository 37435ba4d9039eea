"""Throughput of representation tuning under an engine: RepTuneTrainer against the plain Trainer.

Run under ``accelerate launch`` with a shipped file (``scripts/gpu_smoke.sh`` does): the same
7B-class Llama built from a config (32 blocks, hidden 4096, MLP 11008; random weights, bf16),
LoRA r=16 on q/k/v/o, the same rows (``--seq`` tokens each), batch and optimiser; first the plain
``transformers.Trainer`` (token loss), then RepTuneTrainer (cosine loss on 7 layers at one prompt
position, the published setting). Each trains ``--steps`` steps; the first two are not timed.

Printed per trainer: median step time, tokens/s over all processes, and MFU, the model FLOPs
per second over the GPUs' peak: ``(4 N + 2 N_trained) * tokens`` (forward 2N, backward through
the frozen weights 2N, weight gradients of the trained ones; attention and the vectors' few
FLOPs left out, about 3% at 512 tokens). Peak bf16 FLOPS come from the GPU's name (H100/H200
989 T, A100 312 T) or ``REPTUNE_PEAK_TFLOPS``. The last line is one JSON object with the
step-time ratio RepTuneTrainer / Trainer.

``--dry_run``: a tiny model on CPU processes in float32, to check the script without a GPU (FSDP2
then needs the test patch in tests/dist/cpu_fsdp.py, applied here).

Example:
    $ accelerate launch --config_file recipes/accelerate/deepspeed_zero3.yaml \\
        --num_processes 8 scripts/bench_scale.py --bf16
    $ accelerate launch --config_file recipes/accelerate/deepspeed_zero3.yaml \\
        --num_processes 2 scripts/bench_scale.py --dry_run
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from transformers import TrainerCallback

ROOT = Path(__file__).resolve().parents[1]
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0}


class StepClock(TrainerCallback):
    """Wall time of each optimiser step, synchronised on GPUs."""

    def __init__(self):
        self.times: list[float] = []

    def _sync(self):
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def on_step_begin(self, args, state, control, **kwargs):
        self._sync()
        self.start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self._sync()
        self.times.append(time.perf_counter() - self.start)


def build_model(opts):
    import transformers
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=opts.vocab,
        hidden_size=opts.hidden,
        intermediate_size=opts.mlp,
        num_hidden_layers=opts.layers,
        num_attention_heads=max(opts.hidden // 128, 4),
        num_key_value_heads=max(opts.hidden // 128, 4),
        max_position_embeddings=opts.seq + 8,
    )
    # Built before the Trainer picks each process's GPU: choose it here (LOCAL_RANK).
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local) if torch.cuda.is_available() else torch.device("cpu")
    dtype = torch.bfloat16 if opts.bf16 else torch.float32
    with torch.device(device):  # random weights made on the GPU: seconds, not minutes
        model = transformers.AutoModelForCausalLM.from_config(config, dtype=dtype)
    lora = LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    return get_peft_model(model, lora)


def run(opts, variant: str) -> dict:
    """Train ``variant`` ("plain" or "reptune") for ``opts.steps`` steps; its timings."""
    from transformers import Trainer, TrainingArguments

    from reptune.training import RepTuneCollator, RepTuneConfig, RepTuneTrainer
    from reptune.vectors import SteeringVectors

    model = build_model(opts)
    n_total = sum(p.numel() for p in model.parameters())
    n_trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    gen = torch.Generator().manual_seed(0)
    rows = [
        {
            "input_ids": torch.randint(1, opts.vocab, (opts.seq,), generator=gen).tolist(),
            "prompt_length": opts.seq - 16,
        }
        for _ in range(opts.batch * opts.steps * 8)
    ]
    layers = list(range(opts.layers // 2 - 3, opts.layers // 2 + 4))
    vectors = SteeringVectors({i: torch.randn(opts.hidden, generator=gen) for i in layers})

    class PadOnly:  # the collator needs only the pad id for pre-tokenized rows
        pad_token_id = 0
        eos_token_id = None

    collate = RepTuneCollator(PadOnly(), rep_positions=-7)
    common = dict(
        output_dir=str(Path(opts.tmp) / variant),
        per_device_train_batch_size=opts.batch,
        max_steps=opts.steps,
        learning_rate=1e-4,
        bf16=opts.bf16,
        report_to=[],
        save_strategy="no",
        logging_steps=opts.steps,
        disable_tqdm=True,
        use_cpu=not torch.cuda.is_available(),
        seed=0,
    )
    if variant == "plain":

        def plain_collate(batch):
            out = collate(batch)
            out.pop("rep_mask")
            return out

        args = TrainingArguments(**common, remove_unused_columns=False)
        trainer = Trainer(model, args, train_dataset=rows, data_collator=plain_collate)
    else:
        args = RepTuneConfig(**common, rep_layers=layers, rep_positions="-7", lm_weight=0.01)
        trainer = RepTuneTrainer(
            model, args, vectors=vectors, train_dataset=rows, data_collator=collate
        )
    clock = StepClock()
    trainer.add_callback(clock)
    trainer.train()
    step = statistics.median(clock.times[2:] or clock.times)
    tokens = opts.batch * opts.seq * args.world_size
    facts = {
        "engine": str(trainer.accelerator.distributed_type),
        "processes": args.world_size,
        "step_s": step,
        "tokens_per_s": tokens / step,
        "params": n_total,
        "trained_params": n_trained,
        "peak_gpu_gb": torch.cuda.max_memory_allocated() / 2**30
        if torch.cuda.is_available()
        else None,
    }
    flops = (4 * n_total + 2 * n_trained) * tokens / step
    peak = _peak_flops(args.world_size)
    facts["mfu"] = flops / peak if peak else None
    del trainer, model
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    return facts


def _peak_flops(gpus: int) -> float | None:
    if not torch.cuda.is_available():
        return None
    env = os.environ.get("REPTUNE_PEAK_TFLOPS")
    name = torch.cuda.get_device_name()
    tflops = float(env) if env else next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
    return None if tflops is None else tflops * 1e12 * gpus


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", default="", help="label printed with the results")
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=4096)
    parser.add_argument("--mlp", type=int, default=11008)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--batch", type=int, default=4, help="per process")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--dry_run", action="store_true", help="tiny model on CPU processes")
    parser.add_argument("--tmp", default="/tmp/reptune-bench-scale")
    opts = parser.parse_args(argv)
    fsdp_on_cpu = False
    if opts.dry_run:
        opts.layers, opts.hidden, opts.mlp, opts.vocab = 8, 64, 128, 512
        opts.seq, opts.batch, opts.steps, opts.bf16 = 32, 2, 4, False
        torch.set_num_threads(1)
        fsdp_on_cpu = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
        if fsdp_on_cpu:
            sys.path.insert(0, str(ROOT / "tests" / "dist"))
            from cpu_fsdp import keep_fsdp_on_cpu
    from accelerate.state import AcceleratorState, PartialState

    results = {}
    for variant in ("plain", "reptune"):
        if results:  # one engine per accelerate state: the second trainer gets a fresh one
            AcceleratorState._reset_state()
        with keep_fsdp_on_cpu() if fsdp_on_cpu else nullcontext():
            results[variant] = run(opts, variant)
    if PartialState().is_main_process:
        for variant, facts in results.items():
            print(f"{opts.engine or 'run'} {variant}: " + json.dumps(facts))
        summary = {
            "engine": opts.engine,
            "step_time_ratio_reptune_vs_trainer": results["reptune"]["step_s"]
            / results["plain"]["step_s"],
            "tokens_per_s": results["reptune"]["tokens_per_s"],
            "mfu": results["reptune"]["mfu"],
            "trainer_mfu": results["plain"]["mfu"],
        }
        print(json.dumps(summary))
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
