"""Shared fixtures: tiny models built from a config and a tokenizer built locally (no network)."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest
import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

# Tiny models run far faster single-threaded than with threads fighting over a shared machine.
torch.set_num_threads(1)

SHARED_DATA = Path(os.environ.get("REPTUNE_SHARED_DATA", Path(__file__).parents[2] / "shared/data"))

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
_CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "Question: Is the following claim true or false? Choices: (A) True (B) False Answer:",
    "I love this wonderful happy day. I hate this terrible sad day.",
    "You are an honest assistant. You are a deceptive assistant who lies.",
    "0123456789 .,;:!?()[]{}'\"-_/\\ A B C D yes no",
]
VOCAB = 320


@functools.cache
def _tokenizer_json() -> str:
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|endoftext|>", "<|user|>", "<|assistant|>", "<|system|>", "<|end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 5, trainer)
    return tok.to_str()


def make_tokenizer(chat_template: bool = True, pad: bool = False) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer (encodes any text) with EOS, optionally pad and chat template."""
    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_tokenizer_json()), eos_token="<|endoftext|>"
    )
    if pad:
        tok.pad_token = tok.eos_token
    if chat_template:
        tok.chat_template = CHAT_TEMPLATE
    return tok


def _cfg(name: str, n_layers: int, hidden: int, context: int = 128):
    common = dict(
        vocab_size=VOCAB,
        num_hidden_layers=n_layers,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=context,
    )
    if name == "llama":
        return transformers.LlamaConfig(**common)
    if name == "mistral":
        return transformers.MistralConfig(**common)
    if name == "qwen2":
        return transformers.Qwen2Config(**common)
    if name == "qwen3":
        return transformers.Qwen3Config(**common, head_dim=hidden // 4)
    if name == "gemma2":
        return transformers.Gemma2Config(**common, head_dim=hidden // 4)
    if name == "gemma3":
        return transformers.Gemma3TextConfig(**common, head_dim=hidden // 4)
    if name == "phi3":
        return transformers.Phi3Config(**common, pad_token_id=0)
    if name == "gpt2":
        return transformers.GPT2Config(
            vocab_size=VOCAB, n_layer=n_layers, n_embd=hidden, n_head=4, n_positions=context
        )
    if name == "gpt_neox":
        return transformers.GPTNeoXConfig(
            vocab_size=VOCAB,
            num_hidden_layers=n_layers,
            hidden_size=hidden,
            intermediate_size=2 * hidden,
            num_attention_heads=4,
            max_position_embeddings=context,
        )
    raise KeyError(name)


ARCHITECTURES = (
    "llama",
    "mistral",
    "qwen2",
    "qwen3",
    "gemma2",
    "gemma3",
    "phi3",
    "gpt2",
    "gpt_neox",
)


def make_model(
    name: str = "llama", n_layers: int = 4, hidden: int = 32, seed: int = 0, context: int = 128
):
    """A tiny causal LM of architecture ``name`` in float32 eval mode."""
    torch.manual_seed(seed)
    config = _cfg(name, n_layers, hidden, context)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config.pad_token_id = 0
    return model.eval()


@pytest.fixture
def tokenizer():
    return make_tokenizer()


@pytest.fixture
def model():
    return make_model("llama")


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder {SHARED_DATA} is absent")
    return SHARED_DATA
