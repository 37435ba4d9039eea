"""Learned steering vectors: train the direction itself, with the model frozen.

One trainable direction per chosen layer is added through the one hook mechanism
(:class:`reptune.hooks.AddVector`, whose sum is differentiable in the vector) at a coefficient in
reptune's unit: ``alpha * median_residual_norm(layer) * v / |v|``, so the result steers in
:class:`~reptune.steering.SteeredModel` at coefficient ``alpha`` exactly as it was trained. The
coefficient of each batch is drawn uniformly from ``coefficients`` (one value for the whole
batch). Two objectives:

- ``"lm"``: the token loss of behaviour rows ``{"prompt", "completion"}`` under steering (the
  language-modelling objective of AxBench's steering vectors);
- ``"preference"``: the bidirectional preference loss of RePS (Wu et al. 2025, "Improved
  Representation Steering for Language Models", arXiv 2505.20809; see
  :func:`~reptune.training.losses.reps_preference_loss`) on rows ``{"prompt", "chosen",
  "rejected"}``, ``chosen`` being the behaviour answer and ``rejected`` the base model's answer to
  the same prompt: with positive steering the behaviour answer should be the likelier one
  (length-normalised), with negative steering (``negative="subtract"``, coefficient ``-alpha``)
  or the direction projected out (``negative="null"``) the base answer.

Example:
    >>> vecs = learn_vectors(model, tok, pairs, layers=[10], objective="preference", steps=200)
    >>> SteeredModel(model, vecs, layers=[10], coefficient=0.2).generate(**batch)
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from contextlib import contextmanager

import torch
from tqdm.auto import tqdm

from ..extract import measure_residual_norms
from ..hooks import AblateVector, AddVector, eval_mode, intervene
from ..layers import check_layers, num_layers
from ..pairs import format_chat
from ..positions import validate_positions
from ..vectors import SteeringVectors
from .collator import RepTuneCollator
from .losses import reps_preference_loss

__all__ = [
    "OBJECTIVES",
    "NEGATIVE_MODES",
    "VectorLearner",
    "fingerprint_rows",
    "learn_vectors",
    "sequence_log_likelihoods",
]

OBJECTIVES = ("lm", "preference")
#: The negative side of the preference loss: ``-alpha`` times the vector, or the direction
#: projected out.
NEGATIVE_MODES = ("subtract", "null")
_KEYS = {"lm": ("prompt", "completion"), "preference": ("prompt", "chosen", "rejected")}


def sequence_log_likelihoods(logits: torch.Tensor, labels: torch.Tensor):
    """Per row: the summed log-likelihood of the labelled tokens and their number.

    ``labels`` are the input ids with -100 where no token is predicted (the prompt, padding);
    the logits at column ``t`` predict the token at ``t + 1``.

    Example:
        >>> total, count = sequence_log_likelihoods(model(**batch).logits, batch["labels"])
        >>> mean = total / count  # length-normalised
    """
    targets = labels[:, 1:]
    mask = targets != -100
    logp = logits[:, :-1].float().log_softmax(-1)
    picked = logp.gather(-1, targets.clamp_min(0).unsqueeze(-1)).squeeze(-1)
    return (picked * mask).sum(1), mask.sum(1)


def _check(rows, objective, layers, steps, learning_rate, batch_size, coefficients, negative):
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}: use one of {OBJECTIVES}")
    if negative not in NEGATIVE_MODES:
        raise ValueError(f"unknown negative {negative!r}: use one of {NEGATIVE_MODES}")
    if not rows:
        raise ValueError("learn_vectors needs at least one row")
    keys = _KEYS[objective]
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping) or any(not isinstance(row.get(k), str) for k in keys):
            raise ValueError(
                f"row {i} is not a {{{', '.join(map(repr, keys))}}} mapping of texts, which the "
                f"{objective!r} objective needs"
            )
    for name, value in (("steps", steps), ("batch_size", batch_size)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    if not (isinstance(learning_rate, (int, float)) and math.isfinite(learning_rate)):
        raise ValueError(f"learning_rate must be a finite number, got {learning_rate!r}")
    low, high = coefficients
    if not (math.isfinite(low) and math.isfinite(high) and 0 < low <= high):
        raise ValueError(
            f"coefficients must be a range (low, high) with 0 < low <= high, got {coefficients!r}"
            " (fractions of the layer's median residual norm)"
        )
    if not layers:
        raise ValueError("learn_vectors needs at least one layer")


def fingerprint_rows(rows: Sequence[Mapping]) -> str:
    """A short hash of the training rows, stored with the vectors.

    Example:
        >>> len(fingerprint_rows([{"prompt": "Hi", "completion": "Hello!"}]))
        16
    """
    text = json.dumps([dict(r) for r in rows], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@contextmanager
def _frozen(model):
    """The model's parameters without gradients for the block; their flags restored after."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


class VectorLearner:
    """The optimisation of :func:`learn_vectors`, one step at a time (benchmarks, own schedules).

    Holds one trainable direction per layer (unit-normalised when read), AdamW on them, and the
    collator. Steps run inside :meth:`session`, which freezes the model's parameters and puts it
    in eval mode, and gives both back after.

    Example:
        >>> learner = VectorLearner(model, tok, {10: v0}, norms, "preference")
        >>> with learner.session():
        ...     ref = learner.reference(rows)
        ...     loss = learner.step(rows[:8], alpha=0.2, reference=ref[:8])
    """

    def __init__(
        self,
        model,
        tokenizer,
        init: Mapping[int, torch.Tensor],
        norms: Mapping[int, float],
        objective: str = "lm",
        *,
        learning_rate: float = 1e-2,
        negative: str = "subtract",
        positions="all",
        max_length: int | None = None,
        layer_path: str | None = None,
    ):
        self.model, self.objective, self.negative = model, objective, negative
        self.positions, self.layer_path = positions, layer_path
        self.device = model.get_input_embeddings().weight.device
        self.params = {
            k: torch.nn.Parameter(v.detach().float().to(self.device) / v.norm())
            for k, v in init.items()
        }
        self.norms = {k: float(norms[k]) for k in self.params}
        self.optimizer = torch.optim.AdamW(self.params.values(), lr=learning_rate, weight_decay=0)
        self.collate = RepTuneCollator(tokenizer, rep_positions="all", max_length=max_length)

    @contextmanager
    def session(self):
        with _frozen(self.model), eval_mode(self.model):
            yield

    def vectors(self) -> dict[int, torch.Tensor]:
        """The learned unit directions, on the CPU."""
        return {k: (v / v.norm()).detach().cpu().contiguous() for k, v in self.params.items()}

    def _add(self, coefficient: float) -> dict:
        scaled = {k: v * (self.norms[k] / v.norm()) for k, v in self.params.items()}
        return {k: AddVector(v, torch.tensor(coefficient)) for k, v in scaled.items()}

    def _log_likelihoods(self, batch, fns):
        with intervene(self.model, fns, self.positions, layer_path=self.layer_path):
            logits = self.model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            ).logits
        return sequence_log_likelihoods(logits, batch["labels"])

    def pair_batch(self, rows):
        """One batch holding the chosen answers, then the rejected ones."""
        texts = [{**r, "completion": r["chosen"]} for r in rows]
        texts += [{**r, "completion": r["rejected"]} for r in rows]
        return {k: v.to(self.device) for k, v in self.collate(texts).items()}

    @torch.no_grad()
    def reference(self, rows: Sequence[Mapping], batch_size: int = 8) -> torch.Tensor:
        """``(n_rows, 2)``: summed log-likelihoods of chosen and rejected, unsteered."""
        out = []
        for start in range(0, len(rows), batch_size):
            batch = self.pair_batch(rows[start : start + batch_size])
            logits = self.model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            ).logits
            total, _ = sequence_log_likelihoods(logits, batch["labels"])
            out.append(torch.stack(total.float().cpu().chunk(2), dim=1))
        return torch.cat(out)

    def loss(self, rows: Sequence[Mapping], alpha: float, reference=None) -> torch.Tensor:
        """The objective on ``rows`` at steering coefficient ``alpha`` (with its graph)."""
        if self.objective == "lm":
            batch = {k: v.to(self.device) for k, v in self.collate(list(rows)).items()}
            total, count = self._log_likelihoods(batch, self._add(alpha))
            return -total.sum() / count.sum().clamp_min(1)
        batch = self.pair_batch(rows)
        total, count = self._log_likelihoods(batch, self._add(alpha))
        pos_chosen, pos_rejected = (total / count.clamp_min(1)).chunk(2)
        if self.negative == "subtract":
            fns = self._add(-alpha)
        else:
            fns = {k: AblateVector(v) for k, v in self.params.items()}
        total, count = self._log_likelihoods(batch, fns)
        neg_chosen, neg_rejected = (total / count.clamp_min(1)).chunk(2)
        ref = reference.to(self.device)
        return reps_preference_loss(
            pos_chosen, pos_rejected, neg_rejected, neg_chosen, ref[:, 0], ref[:, 1]
        ).mean()

    def step(self, rows: Sequence[Mapping], alpha: float, reference=None) -> float:
        """One optimiser step on ``rows`` (gradients clipped at norm 1); returns the loss."""
        loss = self.loss(rows, alpha, reference)
        self.optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(self.params.values()), 1.0)
        self.optimizer.step()
        return float(loss.detach())


def learn_vectors(
    model,
    tokenizer,
    rows: Sequence[Mapping[str, str]],
    layers: Sequence[int],
    objective: str = "lm",
    *,
    steps: int = 100,
    learning_rate: float = 1e-2,
    batch_size: int = 8,
    coefficients: tuple[float, float] = (0.1, 0.3),
    negative: str = "subtract",
    positions="all",
    init: SteeringVectors | None = None,
    seed: int = 0,
    max_length: int | None = None,
    layer_path: str | None = None,
    progress: bool = False,
) -> SteeringVectors:
    """Train one steering direction per layer of ``layers`` on ``rows``; the model stays frozen.

    ``objective`` and the rows it takes are described in the module; ``coefficients`` is the
    range the steering coefficient of each batch is drawn from (residual-norm units, as
    ``SteeredModel`` takes it); ``positions`` where the vector is added (hook position language,
    ``"all"`` as ``SteeredModel``'s default). AdamW on the directions, gradients clipped at norm 1.
    ``init`` starts from given vectors (e.g. mean-difference ones), else from a random direction.
    The result carries the layers' median residual norm over the rows' texts and records how it
    was made (``method="learned"``, objective, steps, learning rate, coefficient range, data
    fingerprint, first and last loss).

    Example:
        >>> vecs = learn_vectors(model, tok, rows, layers=[10], objective="lm", steps=100)
        >>> vecs.save("runs/learned")
    """
    try:
        low, high = (float(c) for c in coefficients)
    except (TypeError, ValueError) as err:
        raise ValueError(f"coefficients must be a (low, high) pair, got {coefficients!r}") from err
    _check(rows, objective, layers, steps, learning_rate, batch_size, (low, high), negative)
    if isinstance(positions, torch.Tensor):
        raise ValueError(
            "positions must be a name or offsets (a mask fits one batch only): e.g. 'all'"
        )
    positions = validate_positions(positions)
    layers = check_layers(list(layers), num_layers(model, layer_path))
    rows = list(rows)
    answer = "completion" if objective == "lm" else "chosen"
    texts = [format_chat(tokenizer, r["prompt"], r[answer], r.get("system")) for r in rows]
    norms = measure_residual_norms(model, tokenizer, texts, layers, layer_path=layer_path)
    gen = torch.Generator().manual_seed(seed)
    if init is not None:
        missing = [k for k in layers if k not in init]
        if missing:
            raise ValueError(f"init has no vector for layers {missing} (it covers {init.layers})")
        init.check_compatible(model)
        zero = [k for k in layers if not float(init[k].norm()) > 0]
        if zero:
            raise ValueError(f"init's vector of layers {zero} is zero: it has no direction")
        start = {k: init[k] for k in layers}
    else:
        width = model.get_input_embeddings().weight.shape[1]
        start = {k: torch.randn(width, generator=gen) for k in layers}
    learner = VectorLearner(
        model, tokenizer, start, norms, objective, learning_rate=learning_rate,
        negative=negative, positions=positions, max_length=max_length, layer_path=layer_path,
    )  # fmt: skip
    losses = []
    with learner.session():
        reference = learner.reference(rows, batch_size) if objective == "preference" else None
        order, cursor = torch.randperm(len(rows), generator=gen), 0
        for _ in tqdm(range(steps), disable=not progress, desc="learning vectors"):
            if cursor + batch_size > len(order):
                order, cursor = torch.randperm(len(rows), generator=gen), 0
            picked = order[cursor : cursor + batch_size].tolist()
            cursor += batch_size
            alpha = low + (high - low) * float(torch.rand((), generator=gen))
            chunk_ref = reference[picked] if reference is not None else None
            losses.append(learner.step([rows[i] for i in picked], alpha, chunk_ref))
    metadata = SteeringVectors.describe_model(model)
    metadata.update(
        method="learned",
        objective=objective,
        position=positions,
        normalized=True,
        steps=steps,
        learning_rate=learning_rate,
        batch_size=batch_size,
        coefficients=[low, high],
        coefficient_unit="residual_norm",
        negative=negative if objective == "preference" else None,
        seed=seed,
        num_rows=len(rows),
        data_fingerprint=fingerprint_rows(rows),
        first_loss=losses[0],
        last_loss=losses[-1],
        residual_norms=norms,
    )
    return SteeringVectors(learner.vectors(), metadata)
