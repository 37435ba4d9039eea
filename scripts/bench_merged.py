"""Generation cost of a merged tuned model against the base model, the unmerged adapter and
online steering (KV cache, batch 8, greedy). Ratios (tokens/s relative to the base) print last.

    python scripts/bench_merged.py [--layers 12 --hidden 512 --new-tokens 64]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
from _bench_utils import best_time, llama, random_texts, word_tokenizer
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM

from reptune.publish.merged import export_merged
from reptune.steering import SteeredModel
from reptune.tokenization import encode_batch
from reptune.vectors import SteeringVectors


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    tok = word_tokenizer(args.vocab)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        base = llama(args.layers, args.hidden, args.vocab)
        base.save_pretrained(tmp / "base")
        tok.save_pretrained(tmp / "base")
        config = LoraConfig(r=16, target_modules="all-linear", init_lora_weights=False)
        get_peft_model(llama(args.layers, args.hidden, args.vocab), config).save_pretrained(
            tmp / "adapter"
        )
        export_merged(tmp / "adapter", tmp / "merged", base_model=str(tmp / "base"))
        merged = AutoModelForCausalLM.from_pretrained(tmp / "merged").eval()
        adapter = PeftModel.from_pretrained(
            llama(args.layers, args.hidden, args.vocab), tmp / "adapter"
        ).eval()
    vecs = SteeringVectors({args.layers // 2: torch.randn(args.hidden)})
    steered = SteeredModel(base, vecs, coefficient=4.0, coefficient_unit="raw")
    batch = encode_batch(tok, random_texts(8, 32, args.vocab))
    gen = dict(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False)
    runs = {
        "base": lambda: base.generate(**batch, **gen),
        "merged": lambda: merged.generate(**batch, **gen),
        "unmerged_adapter": lambda: adapter.generate(**batch, **gen),
        "steered": lambda: steered.generate(**batch, **gen),
    }
    for fn in runs.values():  # warm-up
        fn()
    # Interleaved, so drift on a shared machine hits every variant alike.
    times = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, fn in runs.items():
            times[name].append(best_time(fn, 1))
    best = {name: min(t) for name, t in times.items()}
    tokens = 8 * args.new_tokens
    for name, seconds in best.items():
        print(f"{name:>17}: {tokens / seconds:8.1f} tok/s")
    print(
        json.dumps({f"{n}_vs_base": round(best["base"] / best[n], 3) for n in runs if n != "base"})
    )


if __name__ == "__main__":
    main()
