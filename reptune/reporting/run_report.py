"""The run's report: every table and plot, each number with its interval, and the plain
reading of what the numbers show (including when an effect is not there).

Example:
    >>> report = honesty_report(results, hargs, margs, stages)
    >>> add_behaviour_section(report, behaviour_results)
    >>> report.write(stages.layout.report_dir)
"""

from __future__ import annotations

from ..evaluation.paired_binary import PLANNING_SD, paired_binary
from ..evaluation.stats import minimum_detectable_effect, rate
from ..vectors import SteeringVectors, describe_unit
from .report import Report

__all__ = ["honesty_report", "add_behaviour_section", "add_timings", "overlaps"]

UNIT = describe_unit("residual_norm")
FILTERED = ", filtered to claims the model knows"


def overlaps(a_low, a_high, b_low, b_high) -> bool:
    """Whether two intervals overlap.

    Example:
        >>> overlaps(0.1, 0.3, 0.25, 0.5)
        True
    """
    return not (a_high < b_low or b_high < a_low)


def _honesty_reading(rows: list[dict], data: dict) -> str:
    acc = data["base_claim_accuracy"]
    lines = [
        f"The untuned model answers {acc:.0%} of the {data['test']} test claims correctly "
        f"({data['test_known']} of {data['test']}; letter probability, letters counterbalanced, "
        "chance is 50%)."
    ]
    if acc < 0.65:
        lines.append(
            "It cannot reliably tell true claims from false ones, so an 'honest' direction has "
            "little to work with: expect small or no honesty effects below."
        )
    base = {r["dataset"]: r for r in rows if r["model"] == "base"}
    found = False
    for row in rows:
        b = base.get(row["dataset"])
        if row["model"] == "base" or b is None:
            continue
        for persona in ("honest_persona", "dishonest_persona"):
            key = f"{persona}_items"
            if key not in row or key not in b:
                continue
            c = paired_binary(b[key], row[key])
            if c["low"] > 0 or c["high"] < 0:
                found = True
                way = "higher" if c["difference"] > 0 else "lower"
                lines.append(
                    f"- {row['model']} on {row['dataset']} ({persona.replace('_', ' ')}): "
                    f"{c['rate_b']:.1%} vs base {c['rate_a']:.1%} (n = {c['n']}), {way} beyond "
                    f"the paired 95% interval [{c['low']:+.1%}, {c['high']:+.1%}], McNemar "
                    f"p = {c['p_value']:.3g}."
                )
    if not found:
        n = next(iter(base.values()))["n"] if base else 0
        mde = minimum_detectable_effect(PLANNING_SD, max(n, 2))
        lines.append(
            "No model's honest-answer rate differs from the untuned model's beyond its paired "
            f"95% interval (same test items; at n = {n} the smallest detectable difference is "
            f"about {mde:.0%} at 80% power, taking the item differences' sd as {PLANNING_SD})."
        )
    return "\n".join(lines)


def _perplexity_reading(rows: list[dict], limit: float) -> str:
    lines = []
    for row in rows[1:]:
        change = row["relative_change"]
        ok = "within" if change <= limit else "beyond"
        lines.append(
            f"- {row['model']}: {row['perplexity']:.2f} [{row['perplexity_low']:.2f}, "
            f"{row['perplexity_high']:.2f}], {change:+.1%} against base ({ok} the "
            f"{limit:.0%} allowed on dev; difference {row['difference']:+.2f} "
            f"[{row['difference_low']:+.2f}, {row['difference_high']:+.2f}])."
        )
    return "\n".join(lines)


def honesty_report(results: dict, hargs, margs, stages) -> Report:
    """The honesty sections of a run's report (either paradigm)."""
    if results.get("paradigm") == "context":
        from .honesty_context import context_honesty_report

        return context_honesty_report(results, hargs, margs, stages)
    layout = stages.layout
    report = Report("Representation tuning", model={"spec": margs.model}, dataset=hargs.claims)
    data = results["data"]
    report.section(
        "Data",
        f"{data['claims']} claims: {data['train']} train (vectors and tuning), {data['dev']} dev "
        f"(every choice) and {data['test']} test (every number below); pairing mode "
        f"{hargs.pairing_mode}{FILTERED if hargs.filter_known else ''}.",
    ).add_table("data", [data])
    report.add_rate("base_claim_accuracy", rate(data["test_known"], data["test"]))
    diag = SteeringVectors.load(layout.vectors_dir).metadata.get("diagnostics", {})
    info = results["layers"]
    dev_acc = {int(k): v for k, v in info["dev_accuracy"].items()}
    layers = report.section(
        "Which layers carry honesty",
        "Separation accuracy: the share of pairs whose honest member projects higher on the "
        "vector; train = the pairs it was extracted from, dev = the dev claims' pairs. "
        f"Steered layer(s): {info['steer_layers']}; tuned layers: {info['rep_layers']}.",
    )
    layers.add_table(
        "layers",
        [
            {
                "layer": k,
                "train_accuracy": diag.get(k, {}).get("accuracy"),
                "dev_accuracy": v,
                "explained_variance": diag.get(k, {}).get("explained_variance"),
            }
            for k, v in sorted(dev_acc.items())
        ],
    )
    for name in ("layer_accuracy.png", "pca_scatter.png"):
        if (layout.report_dir / name).exists():
            layers.add_plot(layout.report_dir / name)
    sweep = results["sweep"]
    sec = report.section(
        "Steering sweep (dev claims)",
        f"Letter-probability honest rate on the dev claims, steering one layer at every position. "
        f"Coefficients are in {describe_unit(results['coefficient_unit'])}. Chosen for the "
        f"'steered' model: {sweep['best_coefficient']:g}.",
    )
    sec.add_table("sweep", sweep["rows"])
    if (layout.report_dir / "sweep.png").exists():
        sec.add_plot(layout.report_dir / "sweep.png")
    tuning = report.section(
        "Tuning",
        "Final training metrics; for the rep-tuned models the training step was chosen on dev "
        f"data (the strongest cosine move whose dev perplexity stays within "
        f"{hargs.max_perplexity_increase:.0%} of base). Mean cosine of the tuned layers' "
        "activations with the vector on the test prompts.",
    )
    tuning.add_table(
        "training",
        [
            {"model": k, **{n: v for n, v in t.items() if n != "dev_scores"}}
            for k, t in results["trained"].items()
        ],
    )
    tuning.add_table(
        "target_cosine",
        [
            {"model": m, **{f"layer_{k}": v for k, v in c.items()}}
            for m, c in results["evaluate"]["cosines"].items()
        ],
    )
    rows = results["evaluate"]["rows"]
    report.section("Honesty evaluation (test claims)", _honesty_reading(rows, data)).add_table(
        "honesty", [{k: v for k, v in r.items() if not k.endswith("_items")} for r in rows]
    )
    for row in rows:
        for persona in ("honest_persona", "dishonest_persona"):
            report.add_row_metric(
                f"honest_rate/{row['dataset']}/{row['model']}/{persona}",
                row,
                persona,
                n=row["n"],
                dataset=row["dataset"],
            )
    if results["robustness"]:
        robust = report.section(
            "Robustness to dishonesty steering",
            "Honest rate (honest persona) on the test claims when the base, truth-tuned and "
            "honesty-tuned models are steered with negative coefficients.",
        )
        robust.add_table("robustness", results["robustness"]["rows"])
        if (layout.report_dir / "robustness.png").exists():
            robust.add_plot(layout.report_dir / "robustness.png")
    if results["perplexity"]:
        ppl_rows = results["perplexity"]["rows"]
        report.section(
            "Perplexity",
            "Perplexity on held-out text (sliding windows), each with its bootstrap 95% interval "
            "over windows; the difference to base with a paired bootstrap interval.\n\n"
            + _perplexity_reading(ppl_rows, hargs.max_perplexity_increase),
        ).add_table("perplexity", ppl_rows)
        for row in ppl_rows:
            report.add_row_metric(f"perplexity/{row['model']}", row, "perplexity", n=row["windows"])
    if results["tradeoff"]:
        trade = report.section(
            "Alignment / helpfulness trade-off",
            "Behaviour = mean of +-1 honest answers; helpfulness = probability of the correct "
            "letter (full vocabulary and over the choices).",
        )
        trade.add_table("tradeoff", results["tradeoff"]["rows"])
        trade.add_table("tradeoff_fits", results["tradeoff"]["fits"])
        if (layout.report_dir / "tradeoff.png").exists():
            trade.add_plot(layout.report_dir / "tradeoff.png")
    return report


def add_behaviour_section(report: Report, res: dict) -> None:
    """The behaviour section (:mod:`.behaviour_report`), its prompt-target, learned-vector and
    robustness sections and its diagnostics, when they ran."""
    from .behaviour_report import add_behaviour_section as add_section
    from .objectives_view import add_objective_sections

    add_section(report, res)
    add_objective_sections(report, res)
    add_diagnostics(report, res)


def add_diagnostics(report: Report, res: dict) -> None:
    """The behaviour section's projections and PCA view, when they ran."""
    from .sections import add_section

    for material in (res.get("diagnostics") or {}).get("sections", []):
        add_section(report, material)


def add_timings(report: Report, stages) -> None:
    """The seconds each stage took (a skipped stage shows the time it took when it ran)."""
    report.section("Run", "Seconds per stage.").add_table(
        "timings",
        [
            {"stage": k, "seconds": v, "skipped": k in stages.skipped}
            for k, v in stages.timings.items()
        ],
    )
