"""The behaviour section's further objectives in the run report: the prompt tuned into the
weights against prompting, learned vectors against mean difference at matched fluency, and the
robustness study (table beside its curves).

Example:
    >>> add_objective_sections(report, run_behaviour(bargs, margs, targs, stages))
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..evaluation.paired import paired_comparison
from ..evaluation.stats import holm
from .report import Report
from .robustness_view import plot_behaviour_robustness, robustness_table_rows

__all__ = ["add_objective_sections", "prompt_target_rows", "tuned_vs_prompting_rows"]


def _pc(d: Mapping) -> str:
    return f"{d['difference']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"


def _per_prompt(table) -> list[float]:
    """Per-prompt means of a ``(prompts, seeds, answers)`` score table (unscored left out)."""
    values = np.asarray(table, dtype=float)
    return np.nanmean(values.reshape(values.shape[0], -1), axis=1).tolist()


def prompt_target_rows(ev: Mapping, variants, fraction: float = 0.9) -> list[dict]:
    """For each prompt-target variant on the test prompts: the share of prompting's behaviour
    shift over base it reaches (the evaluation's ``shares``, paired bootstrap); its behaviour
    minus ``fraction`` of the way from base to prompting, per prompt (paired, defined even when
    prompting's own shift is uncertain: above 0 means it reaches that fraction); and its
    harmonic mean minus prompting's (paired over per-prompt means of the score tables).

    Example:
        >>> prompt_target_rows(evaluated, ["rep-prompt"])[0]["share"]
    """
    shares = {r["condition"]: r for r in ev["shares"] if r["target"] == "prompting"}
    harmonic, behaviour = ev["scores"]["harmonic"], ev["scores"]["behaviour"]
    base = np.asarray(_per_prompt(behaviour["base"]))
    prompted = np.asarray(_per_prompt(behaviour["prompting"]))
    bar = (base + fraction * (prompted - base)).tolist()
    out = []
    for v in variants:
        share = shares[v]
        difference = paired_comparison(_per_prompt(harmonic[v]), _per_prompt(harmonic["prompting"]))
        reach = paired_comparison(_per_prompt(behaviour[v]), bar)
        out.append({"variant": v, "share": share["value"], "share_low": share["low"],
                    "share_high": share["high"], "share_note": share.get("note") or "",
                    "share_stable": bool(share.get("stable", True)), "fraction": fraction,
                    "behaviour_minus_fraction": reach.as_dict(),
                    "harmonic_minus_prompting": difference.as_dict()})  # fmt: skip
    return out


def tuned_vs_prompting_rows(ev: Mapping) -> list[dict]:
    """Every tuned model (no prompt, no hooks) against prompting on the test prompts: harmonic
    mean minus prompting's, paired over per-prompt means, with Holm over the tuned models.

    Example:
        >>> [r["condition"] for r in tuned_vs_prompting_rows(evaluated)]
        ['token-sft', 'rep-steer']
    """
    harmonic = ev["scores"]["harmonic"]
    kinds = ev.get("conditions", {})
    tuned = [c for c in harmonic if kinds.get(c, {}).get("kind") == "tuned"]
    if "prompting" not in harmonic or not tuned:
        return []
    reference = _per_prompt(harmonic["prompting"])
    diffs = {c: paired_comparison(_per_prompt(harmonic[c]), reference) for c in tuned}
    adjusted = holm({c: d.p_value for c, d in diffs.items()})
    return [
        {"condition": c, **diffs[c].as_dict(), "p_holm": h.p_adjusted, "above": bool(
            h.reject and diffs[c].low > 0)}
        for c, h in zip(tuned, adjusted)
    ]  # fmt: skip


def _against_prompting_line(rows) -> str:
    above = [r for r in rows if r["above"]]
    if not above:
        return (
            f"No tuned model (no prompt, no hooks) has a harmonic mean above prompting's with a "
            f"paired interval above 0 (Holm over the {len(rows)} tuned models): "
            + "; ".join(f"{r['condition']} {_pc(r)}" for r in rows)
            + "."
        )
    return (
        "Tuned models (no prompt, no hooks) with a harmonic mean above prompting's (paired "
        f"interval above 0, Holm over the {len(rows)} tuned models): "
        + "; ".join(f"{r['condition']} {_pc(r)} (Holm p {r['p_holm']:.2g})" for r in above)
        + ". Not shown: "
        + ("; ".join(f"{r['condition']} {_pc(r)}" for r in rows if not r["above"]) or "none")
        + "."
    )


def _reach(r: Mapping) -> str:
    d, part = r["behaviour_minus_fraction"], f"{100 * r['fraction']:.0f}%"
    verdict = (
        f"it reaches {part} of prompting's shift"
        if d["low"] > 0
        else f"it falls short of {part} of prompting's shift"
        if d["high"] < 0
        else f"these prompts cannot tell whether it reaches {part} of prompting's shift"
    )
    return f"its behaviour minus base + {part} of prompting's shift, paired: {_pc(d)}, so {verdict}"


def _prompt_lines(rows) -> list[str]:
    lines = []
    for r in rows:
        harmonic = f"harmonic mean minus prompting's: {_pc(r['harmonic_minus_prompting'])}"
        if not r["share_stable"]:
            lines.append(
                f"- {r['variant']} (no prompt, no hooks): no share of prompting's shift "
                f"({r['share_note']}); {_reach(r)}; {harmonic}."
            )
            continue
        lines.append(
            f"- {r['variant']} (no prompt, no hooks) moves behaviour {100 * r['share']:.0f}% "
            f"[{100 * r['share_low']:.0f}, {100 * r['share_high']:.0f}] as far as prompting "
            f"does; {_reach(r)}; {harmonic}. {r['share_note']}".rstrip()
        )
    return lines


def _learned_lines(choices: Mapping, matched: Mapping) -> tuple[list[str], list[dict]]:
    lines, table = [], []
    md = matched["mean_diff"]
    for name, m in matched.items():
        if name == "mean_diff":
            continue
        b = m["behaviour_vs_mean_diff"]
        verdict = "above" if b["low"] > 0 else "below" if b["high"] < 0 else "not different from"
        lines.append(
            f"- {name}: at coefficient {m['coefficient']:g} (dev fluency closest to mean "
            f"difference's {choices['mean_diff_fluency']:.3f}) its test behaviour is {verdict} "
            f"mean difference's: {_pc(b)}; fluency difference {_pc(m['fluency_vs_mean_diff'])}."
        )
        table.append({"vector": name, "matched_coefficient": m["coefficient"],
                      "dev_best_coefficient": choices[name]["coefficient"],
                      "behaviour": m["behaviour"], "fluency": m["fluency"],
                      "mean_diff_behaviour": md["behaviour"], "mean_diff_fluency": md["fluency"],
                      "behaviour_difference": _pc(b),
                      "fluency_difference": _pc(m["fluency_vs_mean_diff"])})  # fmt: skip
    return lines, table


def add_objective_sections(report: Report, res: Mapping) -> None:
    """The prompt-target, learned-vector and robustness sections of a behaviour section's
    material (each only when it ran).

    Example:
        >>> add_objective_sections(report, material)
    """
    name, ev = res["name"], res["evaluated"]
    against = tuned_vs_prompting_rows(ev)
    if against:
        sec = report.section(f"{name}: tuned models against prompting", _against_prompting_line(
            against))  # fmt: skip
        keys = ("condition", "difference", "low", "high", "p_value", "p_holm", "above")
        about = "harmonic mean minus prompting's, paired over test prompts"
        table = [{k: r[k] for k in keys} for r in against]
        sec.add_table(f"{name}_vs_prompting", table, description=about)
    variants = [v for v in ev["scores"]["harmonic"] if v.startswith("rep-prompt")]
    if variants:
        rows = prompt_target_rows(ev, variants)
        text = "Test prompts, paired over prompts (95% bootstrap intervals).\n\n"
        report.section(f"{name}: the prompt tuned into the weights", text + "\n".join(
            _prompt_lines(rows)))  # fmt: skip
    if res.get("learned_matched"):
        lines, table = _learned_lines(res["learned_choices"], res["learned_matched"])
        sec = report.section(f"{name}: learned vectors at matched fluency", "\n".join(lines))
        about = "test prompts; learned minus mean difference, paired"
        sec.add_table(f"{name}_learned_matched", table, description=about)
    robust = res.get("robustness")
    if robust:
        text = (
            f"Every condition steered against its behaviour on {robust['prompts']} test prompts "
            f"(attacks: {', '.join(robust['attacks'])}; strengths "
            f"{', '.join(f'{a:g}' for a in robust['strengths'])}, residual-norm units). Kept: "
            "(attacked - base) / (unattacked - base), paired bootstrap over prompts."
        )
        sec = report.section(f"{name}: robustness", text)
        sec.add_table(f"{name}_robustness", robustness_table_rows(robust["rows"]))
        path = plot_behaviour_robustness(robust["rows"], report.plot_path("robustness.png"))
        sec.add_plot(path, "behaviour under attack (squares: the stronger attack)")
