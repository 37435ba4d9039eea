"""The honesty protocol on facts given in context: facts -> persona_answer pairs -> per-layer
vectors (layer chosen on dev pairs, ties to the layer that also separates answer-only pairs) ->
steering sweep in both directions on dev facts -> honesty / dishonesty tuning (cosine and steer
objectives) and token-tuned truth / lie baselines -> test-fact honest rates, robustness to the
opposite vector, held-out perplexity; every comparison paired on the same test facts.

Example:
    >>> results = run_context_honesty(hargs, margs, targs, stages)  # hargs.paradigm == "context"
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from ..behaviours.honesty.claims import DISHONEST_PERSONA, HONEST_PERSONA
from ..behaviours.honesty.context import (
    ContextFact,
    context_pairs,
    load_context_facts,
    open_question,
    split_context_facts,
)
from ..evaluation.scorers.degeneracy import RepeatedNgramRate
from ..extract import extract_vectors
from ..io import read_json, resolve_data, write_json
from ..steering import SteeredModel
from ..vectors import SteeringVectors
from .honesty_steps import HonestyRun
from .measure import target_cosines
from .select import best_layer, heldout_separation, layer_window
from .variants import DevSelection, train_variant

__all__ = [
    "CONTEXT_VARIANTS",
    "ContextRun",
    "context_rows",
    "choose_sweep",
    "split_facts",
    "extract_and_choose_layer",
    "sweep_dev",
    "tune_context_variants",
]

#: Tuned model -> how it is trained (the rows' answers are honest or lying).
CONTEXT_VARIANTS = {
    "honest": dict(rep_target="toward", honest=True),
    "dishonest": dict(rep_target="away", honest=False),
    "dishonest_steer": dict(rep_target="steer", honest=False, sign=-1.0),
    "honest_steer": dict(rep_target="steer", honest=True, sign=1.0),
    "truth": dict(rep_weight=0.0, lm_weight=1.0, honest=True),
    "lie": dict(rep_weight=0.0, lm_weight=1.0, honest=False),
}


@dataclass
class ContextRun(HonestyRun):
    """A :class:`HonestyRun` whose splits hold facts; ``coefficients`` are the dev-chosen
    steering coefficients (``{"dishonest": c < 0, "honest": c > 0}``).

    Example:
        >>> run = ContextRun(hargs, margs, targs, stages, model, tok, settings)
    """

    coefficients: dict[str, float] = field(default_factory=dict)

    def steered(self, model, coefficient: float):
        """``model`` steered at the steering layer (itself when ``coefficient`` is 0)."""
        if coefficient == 0:
            return model
        return SteeredModel(
            model,
            self.vecs,
            layers=self.steer_layers,
            coefficient=coefficient,
            coefficient_unit=self.targs.coefficient_unit,
        )


def context_rows(facts, honest: bool) -> list[dict]:
    """Training rows: each fact's open question under the honest and the lying persona, answered
    with the key answer (``honest``) or the fact's first wrong answer.

    Example:
        >>> context_rows([fact], True)[0]["completion"]
        'Drawer.'
    """
    rows = []
    for fact in facts:
        text = (fact.answer if honest else fact.wrong[0])[0]
        answer = text[0].upper() + text[1:] + "."
        for persona in (HONEST_PERSONA, DISHONEST_PERSONA):
            rows.append({"prompt": open_question(fact), "system": persona, "completion": answer})
    return rows


def _facts_json(facts) -> list[dict]:
    return [asdict(f) for f in facts]


def _facts_from_json(rows) -> list[ContextFact]:
    return [
        ContextFact(
            **{k: r[k] for k in ("id", "kind", "template", "twin", "context", "question")},
            answer=tuple(r["answer"]),
            wrong=tuple(tuple(w) for w in r["wrong"]),
            meta=r.get("meta", {}),
        )
        for r in rows
    ]


def split_facts(run: ContextRun) -> dict:
    """Facts of the chosen kinds -> train / dev / test by template (no template or twin crosses
    a split); counts per split and kind."""
    h = run.hargs

    def split():
        facts = load_context_facts(resolve_data(h.context_facts) if h.context_facts else None)
        facts = [f for f in facts if f.kind in h.context_kinds]
        parts = split_context_facts(facts, h.context_dev_size, h.context_test_size, run.targs.seed)
        for name, part in parts.items():
            write_json(run.layout.data_file(f"{name}_facts.json"), _facts_json(part))
        return {"facts": len(facts), "kinds": list(h.context_kinds)} | {
            k: len(v) for k, v in parts.items()
        }

    data = run.stages.run("pairs", split, run.settings["pairs"])
    run.train, run.dev, run.test = (
        _facts_from_json(read_json(run.layout.data_file(f"{n}_facts.json")))
        for n in ("train", "dev", "test")
    )
    return data


def extract_and_choose_layer(run: ContextRun) -> dict:
    """Vectors from the train facts' persona_answer pairs; the steering layer is the best dev
    separation, ties broken by the separation of answer-only dev pairs (no persona)."""
    h = run.hargs

    def vectors():
        pairs = context_pairs(run.train, run.tok, mode=h.pairing_mode, seed=run.targs.seed)
        vecs = extract_vectors(
            run.model, run.tok, pairs, h.extract_layers, h.extract_method, run.position
        )
        vecs.save(run.layout.vectors_dir)
        return {"layers": vecs.layers, "pairs": len(pairs)}

    run.stages.run("vectors", vectors, run.settings["vectors"])
    run.vecs = SteeringVectors.load(run.layout.vectors_dir, model=run.model)

    def layers():
        sep = {}
        for mode in ("persona_answer", "answer"):
            pairs = context_pairs(run.dev, run.tok, mode=mode, seed=run.targs.seed)
            sep[mode] = heldout_separation(run.model, run.tok, run.vecs, pairs, run.position)
        steer = h.steer_layers or [best_layer(sep[h.pairing_mode], tie_break=sep["answer"])]
        rep = run.targs.rep_layers or layer_window(steer[0], run.vecs.layers, h.num_rep_layers)
        return {
            "dev_accuracy": sep[h.pairing_mode],
            "dev_answer_accuracy": sep["answer"],
            "steer_layers": steer,
            "rep_layers": rep,
        }

    info = run.stages.run("layers", layers, run.settings["layers"])
    run.steer_layers, run.rep_layers = info["steer_layers"], info["rep_layers"]
    return info


def choose_sweep(rows: list[dict], max_repeated: float | None = None) -> dict:
    """From dev sweep rows (``coefficient``, ``condition``, ``honest_rate``,
    ``contradict_rate``, optionally ``repeated``): the dishonest coefficient (negative; the
    fewest honest answers without a persona, then the most contradictions, ties to the weaker
    push) among the pushes whose answers stay text (mean share of words in repeated 3-grams at
    most ``max_repeated``; the weakest push when none does), and the honest one (positive; most
    honest answers under the lying persona, ties to the weaker push).

    Example:
        >>> choose_sweep(rows, max_repeated=0.2)
        {'dishonest': -0.5, 'honest': 0.25}
    """
    neg = [r for r in rows if r["coefficient"] < 0 and r["condition"] == "none"]
    pos = [r for r in rows if r["coefficient"] > 0 and r["condition"] == "lying"]
    if not neg or not pos:
        raise ValueError("sweep_coefficients needs negative and positive values for the context")
    if max_repeated is not None:
        kept = [r for r in neg if r.get("repeated", 0.0) <= max_repeated]
        neg = kept or [max(neg, key=lambda r: r["coefficient"])]
    dishonest = min(neg, key=lambda r: (r["honest_rate"], -r["contradict_rate"], -r["coefficient"]))
    honest = max(pos, key=lambda r: (r["honest_rate"], -r["coefficient"]))
    return {"dishonest": dishonest["coefficient"], "honest": honest["coefficient"]}


def sweep_dev(run: ContextRun, answers) -> dict:
    """Steering sweep on the dev facts, both directions, with and without the lying persona."""

    def sweep():
        rows = []
        for coef in sorted({0.0, *run.hargs.sweep_coefficients}):
            # a push toward dishonesty is read without a persona, one toward honesty against
            # the lying persona (the criteria of choose_sweep); 0 under both
            conditions = ("none",) if coef < 0 else ("lying",) if coef > 0 else ("none", "lying")
            res = answers(run.steered(run.model, coef), run.dev, conditions)
            for cond, r in res.items():
                repeated = RepeatedNgramRate(3).score([""] * len(r["texts"]), r["texts"])
                share = sum(0.0 if math.isnan(x) else x for x in repeated) / max(1, len(repeated))
                rows.append({"coefficient": coef, "condition": cond, "repeated": share} | _rates(r))
        guard = run.hargs.sweep_max_repeated
        return {"rows": rows, "chosen": choose_sweep(rows, guard), "max_repeated": guard}

    info = run.stages.run("sweep", sweep, run.settings["sweep"])
    run.best_coefficient = info["chosen"]["dishonest"]
    run.coefficients = info["chosen"]
    return info


def _rates(res: dict) -> dict:
    return {k: res[k] for k in ("honest_rate", "contradict_rate", "n")}


def _cosine_choice(run: ContextRun, target: str) -> DevSelection:
    """Dev criterion of a cosine variant: the mean cosine of the dev rows, toward or away."""
    sign = 1.0 if target == "toward" else -1.0
    rows = context_rows(run.dev, True)

    def score(m) -> float:
        cos = target_cosines(m, run.tok, run.vecs, rows, run.rep_layers, run.targs.rep_positions)
        return sign * sum(cos.values()) / len(cos)

    return DevSelection(score, run.hargs.select_every)


def tune_context_variants(run: ContextRun) -> None:
    """Train each tuned model of ``hargs.context_variants`` on the train facts' rows."""
    for name in run.hargs.context_variants:
        spec = dict(CONTEXT_VARIANTS[name])
        rows = context_rows(run.train, spec.pop("honest"))
        select, extra = None, {"rep_layers": run.rep_layers}
        if spec.get("rep_target") in ("toward", "away"):
            select = _cosine_choice(run, spec["rep_target"])
        if spec.get("rep_target") == "steer":
            key = "dishonest" if spec.pop("sign") < 0 else "honest"
            extra = {"rep_layers": run.steer_layers, "steer_coefficient": run.coefficients[key]}
            extra["coefficient_unit"] = run.targs.coefficient_unit
        run.variants[name] = spec | extra
        out = run.folder(name)
        run.trained[name] = run.stages.run(
            f"tune_{name}",
            lambda out=out, rows=rows, spec=spec, extra=extra, select=select: train_variant(
                run.margs, run.targs, run.vecs, rows, out, select=select, **spec, **extra
            ),
            run.settings["train"] | {"variant": spec | extra, "steer": run.coefficients},
            main_process_only=False,
        )
