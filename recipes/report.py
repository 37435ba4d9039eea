"""The recipe's report: every table and plot of a run, with the plain reading of its numbers."""

from __future__ import annotations

from pathlib import Path

from common import add_section

from reptune.evaluation import Report


def _overlap(a_low, a_high, b_low, b_high) -> bool:
    return not (a_high < b_low or b_high < a_low)


def honesty_reading(eval_rows: list[dict], data_info: dict) -> str:
    """Plain-language reading of the honesty table: what differs beyond the intervals."""
    acc = data_info["base_claim_accuracy"]
    lines = [
        f"The untuned model answers {acc:.0%} of the {data_info['claims']} claims correctly "
        "(letter probability; chance is 50%)."
    ]
    if acc < 0.65:
        lines.append(
            "It cannot reliably tell true claims from false ones, so an 'honest' direction has "
            "little to work with: expect small or no honesty effects below."
        )
    base = {r["dataset"]: r for r in eval_rows if r["model"] == "base"}
    for row in eval_rows:
        if row["model"] == "base" or row["dataset"] not in base:
            continue
        b = base[row["dataset"]]
        for persona in ("honest_persona", "dishonest_persona"):
            same = _overlap(
                b[f"{persona}_low"],
                b[f"{persona}_high"],
                row[f"{persona}_low"],
                row[f"{persona}_high"],
            )
            if not same:
                direction = "higher" if row[persona] > b[persona] else "lower"
                lines.append(
                    f"- {row['model']} on {row['dataset']} ({persona.replace('_', ' ')}): "
                    f"{row[persona]:.1%} vs base {b[persona]:.1%}, {direction} beyond the "
                    "95% intervals."
                )
    if len(lines) <= 2 + (acc < 0.65):
        lines.append(
            "No model's honest-answer rate differs from the untuned model's beyond the 95% "
            "Wilson intervals."
        )
    return "\n".join(lines)


def write_honesty_report(
    run_dir: Path,
    margs,
    hargs,
    data_info,
    heldout,
    layer_info,
    sweep_info,
    train_metrics,
    eval_info,
    robust_info,
    ppl_info,
    trade_info,
    behaviour_info,
    stages,
) -> Path:
    report_dir = run_dir / "report"
    report = Report(
        "Honesty representation tuning", model={"spec": margs.model}, dataset=hargs.claims
    )
    summary = report.section(
        "Data",
        f"{data_info['claims']} claims, {data_info['train']} for vectors and tuning, "
        f"{data_info['test']} held out for evaluation (pairing mode {hargs.pairing_mode}"
        f"{', filtered to claims the model knows' if hargs.filter_known else ''}).",
    )
    summary.add_table("data", [data_info])
    report.add_metric(
        "base_claim_accuracy",
        round(data_info["base_claim_accuracy"], 4),
        n=data_info["claims"],
        dataset=hargs.claims,
    )

    layers = report.section(
        "Which layers carry honesty",
        "Separation accuracy: the share of pairs whose honest member projects higher on the "
        "vector; train = the pairs it was extracted from, held-out = the test claims' pairs.",
    )
    from reptune.vectors import SteeringVectors

    diag = SteeringVectors.load(run_dir / "vectors").metadata.get("diagnostics", {})
    layers.add_table(
        "layers",
        [
            {
                "layer": k,
                "train_accuracy": diag.get(k, {}).get("accuracy"),
                "heldout_accuracy": heldout[k],
                "explained_variance": diag.get(k, {}).get("explained_variance"),
            }
            for k in sorted(heldout)
        ],
    )
    layers.text += (
        f"\n\nSteered layer(s): {layer_info['steer_layers']}; tuned layers: "
        f"{layer_info['rep_layers']}."
    )
    for name in ("layer_accuracy.png", "pca_scatter.png"):
        if (report_dir / name).exists():
            layers.add_plot(report_dir / name)

    sweep = report.section(
        "Steering sweep",
        f"Letter-probability honest rate on {hargs.sweep_limit} training claims, steering one "
        f"layer at every position. Coefficient unit: {sweep_info['unit']:.3g} "
        f"({hargs.coefficient_scale}). Chosen for the 'steered' model: "
        f"{sweep_info['best_coefficient']:.3g}.",
    )
    sweep.add_table("sweep", sweep_info["rows"])
    if (report_dir / "sweep.png").exists():
        sweep.add_plot(report_dir / "sweep.png")

    tuning = report.section(
        "Tuning",
        "Final training metrics and the mean cosine between the "
        "tuned layers' activations and the vector on held-out prompts.",
    )
    tuning.add_table("training", [{"model": k, **v} for k, v in train_metrics.items()])
    cos_rows = [
        {"model": m, **{f"layer_{k}": round(v, 4) for k, v in c.items()}}
        for m, c in eval_info["cosines"].items()
    ]
    tuning.add_table("target_cosine", cos_rows)

    honesty = report.section("Honesty evaluation", honesty_reading(eval_info["rows"], data_info))
    honesty.add_table("honesty", eval_info["rows"])
    for row in eval_info["rows"]:
        for persona in ("honest_persona", "dishonest_persona"):
            report.add_metric(
                f"honest_rate/{row['dataset']}/{row['model']}/{persona}",
                round(row[persona], 4),
                ci_low=round(row[f"{persona}_low"], 4),
                ci_high=round(row[f"{persona}_high"], 4),
                n=row["n"],
                dataset=row["dataset"],
            )

    robust = report.section(
        "Robustness to dishonesty steering",
        "Honest rate (honest persona) when the base, truth-tuned and honesty-tuned models are "
        "steered with negative multiples of the vector.",
    )
    robust.add_table("robustness", robust_info["rows"])
    if (report_dir / "robustness.png").exists():
        robust.add_plot(report_dir / "robustness.png")

    if ppl_info:
        text = (
            "Perplexity on held-out text (sliding windows); difference to the base model "
            "with a paired bootstrap 95% interval over windows."
        )
        report.section("Perplexity", text).add_table("perplexity", ppl_info["rows"])
        for row in ppl_info["rows"]:
            report.add_metric(
                f"perplexity/{row['model']}",
                row["perplexity"],
                ci_low=row.get("ci_low"),
                ci_high=row.get("ci_high"),
                n=row["windows"],
            )
    if trade_info:
        trade = report.section(
            "Alignment / helpfulness trade-off",
            "Behaviour = mean of +-1 honest answers; helpfulness = probability "
            "of the correct letter (full vocabulary and over the choices).",
        )
        trade.add_table("tradeoff", trade_info["rows"])
        trade.add_table("tradeoff_fits", trade_info["fits"])
        if (report_dir / "tradeoff.png").exists():
            trade.add_plot(report_dir / "tradeoff.png")
    if behaviour_info:
        add_section(report, behaviour_info)
    report.section(
        "Run", "Seconds per stage (a stage skipped on this run shows the time it took when it ran)."
    ).add_table(
        "timings",
        [
            {"stage": k, "seconds": v, "skipped": k in stages.skipped}
            for k, v in stages.timings.items()
        ],
    )
    return report.write(report_dir)["markdown"]
