"""The measuring steps of the honesty pipeline, on test claims only: A/B honesty rates of every
model, robustness to dishonesty steering, held-out perplexity and the trade-off curves.

Example:
    >>> eval_info = evaluate_variants(run)  # after the steps of honesty_steps
"""

from __future__ import annotations

from ..behaviours.honesty import HONESTY_CONDITIONS, claim_items, claim_rows, evaluate_honesty
from ..evaluation.lm.perplexity import load_text
from ..io import resolve_data
from ..steering import SteeredModel
from .honesty_steps import HonestyRun
from .measure import perplexity_rows, target_cosines

#: Items per extra evaluation set and helpfulness items when no limit is set (caps).
DEFAULT_EVAL_LIMIT = 200
DEFAULT_TRADEOFF_LIMIT = 48

__all__ = ["evaluate_variants", "heldout_perplexity", "robustness", "tradeoff"]


def _honesty_row(model, tok, name: str, set_name: str, items, scorer: str) -> dict:
    """One model's honest-answer rates on one set, under both personas, with intervals."""
    res = evaluate_honesty(model, tok, items, scorer)
    row = {"model": name, "dataset": set_name, "n": res["honest"].n}
    for persona, key in (("honest", "honest_persona"), ("dishonest", "dishonest_persona")):
        r = res[persona].target
        row.update({key: r.value, f"{key}_low": r.low, f"{key}_high": r.high})
        # per item 1 = honest answer, for the paired tests against base (not a table column)
        row[f"{key}_items"] = [int(rec.score == 1) for rec in res[persona].records]
    return row


def evaluate_variants(run: HonestyRun) -> dict:
    """Honest-answer rates of the base, steered and tuned models on the test claims and the
    extra sets; the target cosines of every unsteered model."""
    hargs, targs = run.hargs, run.targs

    def evaluate():
        from ..evaluation.ab.datasets import load_items
        from ..evaluation.ab.sampling import limit_options

        sets = {"held-out claims": claim_items(run.test)}
        for path in hargs.eval_sets:
            sets[path.rsplit("/", 1)[-1]] = load_items(
                resolve_data(path),
                seed=targs.seed,
                **limit_options(hargs.eval_limit, DEFAULT_EVAL_LIMIT),
            )
        rows, cosines = [], {}
        for name in ["base", "steered", *run.variants]:
            m, t = run.load("base" if name == "steered" else name)
            if name == "steered":
                m = SteeredModel(
                    m,
                    run.vecs,
                    layers=run.steer_layers,
                    coefficient=run.best_coefficient,
                    coefficient_unit=targs.coefficient_unit,
                )
            for set_name, items in sets.items():
                rows.append(_honesty_row(m, t, name, set_name, items, hargs.scorer))
            if name != "steered":
                probe = claim_rows(run.test, True)
                cosines[name] = target_cosines(
                    m, t, run.vecs, probe, run.rep_layers, targs.rep_positions
                )
        return {"rows": rows, "cosines": cosines}

    return run.stages.run("evaluate", evaluate, run.settings["evaluate"])


def robustness(run: HonestyRun) -> dict:
    """Base, truth-tuned and honest models steered toward dishonesty (test claims)."""

    def sweep():
        from ..evaluation.studies.robustness import robustness_sweep
        from ..reporting.plots import save_sweep

        loaders = [
            (n, (lambda n=n: run.load(n)[0]))
            for n in ("base", "truth", "honest")
            if n == "base" or n in run.variants
        ]
        res = robustness_sweep(
            loaders,
            run.tok,
            run.vecs,
            claim_items(run.test),
            run.steer_layers[:1],
            run.hargs.robustness_coefficients,
            scorer="letter",
            conditions={"honest": HONESTY_CONDITIONS["honest"]},
            coefficient_unit=run.targs.coefficient_unit,
            progress=False,
        )
        save_sweep(res, run.layout.report_dir, "robustness")
        return {"rows": res.rows}

    settings = run.settings["evaluate"] | run.pick("robustness_coefficients")
    return run.stages.run("robustness", sweep, settings)


def heldout_perplexity(run: HonestyRun) -> dict:
    """Perplexity of the base and every tuned model on the held-out text."""

    def ppl():
        models = {n: run.load(n) for n in ("base", *run.variants)}
        text = load_text(resolve_data(run.hargs.perplexity_text))
        return {"rows": perplexity_rows(models, text, *run.window)}

    settings = run.settings["evaluate"] | run.pick(
        "perplexity_text", "perplexity_window", "perplexity_stride"
    )
    return run.stages.run("perplexity", ppl, settings)


def tradeoff(run: HonestyRun) -> dict:
    """Honesty against helpfulness (A-D items) over the steering coefficient, with fits."""

    def study():
        from ..evaluation.ab.datasets import load_items
        from ..evaluation.ab.sampling import limit_options
        from ..evaluation.studies.tradeoff import tradeoff_study
        from ..reporting.plots import plot_tradeoff

        helpful = load_items(
            resolve_data(run.hargs.tradeoff_items),
            n_choices=4,
            seed=run.targs.seed,
            **limit_options(run.hargs.tradeoff_limit, DEFAULT_TRADEOFF_LIMIT),
        )
        res = tradeoff_study(
            run.model,
            run.tok,
            run.vecs,
            run.steer_layers[0],
            run.hargs.tradeoff_coefficients,
            helpfulness_items=helpful,
            behaviour_items=claim_items(run.test),
            coefficient_unit=run.targs.coefficient_unit,
            progress=False,
        )
        plot_tradeoff(res.rows, res.fits, run.layout.report_dir / "tradeoff.png")
        return {"rows": res.rows, "fits": res.fit_rows(), "layer": res.layer}

    return run.stages.run("tradeoff", study, run.settings["tradeoff"])
