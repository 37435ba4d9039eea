"""The behaviour section on test prompts: every condition answers every test prompt (greedy plus
seeded samples, once per training seed), every answer is scored by the section's scorers into
score tables ``(prompts, seeds, answers)``, and the conditions are compared pairwise against base
and against steering (paired bootstrap, Holm over the declared family, d_z, the smallest
detectable difference, shares of the steered and the prompting shift).

The conditions are declared in one place, :func:`section_conditions`; the evaluation is generic
over that dict, so a new condition is one more entry.

Example:
    >>> conditions = section_conditions(run)
    >>> tables = answer_and_score(run, conditions)
    >>> stats = compare_conditions(tables, list(conditions))
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..behaviours.sentiment import load_heldout_text
from ..evaluation.ab.scoring import generate_texts, with_coefficient
from ..evaluation.open_ended.quality import next_token_kl
from ..evaluation.paired import compare_family, shift_ratio
from ..evaluation.stats import mean_interval, minimum_detectable_effect
from ..pairs import format_chat
from ..steering import SteeredModel
from .behaviour_tuning import seed_dir
from .measure import perplexity_rows, target_cosines
from .variants import load_variant

__all__ = [
    "Condition",
    "REFERENCES",
    "section_conditions",
    "answer_and_score",
    "declared_comparisons",
    "compare_conditions",
    "summary_rows",
    "bound_steered",
    "reference_measures",
]

#: The references every condition is compared with, in the order of the report's tables.
REFERENCES = ("base", "steered")


@dataclass
class Condition:
    """One condition of the table: ``load(seed)`` gives its model, ``format(prompt)`` the
    generation text, ``coefficient`` steers (a SteeredModel), ``seeds`` its training seeds
    (one for conditions that train nothing).

    Example:
        >>> Condition("base", lambda seed: base, lambda p: format_chat(tok, p))
    """

    kind: str
    load: Callable[[int], object]
    format: Callable[[str], str]
    seeds: Sequence[int] = (0,)
    coefficient: float | None = None


def section_conditions(run) -> dict[str, Condition]:
    """The section's conditions: base, prompting (the dev-chosen wording), steered (the
    dev-chosen layer and coefficient), every tuned variant with all its seeds, and every learned
    vector (``run.learned``: name -> (vectors, dev-chosen coefficient)) steering the base model
    at the chosen layer."""
    tok = run.tok
    chat = lambda p: format_chat(tok, p)  # noqa: E731
    wording = run.wording
    conditions = {
        "base": Condition("base", lambda seed: run.base, chat),
        "prompting": Condition(
            "prompting", lambda seed: run.base, lambda p: wording.format(tok, p)
        ),
        "steered": Condition(
            "steering", lambda seed: run.steered(), chat, coefficient=run.coefficient
        ),
    }
    for variant in run.bargs.variants:
        conditions[variant] = Condition(
            "tuned",
            lambda seed, v=variant: load_variant(run.margs, seed_dir(run, v, seed), merge=True)[0],
            chat,
            seeds=tuple(run.bargs.seeds),
        )
    for name, (vecs, coefficient) in (getattr(run, "learned", None) or {}).items():
        conditions[name] = Condition(
            "learned",
            lambda seed, v=vecs: SteeredModel(run.base, v, layers=[run.layer]),
            chat,
            coefficient=coefficient,
        )
    return conditions


def _answers(run, condition: Condition, seed: int, texts: list[str]) -> list[list[str]]:
    """``(prompts, answers)``: the greedy answer, then ``samples`` seeded sampled answers."""
    model = condition.load(seed)
    coefs = (
        None
        if condition.coefficient is None
        else torch.full((len(texts),), float(condition.coefficient))
    )
    bargs = run.bargs
    common = dict(
        coefficients=coefs, max_new_tokens=bargs.new_tokens, batch_size=bargs.eval_batch_size
    )
    runs = [generate_texts(model, run.tok, texts, **common)]
    for k in range(run.bargs.samples):
        runs.append(
            generate_texts(model, run.tok, texts, do_sample=True, seed=1000 * seed + k, **common)
        )
    return [list(answers) for answers in zip(*runs)]


def answer_and_score(run, conditions: Mapping[str, Condition]) -> dict:
    """Answers and score tables of every condition on the test prompts: ``{"answers":
    {condition: [prompt][seed][answer]}, "scores": {column: {condition: table}}}``."""
    prompts = run.test
    answers, scores = {}, {}
    for name, condition in conditions.items():
        texts = [condition.format(p) for p in prompts]
        per_seed = [_answers(run, condition, seed, texts) for seed in condition.seeds]
        table = [[per_seed[s][i] for s in range(len(per_seed))] for i in range(len(prompts))]
        answers[name] = table
        n_seeds, n_answers = len(per_seed), len(table[0][0])
        flat_prompts = [p for p in prompts for _ in range(n_seeds * n_answers)]
        flat_answers = [a for row in table for seed in row for a in seed]
        columns = run.scorers.score(flat_prompts, flat_answers)
        for column, values in columns.items():
            shaped = np.asarray(values, dtype=float).reshape(len(prompts), n_seeds, n_answers)
            scores.setdefault(column, {})[name] = shaped.tolist()
    return {"answers": answers, "scores": scores}


def declared_comparisons(names: Sequence[str]) -> list[tuple[str, str]]:
    """Every condition against base, and every other condition against steered."""
    pairs = [(c, "base") for c in names if c != "base"]
    return pairs + [(c, "steered") for c in names if c not in ("base", "steered")]


def compare_conditions(
    scores: Mapping[str, Mapping[str, object]],
    names: Sequence[str],
    metrics: Sequence[str],
    *,
    n_resamples: int = 9999,
) -> dict:
    """Per metric, the declared family of paired comparisons (Holm-adjusted), each with d_z and
    the smallest difference detectable at its sd (alpha 0.05, power 0.8); and the share of the
    steered and of the prompting shift of the behaviour each condition reaches."""
    family = declared_comparisons(names)
    rows = []
    for metric in metrics:
        tables = {n: np.asarray(scores[metric][n]) for n in names}
        for (cond, ref), (comp, holm) in compare_family(
            tables, family, n_resamples=n_resamples
        ).items():
            rows.append(
                {
                    "metric": metric,
                    "condition": cond,
                    "reference": ref,
                    **comp.as_dict(),
                    "p_holm": holm.p_adjusted,
                    "significant_holm": bool(holm.reject),
                    "mde": minimum_detectable_effect(comp.sd_difference, comp.n_prompts),
                }
            )
    shares = []
    behaviour = {n: np.asarray(scores["behaviour"][n]) for n in names}
    for target in ("steered", "prompting"):
        for cond in names:
            if cond in ("base", target) or target not in behaviour:
                continue
            ratio = shift_ratio(behaviour[cond], behaviour["base"], behaviour[target])
            shares.append({"condition": cond, "target": target, **ratio.as_dict()})
    return {"comparisons": rows, "shares": shares, "family": [list(p) for p in family]}


def summary_rows(scores: Mapping[str, Mapping[str, object]], names: Sequence[str]) -> list[dict]:
    """One row per condition: each column's mean over prompts with its 95% interval (per-prompt
    means over seeds and answers are the bootstrap units; an unscored answer, e.g. a degeneracy
    measure of a one-word answer, is left out, and a prompt with none scored too)."""
    rows = []
    for name in names:
        row: dict = {"condition": name}
        for column, tables in scores.items():
            table = np.asarray(tables[name], dtype=float)
            row["n"], row["seeds"], row["answers"] = table.shape
            scored = ~np.isnan(table)
            sums = np.where(scored, table, 0.0).sum(axis=(1, 2))
            counts = scored.sum(axis=(1, 2))
            means = (sums[counts > 0] / counts[counts > 0]).tolist()
            m = mean_interval(means) if means else None
            row.update(
                {
                    column: m.value if m else float("nan"),
                    f"{column}_low": m.low if m else float("nan"),
                    f"{column}_high": m.high if m else float("nan"),
                }
            )
        rows.append(row)
    return rows


def bound_steered(run):
    """The steered model bound to the chosen coefficient (for KL and perplexity)."""
    return with_coefficient(run.steered(), torch.tensor(float(run.coefficient)))


def reference_measures(run, tuned: dict, steered_texts: list[str]) -> dict:
    """KL to the steered model along its greedy test answers and target cosines on the first
    ``reference_prompts`` test prompts (all when None; none when 0), and perplexity on held-out
    text (first seed of each variant).

    Example:
        >>> refs = reference_measures(run, tuned, steered_answers)
    """
    base, tok, bargs = run.base, run.tok, run.bargs
    n = len(run.test) if bargs.reference_prompts is None else bargs.reference_prompts
    test = run.test[:n]
    bound = bound_steered(run)
    kl, cosines = {}, {}
    if test:
        chat = [format_chat(tok, p) for p in test]
        compared = {"base": base, **tuned}
        for cname, values in next_token_kl(bound, compared, tok, chat, steered_texts[:n]).items():
            m = mean_interval(values)
            kl[cname] = {"kl_to_steered": m.value, "kl_low": m.low, "kl_high": m.high}
        probe = [{"prompt": p} for p in test]
        cosines = {
            c: target_cosines(m, tok, run.vecs, probe, [run.layer], "all")[run.layer]
            for c, m in compared.items()
        }
    models = {"base": (base, tok), "steered": (bound, tok)} | {
        v: (m, tok) for v, m in tuned.items()
    }
    ppl = perplexity_rows(
        models, load_heldout_text(), bargs.perplexity_window, bargs.perplexity_stride
    )
    return {"kl": kl, "perplexity": ppl, "cosines": cosines, "reference_prompts": len(test)}
