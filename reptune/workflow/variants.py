"""Tuned variants: train one from a fresh base model, pick its checkpoint on dev data, save it,
load it back; and the self-generated training rows a steered or a prompted model writes.

Example:
    >>> rows = steered_rows(model, tok, train_prompts, steered, coefficient=0.2)
    >>> info = train_variant(margs, targs, vectors, rows, layout.model_dir("rep-steer"),
    ...                      rep_target="steer", steer_coefficient=0.2, lm_weight=0.0,
    ...                      select=DevSelection(score_on_dev, every=10))
    >>> model, tok = load_variant(margs, layout.model_dir("rep-steer"))
"""

from __future__ import annotations

import dataclasses
import gc
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import TrainerCallback

from ..evaluation.ab.scoring import generate_texts
from ..io import recover_folder
from ..pairs import format_chat
from .args import ModelArguments

__all__ = ["DevSelection", "train_variant", "load_variant", "steered_rows", "prompted_rows"]

logger = logging.getLogger(__name__)


@dataclass
class DevSelection:
    """Pick the training step on dev data: snapshots of the trainable weights every ``every``
    steps (and at the end) are scored by ``score(model) -> float`` (higher is better; dev data
    only) and the best one is kept.

    Example:
        >>> DevSelection(lambda m: dev_harmonic_mean(m), every=10)
    """

    score: Callable[[torch.nn.Module], float]
    every: int = 10

    def __post_init__(self):
        if self.every < 1:
            raise ValueError(f"DevSelection.every must be >= 1, got {self.every}")


class _Snapshots(TrainerCallback):
    """Copies of the trainable parameters at chosen steps (LoRA weights are small)."""

    def __init__(self, model, every: int):
        self.params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        self.every = every
        self.saved: dict[int, dict[str, torch.Tensor]] = {}

    def take(self, step: int) -> None:
        self.saved[step] = {n: p.detach().clone() for n, p in self.params.items()}

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.every == 0:
            self.take(state.global_step)

    def load(self, step: int) -> None:
        with torch.no_grad():
            for name, value in self.saved[step].items():
                self.params[name].copy_(value)


def _choose(trainer, snapshots: _Snapshots, select: DevSelection) -> tuple[int, dict]:
    """Score every snapshot on the main process and load the best one on every process."""
    from accelerate.utils import broadcast_object_list

    scores: dict[int, float] = {}
    model = trainer.model
    if trainer.accelerator.is_main_process:
        model.eval()
        for step in sorted(snapshots.saved):
            snapshots.load(step)
            scores[step] = float(select.score(model))
        logger.info("dev scores by step: %s", scores)
    shared = [scores]
    if trainer.accelerator.num_processes > 1:
        broadcast_object_list(shared)
    scores = shared[0]
    # The earliest of equally good steps: less training, less drift from the base model.
    best = max(sorted(scores), key=lambda step: scores[step])
    snapshots.load(best)
    return best, scores


def train_variant(
    margs: ModelArguments,
    train_args,
    vectors,
    rows: Sequence[dict],
    output_dir: str | Path,
    *,
    select: DevSelection | None = None,
    **overrides,
) -> dict:
    """Train one variant on ``rows`` from a fresh base model and save it to ``output_dir``.

    ``overrides`` replace fields of ``train_args`` (a RepTuneConfig), e.g. ``rep_weight=0,
    lm_weight=1`` for the token-only baseline. With ``select`` the saved weights are those of the
    best-scoring snapshot on dev data. Returns the final training metrics, the number of steps
    and, with ``select``, the chosen step and the dev score of every snapshot.

    Example:
        >>> train_variant(margs, targs, vecs, rows, "runs/h/models/truth", rep_weight=0.0,
        ...               lm_weight=1.0)
    """
    from datasets import Dataset

    from ..training import RepTuneTrainer

    if not rows:
        raise ValueError(f"no training rows for {output_dir}")
    args = dataclasses.replace(train_args, output_dir=str(output_dir), **overrides)
    model, tok = margs.load()
    trainer = RepTuneTrainer(
        model,
        args,
        vectors=vectors,
        train_dataset=Dataset.from_list(list(rows)),
        processing_class=tok,
        peft_config=margs.peft_config(args),
    )
    trainer.base_model_spec = margs.model  # the card names the spec, not a cache folder
    snapshots = None
    if select is not None:
        snapshots = _Snapshots(trainer.model, select.every)
        trainer.add_callback(snapshots)
    result = trainer.train()
    info: dict = {"train_loss": result.training_loss, "steps": trainer.state.global_step}
    history = [h for h in trainer.state.log_history if "loss" in h or "rep_loss" in h]
    if history:
        info.update({k: v for k, v in history[-1].items() if isinstance(v, (int, float))})
    if snapshots is not None:
        if trainer.state.global_step not in snapshots.saved:
            snapshots.take(trainer.state.global_step)
        info["chosen_step"], info["dev_scores"] = _choose(trainer, snapshots, select)
    trainer.save_model(str(output_dir))
    del trainer, model, snapshots
    gc.collect()
    return info


def load_variant(margs: ModelArguments, folder: str | Path | None, *, merge: bool = False):
    """``(model, tokenizer)``: the base model, with the saved adapter (or full weights) of
    ``folder`` when given. ``merge`` folds a LoRA adapter into the weights (same outputs, no
    adapter overhead).

    Example:
        >>> tuned, tok = load_variant(margs, "runs/honesty/adapter", merge=True)
    """
    if folder is None:
        return margs.load()
    folder = recover_folder(Path(folder))
    if (folder / "adapter_config.json").is_file():
        from peft import PeftModel

        base, tok = margs.load()
        model = PeftModel.from_pretrained(base, str(folder)).eval()
        return (model.merge_and_unload().eval() if merge else model), tok
    if (folder / "config.json").is_file():
        spec = dataclasses.replace(margs, model=str(folder))
        return spec.load()
    raise FileNotFoundError(f"{folder} holds neither an adapter nor a model: train it first")


def steered_rows(
    model,
    tokenizer,
    prompts: Sequence[str],
    steered,
    coefficient: float,
    *,
    max_new_tokens: int = 32,
    batch_size: int = 16,
    system: str | None = None,
) -> list[dict]:
    """Training rows ``{"prompt", "completion"}`` whose completions a steered model wrote.

    ``prompts`` are plain user prompts; each is put through the chat template, answered greedily
    by ``steered`` (a :class:`~reptune.steering.SteeredModel`) at ``coefficient``, and paired
    with its answer. Rows with an empty answer are dropped.

    Example:
        >>> rows = steered_rows(model, tok, prompts, SteeredModel(model, vecs, layers=[10]), 0.2)
    """
    chat = [format_chat(tokenizer, p, "", system) for p in prompts]
    texts = generate_texts(
        steered,
        tokenizer,
        chat,
        coefficients=torch.full((len(chat),), float(coefficient)),
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
    )
    rows = []
    for prompt, text in zip(prompts, texts):
        if text.strip():
            rows.append(
                {
                    "prompt": prompt,
                    "completion": text.strip(),
                    **({"system": system} if system else {}),
                }
            )
    return rows


def prompted_rows(
    model,
    tokenizer,
    prompts: Sequence[str],
    instruction: str,
    mode: str = "system",
    *,
    max_new_tokens: int = 32,
    batch_size: int = 16,
    system: str | None = None,
    examples: Sequence[Sequence[str]] = (),
) -> list[dict]:
    """Training rows ``{"prompt", "completion"}`` whose completions the prompted model wrote.

    Each prompt is answered greedily with ``instruction`` (and the few-shot ``examples``) in
    context, as ``rep_target="prompt"`` puts them (``mode``: system prompt, prefix or
    template); the row keeps the plain
    prompt, so the trainee learns to answer so without the instruction. Rows with an empty
    answer are dropped.

    Example:
        >>> rows = prompted_rows(model, tok, prompts, "Answer in a cheerful tone.")
    """
    from ..training.prompt_target import instructed_chat

    chat = [instructed_chat(tokenizer, p, instruction, mode, system, examples) for p in prompts]
    texts = generate_texts(
        model, tokenizer, chat, max_new_tokens=max_new_tokens, batch_size=batch_size
    )
    return [
        {"prompt": prompt, "completion": text.strip(), **({"system": system} if system else {})}
        for prompt, text in zip(prompts, texts)
        if text.strip()
    ]
