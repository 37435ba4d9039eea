"""The newer objectives of ``bench_train.py``: the prompt objective and learned vectors.

Rows are random words of a word-level tokenizer, so every plain input has exactly ``--seq``
tokens, as the pre-tokenized rows of the other variants do: a prompt of ``seq - 16`` words and an
answer of 15 words plus EOS. The prompted input puts ``--instruction`` more words before the
prompt (the tokenizer has no chat template: the response is the answer).

- ``prompt``: RepTuneTrainer, ``rep_target="prompt"`` on the ``--window`` layers at every
  response token; floor: the plain step plus its reference pass alone, on the prompted input.
- ``learned_lm`` / ``learned_pref``: one step of :class:`reptune.training.VectorLearner` (the
  token loss, or RePS's preference loss on chosen and rejected answers: two passes over twice
  the rows) with the model frozen, directions at the ``--window`` layers; floor: the no-grad
  forward passes the step needs (one over the rows, or two over the chosen and rejected rows).

Example:
    >>> trainer = build_prompt(opts, model)
"""

from __future__ import annotations

import random

import torch
from _bench_utils import word_tokenizer

__all__ = [
    "FLOORS",
    "LEARNED",
    "build_learner",
    "build_prompt",
    "floor_step",
    "learner_batches",
    "newer_objectives",
]

LEARNED = {"learned_lm": "lm", "learned_pref": "preference"}
#: The floors timed beside the variants: reference passes alone, or no-grad forward passes.
FLOORS = {"steer": "reference", "prompt": "reference_prompt", **{v: f"floor_{v}" for v in LEARNED}}
_ANSWER = 15


def _words(rng: random.Random, n: int, vocab: int) -> str:
    return " ".join(f"w{rng.randrange(vocab - 2)}" for _ in range(n))


def text_rows(opts, n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    return [
        {
            "prompt": _words(rng, opts.seq - _ANSWER - 1, opts.vocab),
            "completion": _words(rng, _ANSWER, opts.vocab),
            "chosen": _words(rng, _ANSWER, opts.vocab),
            "rejected": _words(rng, _ANSWER, opts.vocab),
        }
        for _ in range(n)
    ]


def build_prompt(opts, model, layers: list[int], common: dict):
    """A RepTuneTrainer of the prompt objective on ``model``."""
    from reptune.training import RepTuneConfig, RepTuneTrainer

    tok = word_tokenizer(opts.vocab)
    instruction = _words(random.Random(1), opts.instruction, opts.vocab)
    args = RepTuneConfig(
        **common,
        rep_layers=layers,
        rep_positions="all",
        rep_target="prompt",
        target_instruction=instruction,
    )
    rows = [
        {"prompt": r["prompt"], "completion": r["completion"]}
        for r in text_rows(opts, opts.batch * (opts.steps + 2))
    ]
    return RepTuneTrainer(model, args, train_dataset=rows, processing_class=tok)


def build_learner(opts, model, variant: str, layers: list[int]):
    """A VectorLearner of ``variant`` on ``model`` (frozen inside its session)."""
    from reptune.training import VectorLearner

    gen = torch.Generator().manual_seed(0)
    init = {k: torch.randn(opts.hidden, generator=gen) for k in layers}
    return VectorLearner(
        model, word_tokenizer(opts.vocab), init, {k: 1.0 for k in layers}, LEARNED[variant]
    )


def learner_batches(opts, learner):
    """Endless ``(rows, reference)`` batches for a learner (reference: preference only)."""
    rows = text_rows(opts, opts.batch * 4, seed=2)
    reference = None
    if learner.objective == "preference":
        with learner.session():
            reference = learner.reference(rows, opts.batch)
    while True:
        for start in range(0, len(rows), opts.batch):
            part = slice(start, start + opts.batch)
            yield rows[part], None if reference is None else reference[part]


@torch.no_grad()
def floor_step(learner, rows) -> None:
    """The no-grad forward passes one learner step needs, without the steering or a backward."""
    if learner.objective == "lm":
        batch = learner.collate(list(rows))
        passes = 1
    else:
        batch = learner.pair_batch(rows)
        passes = 2
    feed = {k: batch[k].to(learner.device) for k in ("input_ids", "attention_mask")}
    for _ in range(passes):
        learner.model(**feed)


def newer_objectives(timing, memory, plain_ms, plain_mb) -> dict:
    """Time, memory and floor of the prompt objective and the learned vectors, per variant."""
    out = {}
    for variant in ("prompt", *LEARNED):
        floor_ms = timing[FLOORS[variant]]["ms"]
        if variant == "prompt":  # the plain step plus the reference pass on the prompted input
            floor_ms += plain_ms
        out.update(
            {
                f"{variant}_ms": round(timing[variant]["ms"], 2),
                f"{variant}_peak_mb": round(memory[variant]["peak_mb"], 2),
                f"time_ratio_{variant}": round(timing[variant]["ms"] / plain_ms, 4),
                f"mem_ratio_{variant}": round(memory[variant]["peak_mb"] / plain_mb, 4),
                f"floor_{variant}_ms": round(floor_ms, 2),
                f"floor_ratio_{variant}": round(floor_ms / plain_ms, 4),
                f"{variant}_over_floor": round(timing[variant]["ms"] / floor_ms, 4),
            }
        )
    return out
