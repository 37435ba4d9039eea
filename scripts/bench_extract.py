"""Extraction speed and activation memory: reptune vs a plain full forward.

The reference runs the whole model with ``output_hidden_states=True`` (every layer and the LM head)
and takes the mean difference by hand; reptune stops after the deepest requested layer. Both read
layers 0..L/2 of a 24-layer model with a 32k vocabulary on the same pairs. Ratios print last.

    python scripts/bench_extract.py [--layers 24 --hidden 512 --pairs 64]
"""

from __future__ import annotations

import argparse
import json

import torch
from _bench_utils import PeakMemory, best_time, llama, random_texts, word_tokenizer

from reptune.extract import extract_vectors
from reptune.pairs import ContrastivePair
from reptune.tokenization import encode_batch


@torch.no_grad()
def reference(model, tok, pairs, layers, batch_size):
    sums = {layer: 0 for layer in layers}
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        texts = [p.positive for p in chunk] + [p.negative for p in chunk]
        batch = encode_batch(tok, texts, position_ids=True)
        hidden = model(**batch, output_hidden_states=True, use_cache=False).hidden_states
        for layer in layers:
            last = hidden[layer + 1][:, -1]
            sums[layer] = sums[layer] + (last[: len(chunk)] - last[len(chunk) :]).sum(0)
    return {layer: s / len(pairs) for layer, s in sums.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    model, tok = llama(args.layers, args.hidden, args.vocab), word_tokenizer(args.vocab)
    texts = random_texts(2 * args.pairs, args.length, args.vocab)
    pairs = [ContrastivePair(a, b) for a, b in zip(texts[::2], texts[1::2])]
    layers = list(range(args.layers // 2))

    def ours():
        return extract_vectors(
            model, tok, pairs, layers, normalize=False, batch_size=args.batch_size, progress=False
        )

    def ref():
        return reference(model, tok, pairs, layers, args.batch_size)

    ours(), ref()  # warm-up
    got, want = ours(), ref()
    max_diff = max(float((got[layer] - want[layer]).abs().max()) for layer in layers)
    t_ours, t_ref = best_time(ours), best_time(ref)
    with PeakMemory() as m_ours:
        ours()
    with PeakMemory() as m_ref:
        ref()
    print(
        f"model: {args.layers} layers, hidden {args.hidden}, vocab {args.vocab}; "
        f"{args.pairs} pairs, <= {args.length} tokens, layers 0..{layers[-1]}"
    )
    print(f"reptune   {t_ours:.2f} s   peak activation memory {m_ours.growth / 2**20:.0f} MiB")
    print(f"reference {t_ref:.2f} s   peak activation memory {m_ref.growth / 2**20:.0f} MiB")
    print(f"max |difference| of the vectors: {max_diff:.2e}")
    print(
        json.dumps(
            {
                "extract_speedup": round(t_ref / t_ours, 3),
                "extract_memory_ratio": round(m_ours.growth / max(m_ref.growth, 1), 3),
            }
        )
    )


if __name__ == "__main__":
    main()
