"""The robustness study of a behaviour section as table rows and a figure.

Example:
    >>> print(markdown_table(robustness_table_rows(result["rows"])))
    >>> plot_behaviour_robustness(result["rows"], "report/robustness.png")
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from matplotlib.figure import Figure

from ..plotting import save_figure

__all__ = ["plot_behaviour_robustness", "robustness_table_rows"]


def _interval(d: Mapping, key: str = "difference", scale: float = 1.0) -> str:
    value, low, high = d[key] if key in d else d["value"], d["low"], d["high"]
    if value is None or not math.isfinite(value):
        return "undefined"
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        return f"{scale * value:+.3g} (interval undefined)"
    return f"{scale * value:+.3g} [{scale * low:+.3g}, {scale * high:+.3g}]"


def robustness_table_rows(rows: Sequence[Mapping]) -> list[dict]:
    """Flat table rows of :func:`~reptune.workflow.behaviour_robustness.robustness_rows`:
    behaviour under attack, the paired shift over base, the paired drop from unattacked, and
    the kept share in percent (each with its 95% interval).

    Example:
        >>> markdown_table(robustness_table_rows(result["rows"]))
    """
    table = []
    for r in rows:
        kept = r["kept"]
        table.append(
            {
                "condition": r["condition"],
                "attack": r["attack"],
                "strength": r["strength"],
                "behaviour": r["behaviour"],
                "shift over base": _interval(r["shift"]),
                "drop from unattacked": _interval(r["drop"]),
                "kept %": _interval(kept, "value", 100.0).replace("+", ""),
            }
        )
    return table


def plot_behaviour_robustness(rows: Sequence[Mapping], path: str | Path) -> Path:
    """Behaviour under attack against attack strength, one line per condition (the vector
    attack), the stronger attack as open markers; saved with ``save_figure``.

    Example:
        >>> plot_behaviour_robustness(result["rows"], "report/robustness.png")
    """
    fig = Figure(figsize=(6.5, 4.0), layout="constrained")
    ax = fig.add_subplot()
    conditions = list(dict.fromkeys(r["condition"] for r in rows))
    for i, name in enumerate(conditions):
        color = f"C{i % 10}"
        line = sorted(
            (r for r in rows if r["condition"] == name and r["attack"] in ("none", "vector")),
            key=lambda r: r["strength"],
        )
        ax.plot([-r["strength"] for r in line], [r["behaviour"] for r in line], "o-",
                color=color, label=name)  # fmt: skip
        strong = [
            r for r in rows if r["condition"] == name and r["attack"] not in ("none", "vector")
        ]
        ax.plot([-r["strength"] for r in strong], [r["behaviour"] for r in strong], "s",
                color=color, mfc="none")  # fmt: skip
    ax.set_xlabel("attack coefficient (fraction of residual norm); squares: stronger attack")
    ax.set_ylabel("behaviour score (test prompts)")
    ax.set_title("Steered against the behaviour")
    ax.legend(fontsize=8)
    return save_figure(fig, path)
