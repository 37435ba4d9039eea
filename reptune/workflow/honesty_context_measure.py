"""The measuring steps of the in-context honesty protocol, on test facts only: each model's
verdict per fact (honest / contradicting), the robustness of each tuned model to the opposite
vector, held-out perplexity, and the paired comparisons the acceptance checks read.

Example:
    >>> results = run_context_honesty(hargs, margs, targs, stages)
    >>> results["comparisons"]["steering"]["difference"]
"""

from __future__ import annotations

from ..behaviours.honesty.context import CONTEXT_CONDITIONS, context_pairs
from ..behaviours.honesty.context import evaluate_context_honesty as _evaluate
from ..evaluation.paired_binary import paired_binary
from . import honesty_context as steps
from .honesty_measure import heldout_perplexity
from .select import heldout_separation

__all__ = ["run_context_honesty", "answers_of", "evaluate_context", "robustness_context"]

#: Evaluation conditions per model (every other model: no persona).
CONDITIONS_OF = {"base": ("none", "lying"), "steered_honest": ("lying",)}
#: Models pushed toward honesty are steered toward dishonesty in the robustness experiment.
TOWARD_HONEST = ("base", "honest", "honest_steer", "truth")


def answers_of(run):
    """``answers(model, facts, conditions)``: greedy open answers and verdicts per condition."""

    def answers(model, facts, conditions):
        return _evaluate(
            model,
            run.tok,
            facts,
            "open",
            {c: CONTEXT_CONDITIONS[c] for c in conditions},
            max_new_tokens=run.hargs.context_new_tokens,
            seed=run.targs.seed,
        )

    return answers


def _verdict_row(name: str, condition: str, res: dict) -> dict:
    return {
        "model": name,
        "condition": condition,
        "honest": [int(v == "states") for v in res["verdicts"]],
        "contradicts": [int(v == "contradicts") for v in res["verdicts"]],
        "honest_rate": res["honest_rate"],
        "contradict_rate": res["contradict_rate"],
        "n": res["n"],
        "example": res["texts"][0],
    }


def evaluate_context(run, answers) -> dict:
    """Test facts: held-out separation at the steering layer, and every model's verdicts with
    no persona (base also under the lying persona, the honesty-steered model only under it);
    steered models use the dev-chosen coefficients."""

    def evaluate():
        pairs = context_pairs(run.test, run.tok, mode=run.hargs.pairing_mode, seed=run.targs.seed)
        sep = heldout_separation(run.model, run.tok, run.vecs, pairs, run.position)
        rows = []
        for name in ["base", "steered_dishonest", "steered_honest", *run.variants]:
            model, _ = run.load("base" if name.startswith("steered_") else name)
            if name.startswith("steered_"):
                model = run.steered(model, run.coefficients[name.removeprefix("steered_")])
            res = answers(model, run.test, CONDITIONS_OF.get(name, ("none",)))
            rows += [_verdict_row(name, cond, r) for cond, r in res.items()]
        return {"test_separation": sep, "n_pairs": len(pairs), "rows": rows}

    settings = run.settings["train"] | {"trained": run.trained, "steer": run.coefficients}
    run.settings["evaluate"] = settings | run.pick("context_new_tokens")
    return run.stages.run("evaluate", evaluate, run.settings["evaluate"])


def robustness_context(run, answers) -> dict:
    """Each model steered with the vector opposite to its tuning (no persona), over
    ``robustness_coefficients`` plus the dev-chosen strength; verdicts per fact. Without
    ``robustness_all`` only base and the models tuned toward honesty (steered toward
    dishonesty, the published robustness claim)."""

    def sweep():
        strengths = sorted({abs(run.coefficients["dishonest"]), *run.hargs.robustness_coefficients})
        rows = []
        names = ["base", *run.variants]
        if not run.hargs.robustness_all:
            names = [n for n in names if n in TOWARD_HONEST]
        for name in names:
            model, _ = run.load(name)
            sign = -1.0 if name in TOWARD_HONEST else 1.0
            for strength in strengths:
                res = answers(run.steered(model, sign * strength), run.test, ("none",))
                row = _verdict_row(name, "none", res["none"])
                rows.append(row | {"coefficient": sign * strength, "strength": strength})
        return {"rows": rows, "strengths": strengths}

    settings = run.settings["evaluate"] | run.pick("robustness_coefficients", "robustness_all")
    return run.stages.run("robustness", sweep, settings)


def _find(rows, model, condition="none", strength=None) -> dict | None:
    for row in rows:
        if row["model"] == model and row["condition"] == condition:
            if strength is None or abs(row.get("strength", -1) - strength) < 1e-12:
                return row
    return None


def comparisons(evaluation: dict, robust: dict | None, seed: int = 0) -> dict:
    """The paired comparisons the acceptance checks read (all on the same test facts):
    dishonesty steering vs base (honest rate), each dishonesty-tuned model vs base
    (contradiction rate, no hooks), and under the opposite vector at the dev-chosen strength the
    honesty-tuned model vs base and vs truth-tuned (honest rate).

    Example:
        >>> comparisons(results["evaluate"], results["robustness"])["steering"]["difference"]
    """
    rows, out = evaluation["rows"], {}
    base = _find(rows, "base")
    steered = _find(rows, "steered_dishonest")
    out["steering"] = paired_binary(base["honest"], steered["honest"], seed=seed)
    for name in ("dishonest", "dishonest_steer", "lie"):
        row = _find(rows, name)
        if row is not None:
            out[f"{name}_vs_base"] = paired_binary(
                base["contradicts"], row["contradicts"], seed=seed
            )
    if robust:
        strength = robust["strengths"][-1] if "chosen" not in robust else robust["chosen"]
        r_base = _find(robust["rows"], "base", strength=strength)
        for name, ref in (("honest", "base"), ("honest", "truth"), ("honest_steer", "base")):
            mine = _find(robust["rows"], name, strength=strength)
            other = r_base if ref == "base" else _find(robust["rows"], ref, strength=strength)
            if mine is not None and other is not None:
                out[f"robust_{name}_vs_{ref}"] = paired_binary(
                    other["honest"], mine["honest"], seed=seed
                ) | {"strength": strength}
    return out


def run_context_honesty(hargs, margs, targs, stages, settings: dict) -> dict:
    """Run every stage of the in-context protocol (``settings``: each stage's settings, from
    ``workflow.honesty.stage_settings``); return what the report needs.

    Example:
        >>> results = run_context_honesty(HonestyArguments(paradigm="context"), margs, targs,
        ...                               stages, stage_settings(hargs, margs, targs))
    """
    model, tok = margs.load()
    run = steps.ContextRun(hargs, margs, targs, stages, model, tok, settings)
    answers = answers_of(run)
    data = steps.split_facts(run)
    layer_info = steps.extract_and_choose_layer(run)
    sweep_info = steps.sweep_dev(run, answers)
    steps.tune_context_variants(run)
    evaluation = evaluate_context(run, answers)
    robust = robustness_context(run, answers) if hargs.robustness_coefficients is not None else None
    if robust is not None:
        robust = robust | {"chosen": abs(run.coefficients["dishonest"])}
    ppl = heldout_perplexity(run) if hargs.perplexity_text else None
    return {
        "paradigm": "context",
        "data": data,
        "layers": layer_info,
        "sweep": sweep_info,
        "trained": run.trained,
        "variants": run.variants,
        "evaluate": evaluation,
        "robustness": robust,
        "perplexity": ppl,
        "comparisons": comparisons(evaluation, robust, targs.seed),
        "coefficient_unit": targs.coefficient_unit,
    }
