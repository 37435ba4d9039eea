"""Steered generation vs plain generation, and a batched coefficient sweep vs a sequential one.

1. ``generate`` (greedy, KV cache, exactly ``--new-tokens`` new tokens) of the plain model and of
   the model steered at layers ``0 .. --steer-layers - 1`` at every position with one scalar
   coefficient: the time ratio steered / plain.
2. An 8-coefficient sweep as one batch of 8 rows (one coefficient per row) vs 8 runs of one row.

Runs alternate (plain, steered, steered, plain, ...) and each ratio is the median over repeats,
from wall time and from process CPU time, so drift on a shared machine hits both sides alike.
Model, vectors and prompts come from fixed seeds (no download). The last line is one JSON object.

    python scripts/bench_generate.py                       # CPU, 2 threads
    python scripts/bench_generate.py --threads 1           # a busy machine (see below)
    python scripts/bench_generate.py --profile             # + host cost of one decode step
    python scripts/bench_generate.py --device cuda --dtype bfloat16 --preset llama-1b \\
        --steer-layers all --batch 32 --no-sweep           # tokens/s on a GPU

On a machine whose cores other processes keep busy, two threads wait on each other and one
generate can take ten times longer than with one thread; measure there with ``--threads 1``.
"""

from __future__ import annotations

import argparse
import cProfile
import inspect
import json
import pstats
import statistics
import time

import torch
from _bench_utils import llama
from transformers import LlamaConfig, LlamaForCausalLM

from reptune import hooks
from reptune.steering import SteeredModel
from reptune.vectors import SteeringVectors

#: A 1B-class Llama (the shape of Llama-3.2-1B), built from its config with random weights.
LLAMA_1B = dict(
    hidden_size=2048,
    intermediate_size=8192,
    num_hidden_layers=16,
    num_attention_heads=32,
    num_key_value_heads=8,
    vocab_size=128256,
    tie_word_embeddings=True,
)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--preset", choices=["small", "llama-1b"], default="small")
    p.add_argument("--layers", type=int, default=24, help="small preset only")
    p.add_argument("--hidden", type=int, default=576, help="small preset only")
    p.add_argument("--vocab", type=int, default=32000, help="small preset only")
    p.add_argument("--steer-layers", default="12", help="steer layers 0..N-1, or 'all'")
    p.add_argument("--coefficient", type=float, default=4.0)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--prompt-length", type=int, default=32)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--repeats", type=int, default=7, help="interleaved plain/steered pairs")
    p.add_argument("--sweep-repeats", type=int, default=3)
    p.add_argument("--no-sweep", action="store_true")
    p.add_argument("--profile", action="store_true", help="cProfile one steered generate")
    p.add_argument("--threads", type=int, default=2, help="CPU threads (torch.set_num_threads)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    return p.parse_args(argv)


def build(args):
    """The model (seed 0), its steered wrapper (vectors from seed 1) and the prompts (seed 2)."""
    if args.preset == "llama-1b":
        torch.manual_seed(0)
        model = LlamaForCausalLM(LlamaConfig(**LLAMA_1B, max_position_embeddings=2048))
        model.generation_config.pad_token_id = 0
    else:
        model = llama(args.layers, args.hidden, args.vocab, seed=0)
    model = model.to(args.device, getattr(torch, args.dtype)).eval()
    config = model.config
    n_layers = config.num_hidden_layers
    count = n_layers if args.steer_layers == "all" else min(int(args.steer_layers), n_layers)
    g = torch.Generator().manual_seed(1)
    vectors = SteeringVectors(
        {layer: torch.randn(config.hidden_size, generator=g) for layer in range(count)}
    )
    steered = SteeredModel(
        model, vectors, coefficient=args.coefficient, positions="all", coefficient_unit="raw"
    )
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(2, config.vocab_size, (args.batch, args.prompt_length), generator=g)
    ids = ids.to(args.device)
    prompts = dict(input_ids=ids, attention_mask=torch.ones_like(ids))
    return model, steered, prompts, count


def timer(device: str):
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def timed(fn) -> tuple[float, float]:
        """(wall seconds, process CPU seconds) of one call."""
        sync()
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        sync()
        return time.perf_counter() - wall, time.process_time() - cpu

    return timed


def interleaved(timed, first, second, repeats: int) -> dict:
    """Median times of ``first`` and ``second`` run in alternating order, and the median of the
    per-pair ratios second / first (wall and CPU)."""
    runs = {"first": [], "second": []}
    for r in range(repeats):
        order = ("first", "second") if r % 2 == 0 else ("second", "first")
        for name in order:
            runs[name].append(timed(first if name == "first" else second))
    out = {}
    for i, kind in enumerate(("wall", "cpu")):
        a = [t[i] for t in runs["first"]]
        b = [t[i] for t in runs["second"]]
        out[kind] = (statistics.median(a), statistics.median(b))
        out[f"{kind}_ratio"] = statistics.median(y / x for x, y in zip(a, b))
    return out


def profile_step(generate, steps: int) -> dict:
    """Host time (microseconds per forward call) in the per-call code of the hooks (cProfile)."""
    prof = cProfile.Profile()
    prof.enable()
    generate()
    prof.disable()
    tracker_line = inspect.getsourcelines(hooks._CallTracker.__call__)[1]
    rows, entry = {}, 0.0
    for (path, line, name), (_, calls, _, cumtime, _) in pstats.Stats(prof).stats.items():
        if path.endswith(("reptune/hooks.py", "reptune/positions.py", "reptune/interventions.py")):
            key = f"{path.rsplit('/', 1)[1]}:{line}({name})"
            rows[key] = (calls / steps, cumtime / steps * 1e6)
            if path.endswith("hooks.py") and (name == "hook" or line == tracker_line):
                entry += cumtime / steps * 1e6
    print(f"host time per forward call in the hooks ({steps} calls, cProfile-inflated):")
    for key, (calls, cum) in sorted(rows.items(), key=lambda kv: -kv[1][1])[:10]:
        print(f"{calls:6.1f} calls {cum:9.1f} us  {key}")
    return {"profiled_hook_us_per_call": round(entry, 1)}


def main(argv=None):
    args = parse_args(argv)
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    model, steered, prompts, count = build(args)
    n = args.new_tokens
    gen = dict(max_new_tokens=n, min_new_tokens=n, do_sample=False, use_cache=True)
    timed = timer(args.device)

    def plain():
        return model.generate(**prompts, **gen)

    def with_steering():
        return steered.generate(**prompts, **gen)

    with torch.no_grad():
        same = torch.equal(plain(), with_steering())  # warm-up
        if same:
            raise SystemExit("steering left the generated tokens unchanged: raise --coefficient")
        result = interleaved(timed, plain, with_steering, args.repeats)
        (wall_plain, wall_steer), (cpu_plain, cpu_steer) = result["wall"], result["cpu"]
        tokens = args.batch * n
        print(f"{count} of {model.config.num_hidden_layers} layers steered; batch {args.batch}")
        rows = (("plain", wall_plain, cpu_plain), ("steered", wall_steer, cpu_steer))
        for name, wall, cpu in rows:
            print(f"{name:8} {tokens / wall:9.1f} tok/s  ({wall:.3f} s, cpu {cpu:.3f} s)")
        report = {
            "steered_over_plain_wall": round(result["wall_ratio"], 4),
            "steered_over_plain_cpu": round(result["cpu_ratio"], 4),
            "plain_tokens_per_s": round(tokens / wall_plain, 1),
            "steered_tokens_per_s": round(tokens / wall_steer, 1),
        }
        if not args.no_sweep:
            report.update(sweep(args, steered, prompts, gen, timed))
        if args.profile:
            report.update(profile_step(with_steering, n))
    config = {
        k: getattr(args, k.replace("-", "_"))
        for k in ("preset", "batch", "prompt-length", "new-tokens", "repeats", "threads")
    }
    config.update(
        layers=model.config.num_hidden_layers,
        hidden=model.config.hidden_size,
        steered_layers=count,
        device=args.device,
        dtype=args.dtype,
        torch=torch.__version__,
    )
    print(json.dumps({**report, "config": config}))


def sweep(args, steered, prompts, gen, timed) -> dict:
    """8 coefficients: one batch of 8 copies of the first prompt vs 8 one-row runs."""
    coefs = torch.linspace(-8, 8, 8)
    one = {k: v[:1] for k, v in prompts.items()}
    eight = {k: v[:1].repeat(8, 1) for k, v in prompts.items()}

    def batched():
        steered.generate(**eight, coefficient=coefs.to(args.device), **gen)

    def sequential():
        for c in coefs.tolist():
            steered.generate(**one, coefficient=c, **gen)

    batched()
    result = interleaved(timed, batched, sequential, args.sweep_repeats)
    (batch_s, seq_s) = result["wall"]
    print(f"8-coefficient sweep: one batch {batch_s:.2f} s, sequential {seq_s:.2f} s")
    return {
        "sweep_speedup_wall": round(result["wall_ratio"], 3),
        "sweep_speedup_cpu": round(result["cpu_ratio"], 3),
    }


if __name__ == "__main__":
    main()
