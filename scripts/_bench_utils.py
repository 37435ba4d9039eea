"""Shared pieces of the benchmark scripts: a model built from a config, a tokenizer, memory."""

from __future__ import annotations

import gc
import random
import threading
import time

import psutil
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast


def word_tokenizer(vocab_size: int) -> PreTrainedTokenizerFast:
    """Word-level tokenizer over the words w0..w{n-1}, so random texts have known lengths."""
    vocab = {"<pad>": 0, "<eos>": 1, **{f"w{i}": i + 2 for i in range(vocab_size - 2)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<eos>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>")


def random_texts(n: int, length: int, vocab_size: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    words = lambda k: " ".join(f"w{rng.randrange(vocab_size - 2)}" for _ in range(k))  # noqa: E731
    return [words(rng.randint(length // 2, length)) for _ in range(n)]


def llama(layers: int, hidden: int, vocab: int, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=hidden * 8 // 3,
        num_hidden_layers=layers,
        num_attention_heads=max(hidden // 64, 1),
        num_key_value_heads=max(hidden // 64, 1),
        max_position_embeddings=2048,
    )
    model = LlamaForCausalLM(config).eval()
    model.generation_config.pad_token_id = 0
    return model


class PeakMemory:
    """Peak resident-memory growth (bytes) while the block runs, sampled every millisecond."""

    def __enter__(self):
        gc.collect()
        self._proc = psutil.Process()
        self.base = self._proc.memory_info().rss
        self.peak = self.base
        self._stop = False
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self):
        while not self._stop:
            self.peak = max(self.peak, self._proc.memory_info().rss)
            time.sleep(0.001)

    def __exit__(self, *exc):
        self._stop = True
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)
        self.growth = self.peak - self.base


def best_time(fn, repeats: int = 3) -> float:
    """Fastest of ``repeats`` runs (seconds): the least disturbed by other processes."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)
