"""Steered generation throughput and batched coefficient sweeps.

1. Steered vs unsteered ``generate`` (KV cache, batch 8, greedy): tokens/s ratio.
2. An 8-coefficient sweep in one batch (per-row coefficients) vs 8 sequential runs.
Ratios print last.

    python scripts/bench_generate.py [--layers 12 --hidden 512 --new-tokens 64]
"""

from __future__ import annotations

import argparse
import json

import torch
from _bench_utils import best_time, llama, random_texts, word_tokenizer

from reptune.steering import SteeredModel
from reptune.tokenization import encode_batch
from reptune.vectors import SteeringVectors


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--prompt-length", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    model, tok = llama(args.layers, args.hidden, args.vocab), word_tokenizer(args.vocab)
    vecs = SteeringVectors({args.layers // 2: torch.randn(args.hidden)})
    steered = SteeredModel(model, vecs, coefficient=4.0, positions="all", coefficient_unit="raw")
    prompts = random_texts(8, args.prompt_length, args.vocab)
    batch = encode_batch(tok, prompts)
    gen = dict(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False)

    def plain():
        model.generate(**batch, **gen)

    def with_steering():
        steered.generate(**batch, **gen)

    coefs = torch.linspace(-8, 8, 8)
    one_prompt = encode_batch(tok, prompts[:1])
    sweep_batch = encode_batch(tok, prompts[:1] * 8)

    def sweep_batched():
        steered.generate(**sweep_batch, coefficient=coefs, **gen)

    def sweep_sequential():
        for c in coefs:
            steered.generate(**one_prompt, coefficient=float(c), **gen)

    plain(), with_steering()  # warm-up
    # Interleave the two so drift on a shared machine hits both alike.
    t_plain, t_steer = [], []
    for _ in range(args.repeats):
        t_plain.append(best_time(plain, 1))
        t_steer.append(best_time(with_steering, 1))
    t_plain, t_steer = min(t_plain), min(t_steer)
    t_batched = best_time(sweep_batched, args.repeats)
    t_seq = best_time(sweep_sequential, 1)
    tokens = 8 * args.new_tokens
    print(
        f"model: {args.layers} layers, hidden {args.hidden}; batch 8, {args.new_tokens} new tokens"
    )
    print(f"unsteered {tokens / t_plain:.1f} tok/s, steered {tokens / t_steer:.1f} tok/s")
    print(f"8-coefficient sweep: one batch {t_batched:.2f} s, sequential {t_seq:.2f} s")
    print(
        json.dumps(
            {
                "steered_throughput_ratio": round(t_plain / t_steer, 3),
                "sweep_batched_speedup": round(t_seq / t_batched, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
