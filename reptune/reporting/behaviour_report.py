"""The behaviour section of a report: every sentence generated from the section's stage results
(what was chosen among what, on how many dev prompts, or that the config fixed it; which
conditions beat which after Holm), one table of per-axis means with each column's judge named,
paired differences against base and against steering, and a behaviour-vs-fluency plot.

Example:
    >>> add_behaviour_section(report, run_behaviour(bargs, margs, targs, stages))
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from matplotlib.figure import Figure

from ..plotting import save_figure
from .report import Report

__all__ = [
    "choice_sentences",
    "comparison_sentences",
    "plot_pareto",
    "add_behaviour_section",
]


def _num(value, spec: str = ".3f") -> str:
    """``value`` formatted, or "n/a" when it is missing (a stage file stores NaN as null)."""
    if value is None or value != value:
        return "n/a"
    return format(value, spec)


UNIT = "fraction of the layer's median residual norm"
CRITERION = "the dev harmonic mean of the independent scorers"
FIDELITY = (
    "the lowest dev next-token KL(prompted base || tuned without the prompt) along the prompted "
    "model's greedy dev answers"
)


def _grid(values: Sequence, what: str, chosen, dev: int) -> str:
    if len(values) == 1:
        return f"the config fixes the {what} ({chosen})"
    listed = ", ".join(str(v) for v in values)
    return f"the {what} {chosen} was chosen among {len(values)} ({listed}) on {dev} dev prompts"


def _steering_sentence(chosen: Mapping) -> str:
    dev = chosen["dev_prompts"]
    if chosen["layer_source"] == "dev":
        layer = _grid(chosen["layers"], "steering layer", chosen["layer"], dev)
    else:
        layer = (
            f"the steering layer {chosen['layer']} is the one with the best held-out separation "
            "of the pairs (the config names no candidate layers)"
        )
    coef = _grid(chosen["coefficients"], "coefficient", f"{chosen['coefficient']:g}", dev)
    return f"Steering: {layer}; {coef} ({UNIT}), by {CRITERION}."


def _prompting_sentence(prompting: Mapping) -> str:
    names = [r["wording"] for r in prompting["rows"]]
    text = _grid(names, "prompting wording", repr(prompting["chosen"]), prompting["dev_prompts"])
    return f"Prompting: {text}, by {CRITERION}."


def _variant_sentence(variant: str, trained: Mapping) -> str:
    chosen, candidates = trained["chosen"], trained["candidates"]
    dev = trained["dev_prompts"]
    placements = list(dict.fromkeys(c["placement"] for c in candidates))
    rates = list(dict.fromkeys(c["learning_rate"] for c in candidates))
    checkpoints = trained["checkpoints"][chosen["name"]]
    parts = [
        _grid(placements, "LoRA placement", chosen["placement"], dev),
        _grid(rates, "learning rate", f"{chosen['learning_rate']:g}", dev),
        _grid(sorted(int(s) for s in checkpoints), "checkpoint step", chosen["step"], dev),
    ]
    seeds = sorted(int(s) for s in trained["seeds"])
    if trained.get("criterion") == "fidelity":
        by = f"{FIDELITY} ({-chosen['dev_score']:.3f} nats per token"
        if "base_dev_score" in trained:
            by += f"; the base model without the prompt: {-trained['base_dev_score']:.3f}"
        by += ")"
    else:
        by = f"{CRITERION} ({chosen['dev_score']:.3f})"
    return f"{variant}: {'; '.join(parts)}, by {by}; trained with seeds {seeds}."


def choice_sentences(res: Mapping) -> list[str]:
    """One sentence per condition's free choices, read from the stage results.

    Example:
        >>> choice_sentences(results)[0]
        'Steering: the config fixes the steering layer (10); the coefficient 0.15 was chosen ...'
    """
    lines = [_steering_sentence(res["chosen"]), _prompting_sentence(res["prompting"])]
    lines += [_variant_sentence(v, t) for v, t in res["trained"].items()]
    ev = res["evaluated"]
    first = ev["summary"][0]
    lines.append(
        f"Every condition answered {first['n']} test prompts with {first['answers']} answer(s) "
        f"each (greedy{' plus seeded samples' if first['answers'] > 1 else ''}), once per "
        "training seed; the prompts were never used for a choice."
    )
    return lines


def _significant(rows: Sequence[Mapping], metric: str, reference: str) -> tuple[list, list, list]:
    better, worse, neither = [], [], []
    for r in rows:
        if r["metric"] != metric or r["reference"] != reference:
            continue
        text = f"{r['condition']} ({r['difference']:+.3f}, Holm p={r['p_holm']:.2g})"
        if r["significant_holm"]:
            (better if r["difference"] > 0 else worse).append(text)
        else:
            neither.append(r["condition"])
    return better, worse, neither


def comparison_sentences(ev: Mapping, metric: str = "harmonic") -> list[str]:
    """Which conditions beat which on ``metric`` (significant after Holm), from the numbers.

    Example:
        >>> comparison_sentences(results["evaluated"])
        ['Against base (harmonic mean): higher: steered (+0.081, Holm p=0.0002); ...']
    """
    lines = []
    for reference in ("base", "steered"):
        better, worse, neither = _significant(ev["comparisons"], metric, reference)
        parts = []
        if better:
            parts.append("higher: " + ", ".join(better))
        if worse:
            parts.append("lower: " + ", ".join(worse))
        if neither:
            parts.append("no difference shown: " + ", ".join(neither))
        lines.append(f"Against {reference} ({metric}, Holm over the family): {'; '.join(parts)}.")
    mdes = [r["mde"] for r in ev["comparisons"] if r["metric"] == metric]
    if mdes:
        lines.append(
            f"The smallest paired difference in {metric} these prompts detect (alpha 0.05, power "
            f"0.8) is {min(mdes):.3f} to {max(mdes):.3f}; smaller effects may be there unseen."
        )
    return lines


def plot_pareto(summary: Sequence[Mapping], path: str | Path, title: str) -> Path:
    """Behaviour against fluency, one point per condition with both 95% intervals.

    Example:
        >>> plot_pareto(results["evaluated"]["summary"], "report/pareto.png", "sentiment")
    """
    fig = Figure(figsize=(5.2, 4.2), layout="constrained")
    ax = fig.subplots()
    for row in summary:
        x, y = row["fluency"], row["behaviour"]
        ax.errorbar(
            x,
            y,
            xerr=[[x - row["fluency_low"]], [row["fluency_high"] - x]],
            yerr=[[y - row["behaviour_low"]], [row["behaviour_high"] - y]],
            fmt="o",
            capsize=2,
            label=row["condition"],
        )
        ax.annotate(row["condition"], (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("fluency (0-1), 95% interval")
    ax.set_ylabel("behaviour (0-1), 95% interval")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def _means_table(ev: Mapping) -> list[dict]:
    names = ev["scorers"]
    rows = []
    for r in ev["summary"]:
        row = {"condition": r["condition"], "seeds": r["seeds"], "answers": r["answers"]}
        for column, judge in names.items():
            row[f"{column} [{judge}]"] = (
                f"{_num(r[column])} [{_num(r[f'{column}_low'])}, {_num(r[f'{column}_high'])}]"
            )
        rows.append(row)
    return rows


def _difference_table(ev: Mapping, reference: str) -> list[dict]:
    rows: dict[str, dict] = {}
    for r in ev["comparisons"]:
        if r["reference"] != reference:
            continue
        row = rows.setdefault(r["condition"], {"condition": r["condition"]})
        m = r["metric"]
        row[f"{m} difference"] = f"{r['difference']:+.3f} [{r['low']:+.3f}, {r['high']:+.3f}]"
        row[f"{m} Holm p"] = round(r["p_holm"], 4)
        row[f"{m} d_z"] = round(r["effect_size"], 2)
    return list(rows.values())


def _validation_lines(res: Mapping) -> list[str]:
    ev = res["evaluated"]
    lines = [f"Headline axes (scorers that agree with their labels): {', '.join(ev['headline'])}."]
    if not ev["independent_behaviour"]:
        lines.append(
            "This behaviour has no independent scorer: its behaviour column is its own score "
            "function under the model under test."
        )
    for row in res["validation"]:
        if row.get("set") is None:
            lines.append(f"- {row['column']}: {row['scorer']}: no labelled set, not validated.")
            continue
        verdict = "agrees" if row["passes"] else "does not agree: kept out of the headline"
        lines.append(
            f"- {row['column']} ({row['scorer']}) on {row['set']}: {row['metric']} "
            f"{_num(row['value'])} [{_num(row['low'])}, {_num(row['high'])}] vs chance "
            f"{_num(row['bar'])}, n={row['n']}: {verdict}."
        )
        if row.get("by_condition"):
            lines.append(_by_condition_line(row))
    return lines


def _by_condition_line(row: Mapping) -> str:
    """A validation row's metric per condition: value [interval] (n), or why it is missing."""
    parts = []
    for c in row["by_condition"]:
        if c["value"] is None:
            parts.append(f"{c['condition']}: {c['note']} (n={c['n']})")
        elif c["low"] is None:
            parts.append(f"{c['condition']} {_num(c['value'])} (n={c['n']}; {c['note']})")
        else:
            interval = f"[{_num(c['low'])}, {_num(c['high'])}]"
            parts.append(f"{c['condition']} {_num(c['value'])} {interval} (n={c['n']})")
    return f"  - {row['metric']} by condition: " + "; ".join(parts) + "."


def _share_rows(ev: Mapping) -> list[dict]:
    return [
        {
            "condition": s["condition"],
            f"share of the {s['target']} behaviour shift": (
                f"{_num(s['value'], '.0%')} [{_num(s['low'], '.0%')}, {_num(s['high'], '.0%')}]"
                if s["stable"]
                else s["note"]
            ),
        }
        for s in ev["shares"]
    ]


def add_behaviour_section(report: Report, res: Mapping) -> None:
    """The behaviour section: validation of the scorers, the choices, the table of conditions,
    paired differences against base and steering, shares of shifts and the Pareto plot."""
    name, layout, ev = res["name"], res["layout"], res["evaluated"]
    lines = [f"A behaviour this model represents: {name}.", ""]
    lines += _validation_lines(res) + [""]
    lines += [f"- {s}" for s in choice_sentences(res)] + [""]
    lines += [f"- {s}" for s in comparison_sentences(ev)]
    sec = report.section(f"Behaviour: {name}", "\n".join(lines))
    sec.add_table(
        f"{name}_conditions",
        _means_table(ev),
        description="test prompts: each column's mean with its 95% bootstrap interval over "
        "prompts; the judge of each column in brackets",
    )
    for reference in ("base", "steered"):
        sec.add_table(
            f"{name}_vs_{reference}",
            _difference_table(ev, reference),
            description=f"paired differences against {reference} (95% interval, prompt-and-seed "
            "bootstrap), Holm-adjusted p over the declared family, Cohen's d_z",
        )
    sec.add_table(f"{name}_shares", _share_rows(ev), description="behaviour axis, 95% interval")
    plot = plot_pareto(ev["summary"], layout.report_dir / "pareto.png", f"{name}: test prompts")
    sec.add_plot(plot, "behaviour against fluency per condition (test prompts)")
    sec.add_table(f"{name}_dev_sweep", res["chosen"]["rows"], description="dev prompts only")
    sec.add_table(f"{name}_dev_prompting", res["prompting"]["rows"], description="dev only")
    sec.add_table(
        f"{name}_training",
        [{"variant": v, **c} for v, t in res["trained"].items() for c in t["candidates"]],
        description="every variant's candidates on dev prompts (best checkpoint each)",
    )
    sec.add_table(
        f"{name}_kl",
        [{"model": k, **v} for k, v in ev["kl"].items()],
        description="mean KL(steered || model) along the steered model's greedy test answers",
    )
    sec.add_table(f"{name}_perplexity", ev["perplexity"], description="held-out text")
    sec.add_table(f"{name}_examples", ev["examples"], description="the first test prompt")
    for row in ev["summary"]:
        for axis in (*ev["headline"], "harmonic"):
            report.add_row_metric(f"{name}/{axis}/{row['condition']}", row, axis, n=row["n"])
