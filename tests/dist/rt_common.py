"""Shared builders for the trainer tests and the torchrun script: tiny models, rows, vectors."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from transformers import TrainerCallback

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for conftest

from conftest import make_model, make_tokenizer  # noqa: E402

from reptune.training import RepTuneConfig  # noqa: E402
from reptune.vectors import SteeringVectors  # noqa: E402

__all__ = [
    "GradCapture",
    "make_args",
    "make_rows",
    "make_tokenizer",
    "random_vectors",
    "save_tiny_model",
    "sequential",
    "tiny_model",
]

_SUBJECTS = [
    "the sky",
    "a dog",
    "the sea",
    "my day",
    "this film",
    "the lazy fox",
    "a claim",
    "the quick brown fox",
    "an honest answer",
    "the number 42",
    "a happy day",
]


def make_rows(n: int, offset: int = 0) -> list[dict]:
    """Deterministic prompt/completion rows of varied length."""
    rows = []
    for i in range(offset, offset + n):
        subject = _SUBJECTS[i % len(_SUBJECTS)]
        colour = "green" if i % 3 else "sad"
        prompt = f"Is the following claim true or false? {subject} is {colour}."
        rows.append({"prompt": prompt, "completion": "(A) True" if i % 2 else "(B) False"})
    return rows


def tiny_model(n_layers=4, hidden=32, lora=True, seed=0, init_lora_weights=True, name="llama"):
    model = make_model(name, n_layers=n_layers, hidden=hidden, seed=seed)
    if not lora:
        return model
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed + 1)
    config = LoraConfig(
        r=8, lora_alpha=16, target_modules="all-linear", init_lora_weights=init_lora_weights
    )
    return get_peft_model(model, config)


def save_tiny_model(folder, hidden: int = 32, n_layers: int = 4, seed: int = 0) -> Path:
    """A tiny Llama, its tokenizer and a random LoRA adapter (``folder/adapter``) on disk, so
    that every process of a run, and the reference run, start from the very same weights."""
    folder = Path(folder)
    tiny_model(n_layers, hidden, lora=False, seed=seed).save_pretrained(folder)
    make_tokenizer(pad=True).save_pretrained(folder)
    tiny_model(n_layers, hidden, seed=seed, init_lora_weights=False).save_pretrained(
        folder / "adapter"
    )
    return folder


def random_vectors(hidden: int, layers, seed: int = 0) -> SteeringVectors:
    gen = torch.Generator().manual_seed(seed)
    return SteeringVectors(
        {layer: torch.randn(hidden, generator=gen) for layer in layers}, {"model_name": "tiny"}
    )


def make_args(output_dir, **overrides) -> RepTuneConfig:
    base = dict(
        output_dir=str(output_dir),
        use_cpu=True,
        report_to=[],
        disable_tqdm=True,
        save_strategy="no",
        logging_steps=1,
        seed=0,
        max_grad_norm=0.0,
        per_device_train_batch_size=4,
        max_steps=2,
        learning_rate=1e-3,
        rep_positions="-2",
        lm_weight=0.5,
    )
    base.update(overrides)
    return RepTuneConfig(**base)


def sequential(trainer):
    """Feed rows in order, so runs with different batch layouts see the same rows per step."""
    trainer._get_train_sampler = lambda *a, **k: torch.utils.data.SequentialSampler(
        trainer.train_dataset
    )
    return trainer


class GradCapture(TrainerCallback):
    """Copies of the gradients just before each optimiser step."""

    def __init__(self):
        self.grads = []

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        self.grads.append(
            {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        )
