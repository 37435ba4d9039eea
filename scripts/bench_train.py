"""Step time and peak memory of RepTuneTrainer against the plain Trainer.

Same LoRA model (built from a config: 12 Llama blocks by default), same rows, batch, sequence
length and optimiser. Variants: ``plain`` (transformers.Trainer); ``rep`` (RepTuneTrainer, the
published cosine loss on 7 layers around L/2 at one prompt position); ``retain`` (the cosine
loss plus the retain loss on the layers of ``--window`` around L/2: one extra no-grad pass with
the adapters off, stopped after its deepest layer); ``steer`` (the steer objective on the same
``--window`` layers at every position, its targets from the same kind of pass). The token loss
stays on in every variant (weight 0.01), so every variant runs the whole model.

Time: the three trainers live in one process and take their optimiser steps in turn (batch
preparation, forward, backward, optimiser step: everything in which they differ), so a change in
the machine's load hits every variant alike; the figure is the median step. On a CPU the clock is
the process's CPU time (one thread): wall time on a shared machine measures the neighbours. On a
GPU it is wall time, synchronised.

Peak memory: each variant runs ``Trainer.train()`` in its own process. On a GPU, the CUDA
allocator's peak minus what was allocated before training; on a CPU, which keeps no allocator
statistics, the peak of the bytes allocated during the last step, read from the profiler's memory
events (weights and optimiser state exist before that step and are the same for every variant).
The bytes autograd saves for backward in that step are reported as well.

The floor of the retain and steer terms is the plain step plus one no-grad forward pass through
the blocks up to the deepest term layer: ``floor_ratio_steer`` times that reference pass alone,
in the same rotation, and ``steer_over_floor`` is what the steer objective costs above it.

The newer objectives (``scripts/_bench_objectives.py``): ``prompt`` (the prompt objective on the
``--window`` layers; its floor is the plain step plus its reference pass alone on the prompted
input, ``--instruction`` words longer), ``learned_lm`` and ``learned_pref`` (one step of a learned
vector on the same layers with the model frozen, token loss or RePS preference loss; their floor
is the no-grad forward passes the step needs). Each has ``time_ratio_<v>``, ``mem_ratio_<v>``,
``floor_ratio_<v>`` (the floor over the plain step) and ``<v>_over_floor``.

The ratios are printed last, as one JSON object on the last line.

Example:
    $ python scripts/bench_train.py                   # CPU, about 2 minutes
    $ python scripts/bench_train.py --device cuda --layers 24 --hidden 1024 --seq 512
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import time
from contextlib import ExitStack

from _bench_objectives import (
    FLOORS,
    LEARNED,
    build_learner,
    build_prompt,
    floor_step,
    learner_batches,
    newer_objectives,
)

VARIANTS = ("plain", "rep", "retain", "steer", "prompt", *LEARNED)


def window_layers(opts) -> list[int]:
    """The ``--window`` layers around L/2 (retain and steer terms)."""
    first = opts.layers // 2 - opts.window // 2
    return list(range(first, first + opts.window))


def build(opts, variant, model=None):
    """A trainer of ``variant`` (and the model, built once and copied for the others)."""
    import torch
    import transformers
    from peft import LoraConfig, get_peft_model
    from transformers import Trainer, TrainingArguments

    from reptune.training import RepTuneCollator, RepTuneConfig, RepTuneTrainer
    from reptune.vectors import SteeringVectors

    if model is None:
        torch.manual_seed(0)
        heads = max(opts.hidden // 64, 4)
        config = transformers.LlamaConfig(
            vocab_size=opts.vocab,
            hidden_size=opts.hidden,
            intermediate_size=opts.hidden * 8 // 3,
            num_hidden_layers=opts.layers,
            num_attention_heads=heads,
            num_key_value_heads=heads,
            max_position_embeddings=opts.seq + 8,
        )
        model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model = get_peft_model(
            model,
            LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]),
        )
    gen = torch.Generator().manual_seed(0)
    rows = [
        {
            "input_ids": torch.randint(1, opts.vocab, (opts.seq,), generator=gen).tolist(),
            "prompt_length": opts.seq - 16,
        }
        for _ in range(opts.batch * (opts.steps + 2))
    ]
    first = opts.layers // 2 - 3
    layers = list(range(first, first + 7))
    window = window_layers(opts)
    every = sorted(set(layers) | set(window))
    vectors = SteeringVectors({i: torch.randn(opts.hidden, generator=gen) for i in every})
    vectors = vectors.with_residual_norms({i: 1.0 for i in every})

    class PadOnly:  # the collator needs only the pad id for pre-tokenized rows
        pad_token_id = 0
        eos_token_id = None

    retain, steer = variant == "retain", variant == "steer"
    collate = RepTuneCollator(
        PadOnly(),
        rep_positions="all" if steer else -7,
        retain_positions="all" if retain else None,
    )
    common = dict(
        output_dir=os.path.join(opts.tmp, variant),
        per_device_train_batch_size=opts.batch,
        max_steps=opts.steps,
        learning_rate=1e-4,
        report_to=[],
        save_strategy="no",
        logging_steps=10_000,
        disable_tqdm=True,
        use_cpu=opts.device == "cpu",
        seed=0,
    )
    if variant in LEARNED:
        model = model.to(opts.device)  # the learner keeps the device its model is on
        return build_learner(opts, model, variant, window), model
    if variant == "prompt":
        return build_prompt(opts, model, window, common), model
    if variant == "plain":

        def plain_collate(batch):
            out = collate(batch)
            out.pop("rep_mask")
            return out

        args = TrainingArguments(**common, remove_unused_columns=False)
        return Trainer(model, args, train_dataset=rows, data_collator=plain_collate), model
    if steer:
        args = RepTuneConfig(
            **common,
            rep_layers=window,
            rep_positions="all",
            rep_target="steer",
            steer_coefficient=0.2,
        )
    else:
        args = RepTuneConfig(
            **common,
            rep_layers=layers,
            rep_positions="-7",
            retain_weight=1.0 if retain else 0.0,
            retain_layers=window if retain else None,
        )
    trainer = RepTuneTrainer(
        model, args, vectors=vectors, train_dataset=rows, data_collator=collate
    )
    return trainer, model


def time_variants(opts) -> dict:
    """Median step time of each variant and floor, all taking turns step by step."""
    import torch

    torch.set_num_threads(opts.threads)
    device = torch.device(opts.device)
    runners, base, stack = {}, None, ExitStack()
    for variant in VARIANTS:
        model = None if base is None else copy.deepcopy(base).to(device)
        built, model = build(opts, variant, model)
        base = base if base is not None else copy.deepcopy(model)
        if variant in LEARNED:
            runners[variant] = (built, learner_batches(opts, built))
            stack.enter_context(built.session())
            continue
        built.create_optimizer_and_scheduler(num_training_steps=opts.steps)
        built.current_gradient_accumulation_steps = 1
        built.model.to(device).train()
        runners[variant] = (built, iter(built.get_train_dataloader()))

    def clocked(fn):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - wall, time.process_time() - cpu

    def trainer_step(trainer, batches):
        samples, n_items = trainer.get_batch_samples(batches, 1, trainer.args.device)
        trainer.training_step(trainer.model, samples[0], n_items)
        trainer.optimizer.step()
        trainer.lr_scheduler.step()
        trainer.model.zero_grad()

    def reference_only(trainer, batches, prompted):
        # The objective's reference pass alone, on a batch of the same rows.
        from reptune.training.prompt_target import prompted_targets

        inputs = {k: v.to(device) for k, v in next(batches).items()}
        model, mask = trainer.model, inputs["rep_mask"]
        if prompted:
            return lambda: prompted_targets(trainer._reference, model, inputs, mask)
        return lambda: trainer._reference(model, inputs, mask)

    floor_batches = {
        "reference": iter(runners["steer"][0].get_train_dataloader()),
        "reference_prompt": iter(runners["prompt"][0].get_train_dataloader()),
        **{f"floor_{v}": learner_batches(opts, runners[v][0]) for v in LEARNED},
    }

    def run(name):
        if name in ("reference", "reference_prompt"):
            trainer = runners["steer" if name == "reference" else "prompt"][0]
            return clocked(reference_only(trainer, floor_batches[name], name != "reference"))
        if name.startswith("floor_"):
            learner = runners[name[len("floor_") :]][0]
            rows, _ = next(floor_batches[name])
            return clocked(lambda: floor_step(learner, rows))
        built, batches = runners[name]
        if name in LEARNED:
            rows, reference = next(batches)
            return clocked(lambda: built.step(rows, 0.2, reference))
        return clocked(lambda: trainer_step(built, batches))

    timed = (*VARIANTS, *FLOORS.values())
    times = {name: [] for name in timed}
    with stack:
        for step in range(opts.steps):
            for name in timed if step % 2 == 0 else timed[::-1]:
                measured = run(name)
                if step >= opts.warmup:
                    times[name].append(measured)
    clock = 1 if device.type == "cpu" else 0
    return {
        name: {
            "ms": 1000 * statistics.median(t[clock] for t in times[name]),
            "wall_ms": 1000 * statistics.median(t[0] for t in times[name]),
        }
        for name in timed
    }


def memory_of(opts) -> dict:
    """Train ``opts.variant`` for a few steps in this process; peak memory of the last one."""
    import torch
    from transformers import TrainerCallback

    torch.set_num_threads(opts.threads)
    device = torch.device(opts.device)
    opts.steps = 3
    trainer, _ = build(opts, opts.variant)

    class LastStep(TrainerCallback):
        def __init__(self):
            self.saved: dict[int, int] = {}
            self.contexts = []
            self.profiler = None

        def pack(self, tensor):
            storage = tensor.untyped_storage()
            self.saved[storage.data_ptr()] = storage.nbytes()
            return tensor

        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == opts.steps - 1:
                self.begin()

        def on_step_end(self, args, state, control, **kwargs):
            self.end()

        def begin(self):
            self.contexts = [torch.autograd.graph.saved_tensors_hooks(self.pack, lambda t: t)]
            if device.type == "cpu":
                self.profiler = torch.profiler.profile(
                    activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True
                )
                self.contexts.append(self.profiler)
            elif device.type == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                self.base = torch.cuda.memory_allocated()
            for context in self.contexts:
                context.__enter__()

        def end(self):
            for context in reversed(self.contexts):
                context.__exit__(None, None, None)
            self.contexts = []

        def peak_mb(self) -> float:
            if device.type == "cuda":
                return (torch.cuda.max_memory_allocated() - self.base) / 2**20
            # "Total Allocated" counts the bytes allocated since the profiler started.
            trace = os.path.join(opts.tmp, f"{opts.variant}-trace.json")
            self.profiler.export_chrome_trace(trace)
            with open(trace) as f:
                events = json.load(f)["traceEvents"]
            os.remove(trace)
            totals = [
                e["args"]["Total Allocated"]
                for e in events
                if e.get("name") == "[memory]" and e["args"].get("Device Type") == 0
            ]
            return max(totals, default=0) / 2**20

    last = LastStep()
    if opts.variant in LEARNED:
        batches = learner_batches(opts, trainer)
        with trainer.session():
            for step in range(opts.steps):
                rows, reference = next(batches)
                if step == opts.steps - 1:
                    last.begin()
                trainer.step(rows, 0.2, reference)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                last.end()
    else:
        trainer.add_callback(last)
        trainer.train()
    return {"peak_mb": last.peak_mb(), "saved_mb": sum(last.saved.values()) / 2**20}


def _child(opts, argv, **extra) -> dict:
    flags = [f"--{k}={v}" for k, v in extra.items()]
    proc = subprocess.run(
        [sys.executable, __file__, *argv, *flags], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        sys.exit(f"benchmark child failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=24, help="steps per variant (timing)")
    parser.add_argument("--warmup", type=int, default=4, help="first steps left untimed")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--window", type=int, default=3, help="layers around L/2 of the retain and steer terms"
    )
    parser.add_argument(
        "--instruction", type=int, default=32, help="words of the prompt objective's instruction"
    )
    parser.add_argument("--tmp", default="/tmp/reptune-bench")
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--part", choices=["time", "memory"], help=argparse.SUPPRESS)
    opts = parser.parse_args(argv)
    if opts.layers < 12:
        parser.error("the benchmark needs a model with at least 12 layers (7 target layers)")
    if opts.part == "time":
        print(json.dumps(time_variants(opts)), flush=True)
        return 0
    if opts.part == "memory":
        print(json.dumps(memory_of(opts)), flush=True)
        return 0

    argv = list(argv if argv is not None else sys.argv[1:])
    memory = {v: _child(opts, argv, part="memory", variant=v) for v in VARIANTS}
    timing = _child(opts, argv, part="time")
    for variant in VARIANTS:
        print(
            f"{variant:>12}: {timing[variant]['ms']:8.1f} ms/step "
            f"({'CPU time' if opts.device == 'cpu' else 'wall'}; wall "
            f"{timing[variant]['wall_ms']:.1f} ms), peak {memory[variant]['peak_mb']:.1f} MB, "
            f"saved for backward {memory[variant]['saved_mb']:.1f} MB"
        )
    for name in FLOORS.values():
        print(f"{name} alone: {timing[name]['ms']:.1f} ms")
    plain_ms, plain_mb = timing["plain"]["ms"], memory["plain"]["peak_mb"]
    summary = {
        "device": opts.device,
        "model": f"llama {opts.layers}x{opts.hidden}, LoRA r8 q/k/v/o",
        "batch": opts.batch,
        "seq": opts.seq,
        "rep_layers": 7,
        "retain_and_steer_layers": opts.window,
        "clock": "process CPU time" if opts.device == "cpu" else "wall time",
        **{f"{v}_ms": round(timing[v]["ms"], 2) for v in VARIANTS[:4]},
        **{f"{v}_peak_mb": round(memory[v]["peak_mb"], 2) for v in VARIANTS[:4]},
        "time_ratio": round(timing["rep"]["ms"] / plain_ms, 4),
        "mem_ratio": round(memory["rep"]["peak_mb"] / plain_mb, 4),
        "time_ratio_retain": round(timing["retain"]["ms"] / plain_ms, 4),
        "mem_ratio_retain": round(memory["retain"]["peak_mb"] / plain_mb, 4),
        "time_ratio_steer": round(timing["steer"]["ms"] / plain_ms, 4),
        "mem_ratio_steer": round(memory["steer"]["peak_mb"] / plain_mb, 4),
        "reference_ms": round(timing["reference"]["ms"], 2),
        "reference_depth": f"{max(window_layers(opts)) + 1}/{opts.layers} blocks",
        "floor_ratio_steer": round((plain_ms + timing["reference"]["ms"]) / plain_ms, 4),
        "steer_over_floor": round(
            timing["steer"]["ms"] / (plain_ms + timing["reference"]["ms"]), 4
        ),
        "instruction_words": opts.instruction,
        **newer_objectives(timing, memory, plain_ms, plain_mb),
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
