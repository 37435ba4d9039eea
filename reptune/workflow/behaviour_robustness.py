"""Robustness of a behaviour section's conditions: steer each one against its behaviour and
measure how much behaviour it keeps.

The published test of representation tuning steers the tuned models with negative multiples of
the very vector they were tuned toward. Here every condition takes the same attack: a tuned model
gets ``-a * v`` at the steered layer, the steered model gets its coefficient minus ``a`` (the
opposite coefficient added), the prompted model gets ``-a * v`` with its system prompt in
context. A stronger attack adds ``-a * v`` at a second layer as well (the next best layer by
held-out separation). For each condition and attack strength the table gives the behaviour score
under attack, its shift over the unattacked base model and the drop from the condition's own
unattacked score (paired intervals over prompts), and the kept share
``(attacked - base) / (unattacked - base)``.

Every condition is a :class:`Condition`: a model, an optional system prompt and the raw residual
additions it steers with. The attack adds its own raw additions to those, so one
:class:`~reptune.steering.SteeredModel` (``coefficient_unit="raw"``) runs each cell.

Example:
    >>> study = robustness_study(conditions, "base", tok, prompts, attacks, [0.2, 0.4], score)
    >>> robustness_rows(study["scores"])[0]["kept"]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch

from ..evaluation.paired import paired_comparison, shift_ratio
from ..io import read_jsonl
from ..steering import SteeredModel
from .measure import generate_condition
from .variants import load_variant

__all__ = [
    "Condition",
    "attack_directions",
    "behaviour_conditions",
    "robustness_rows",
    "robustness_study",
    "run_robustness",
]

Score = Callable[[Sequence[str], Sequence[str]], Sequence[float]]


@dataclass
class Condition:
    """One condition under test: ``model`` answers with ``system`` in context while ``offset``
    (raw residual additions by layer) is added at every position.

    Example:
        >>> Condition(base, offset={10: 0.2 * vecs.direction(10, "residual_norm")})
    """

    model: object
    system: str | None = None
    offset: dict[int, torch.Tensor] = field(default_factory=dict)


def _combine(*offsets: Mapping[int, torch.Tensor]) -> dict[int, torch.Tensor]:
    total: dict[int, torch.Tensor] = {}
    for offset in offsets:
        for layer, vec in offset.items():
            vec = vec.detach().float().cpu()
            total[layer] = total[layer] + vec if layer in total else vec
    # An attack that cancels a steering exactly leaves that layer unsteered.
    return {layer: vec for layer, vec in total.items() if float(vec.norm()) > 0}


def _answers(condition: Condition, tok, prompts, extra: Mapping, new_tokens: int) -> list[str]:
    """Greedy answers of ``condition`` with ``extra`` raw additions on top of its own."""
    offset = _combine(condition.offset, extra)
    model = condition.model
    if offset:
        model = SteeredModel(model, offset, layers=sorted(offset), coefficient_unit="raw")
    coefficient = 1.0 if offset else None
    return generate_condition(
        model, tok, prompts, coefficient=coefficient, system=condition.system,
        new_tokens=new_tokens,
    )  # fmt: skip


def robustness_study(
    conditions: Mapping[str, Condition],
    reference: str,
    tok,
    prompts: Sequence[str],
    attacks: Mapping[str, Mapping[int, torch.Tensor]],
    strengths: Sequence[float],
    score: Score,
    *,
    new_tokens: int = 24,
    strongest_only: Sequence[str] = (),
) -> dict:
    """Answers and behaviour scores of every condition under every attack and strength.

    ``attacks`` maps an attack's name to its direction per layer (raw units per unit strength);
    the attack at strength ``a`` adds ``-a`` times it. ``reference`` (the base model) is scored
    unattacked only. Attacks named in ``strongest_only`` run at the largest strength only.
    ``score(prompts, answers)`` gives one behaviour score per answer. Returns ``{"scores":
    [{"condition", "attack", "strength", "scores", "answers"}], "reference": reference}``;
    strength 0 (attack ``"none"``) is each condition unattacked.

    Example:
        >>> robustness_study({"base": Condition(base), "tuned": Condition(tuned)}, "base", tok,
        ...                  prompts, {"vector": {10: v}}, [0.2], score)
    """
    if reference not in conditions:
        raise ValueError(f"reference {reference!r} is not one of the conditions {list(conditions)}")
    if not strengths or any(a <= 0 for a in strengths):
        raise ValueError(f"strengths must be positive attack sizes, got {list(strengths)}")
    records = []
    for name, condition in conditions.items():
        cells = [("none", 0.0, {})]
        if name != reference:
            for attack, direction in attacks.items():
                sizes = [max(strengths)] if attack in strongest_only else sorted(strengths)
                for a in sizes:
                    cells.append((attack, float(a), {k: -a * v for k, v in direction.items()}))
        for attack, strength, extra in cells:
            answers = _answers(condition, tok, prompts, extra, new_tokens)
            values = [float(s) for s in score(prompts, answers)]
            records.append(
                {"condition": name, "attack": attack, "strength": strength, "scores": values,
                 "answers": answers}
            )  # fmt: skip
    return {"scores": records, "reference": reference}


def _finite(values: dict) -> dict:
    """Non-finite numbers (an undefined share) as None, as the stage file stores them."""
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v
            for k, v in values.items()}  # fmt: skip


def robustness_rows(records: Sequence[Mapping], reference: str = "base", **stats) -> list[dict]:
    """One row per condition, attack and strength: mean behaviour under attack, its paired shift
    over the reference, the paired drop from the condition's own unattacked score, and the kept
    share of the unattacked shift (``(attacked - reference) / (unattacked - reference)``; its
    bounds are None where the unattacked shift's interval includes 0, its value None where that
    shift is 0).

    ``stats`` go to :func:`~reptune.evaluation.paired.paired_comparison` and ``shift_ratio``
    (``n_resamples``, ``confidence``, ``seed``).

    Example:
        >>> robustness_rows(study["scores"], "base")[0]["kept"]
    """
    by_key = {(r["condition"], r["attack"], r["strength"]): r["scores"] for r in records}
    base = by_key.get((reference, "none", 0.0))
    if base is None:
        raise ValueError(f"no unattacked scores of the reference {reference!r}")
    rows = []
    for r in records:
        if r["condition"] == reference:
            continue
        unattacked = by_key[(r["condition"], "none", 0.0)]
        scores = r["scores"]
        shift = paired_comparison(scores, base, **stats)
        drop = paired_comparison(scores, unattacked, **stats)
        kept = shift_ratio(scores, base, unattacked, **stats)
        rows.append(
            {"condition": r["condition"], "attack": r["attack"], "strength": r["strength"],
             "behaviour": sum(scores) / len(scores), "shift": shift.as_dict(),
             "drop": drop.as_dict(), "kept": _finite(kept.as_dict())}
        )  # fmt: skip
    return rows


def attack_directions(run, heldout: Mapping | None = None) -> dict[str, dict[int, torch.Tensor]]:
    """The attacks of a behaviour section: its mean-difference vector at the steered layer
    (``"vector"``) and, given the held-out separation by layer (``heldout``), the same at the
    steered layer and at the next best layer (``"two-layer"``); raw units per unit of
    coefficient.

    Example:
        >>> attack_directions(run, info["heldout"])["two-layer"]  # {10: tensor, 12: tensor}
    """
    unit = "residual_norm"
    attacks = {"vector": {run.layer: run.vecs.direction(run.layer, unit)}}
    accuracy = {int(k): float(v) for k, v in (heldout or {}).items()}
    others = [k for k in accuracy if k != run.layer and k in run.vecs.layers]
    if others:
        other = max(others, key=lambda k: (accuracy[k], -abs(k - run.layer)))
        attacks["two-layer"] = attacks["vector"] | {other: run.vecs.direction(other, unit)}
    return attacks


def behaviour_conditions(run, learned: Mapping[str, tuple] | None = None) -> dict[str, Condition]:
    """The behaviour section's conditions as :class:`Condition`: base, prompting, steered, every
    tuned variant (merged, no prompt, no hooks) and the learned vectors (``name -> (vectors,
    coefficient)``), each at its chosen coefficient.

    Example:
        >>> behaviour_conditions(run, {"learned-lm": (vecs, 0.15)})["steered"].offset
    """
    unit, layer = "residual_norm", run.layer
    conditions = {
        "base": Condition(run.base),
        "prompting": Condition(run.base, system=run.spec.instruction),
        "steered": Condition(
            run.base, offset={layer: run.coefficient * run.vecs.direction(layer, unit)}
        ),
    }
    for variant in run.bargs.variants:
        model = load_variant(run.margs, run.layout.model_dir(variant), merge=True)[0]
        conditions[variant] = Condition(model)
    for name, (vecs, coefficient) in (learned or {}).items():
        conditions[name] = Condition(
            run.base, offset={layer: coefficient * vecs.direction(layer, unit)}
        )
    return conditions


def run_robustness(
    run, score: Score, learned: Mapping[str, tuple] | None = None, heldout: Mapping | None = None
) -> dict:
    """The robustness stage of a behaviour section: every condition of
    :func:`behaviour_conditions` on the first ``robustness_prompts`` test prompts, attacked at
    ``robustness_multiples`` times the chosen coefficient; the two-layer attack at the largest
    strength only (given ``heldout``, the held-out separation by layer). Returns ``{"rows",
    "strengths", "attacks", "prompts"}``; answers and scores are kept in
    ``<section>/data/robustness.jsonl``.

    Example:
        >>> run_robustness(run, lambda p, a: spec.score(base, tok, a, p))["rows"][0]["kept"]
    """
    from ..io import write_jsonl

    bargs = run.bargs
    prompts = run.test[: bargs.robustness_prompts]
    strengths = [float(m) * run.coefficient for m in bargs.robustness_multiples]
    out_file = run.layout.data_file("robustness.jsonl")

    def study():
        conditions = behaviour_conditions(run, learned)
        attacks = attack_directions(run, heldout if bargs.robustness_second_layer else None)
        found = robustness_study(
            conditions, "base", run.tok, prompts, attacks, strengths, score,
            new_tokens=bargs.new_tokens, strongest_only=["two-layer"],
        )  # fmt: skip
        write_jsonl(out_file, found["scores"])
        rows = robustness_rows(found["scores"], "base")
        return {"rows": rows, "strengths": strengths, "attacks": list(attacks),
                "prompts": len(prompts)}  # fmt: skip

    settings = run.settings | {
        "robustness": {"strengths": strengths, "prompts": len(prompts),
                       "learned": {k: c for k, (_, c) in (learned or {}).items()}}
    }  # fmt: skip
    result = run.stages.run(f"{run.name}_robustness", study, settings)
    result["records"] = read_jsonl(out_file) if out_file.exists() else []
    return result
