"""PNG plots of sweeps, robustness comparisons, trade-off curves and condition scores.

Figures are drawn with matplotlib's object API and saved by :func:`reptune.plotting.save_figure`,
so plotting never touches the global pyplot state or needs a display.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ..evaluation.open_ended.quality import AXES
from ..io import atomic_folder
from ..plotting import save_figure
from .tables import write_table

__all__ = [
    "save_sweep",
    "plot_conditions",
    "plot_rates",
    "plot_robustness",
    "plot_sweep",
    "plot_tradeoff",
]


def _label(row: Mapping, series: Sequence[str]) -> str:
    return ", ".join(f"{key}={row.get(key)}" for key in series)


def plot_rates(
    rows: Sequence[Mapping],
    path: str | Path,
    metric: str = "target_rate",
    group: str = "dataset",
    series: str = "condition",
    ylabel: str | None = None,
) -> Path:
    """Bars of ``metric`` with their ``_low``/``_high`` interval, grouped by ``group``.

    Example:
        >>> plot_rates(rows, "plots/honesty.png", group="dataset", series="condition")
    """
    groups = list(dict.fromkeys(r.get(group) for r in rows))
    names = list(dict.fromkeys(r.get(series) for r in rows))
    stem = metric.rsplit("_", 1)[0]
    width = 0.8 / max(len(names), 1)
    fig = Figure(
        figsize=(max(4.0, 1.0 * len(groups) * max(len(names), 1) + 2), 4.0), layout="constrained"
    )
    ax = fig.subplots()
    for j, name in enumerate(names):
        xs, ys, lo, hi = [], [], [], []
        for i, g in enumerate(groups):
            match = [r for r in rows if r.get(group) == g and r.get(series) == name]
            if not match or match[0].get(metric) is None:
                continue
            r = match[0]
            xs.append(i + (j - (len(names) - 1) / 2) * width)
            ys.append(r[metric])
            lo.append(r[metric] - r.get(f"{stem}_low", r[metric]))
            hi.append(r.get(f"{stem}_high", r[metric]) - r[metric])
        ax.bar(xs, ys, width=width, yerr=[lo, hi], capsize=3, label=str(name), color=f"C{j % 10}")
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([str(g) for g in groups], rotation=15, fontsize=8)
    ax.set_ylabel(ylabel or metric)
    if metric.endswith("_rate"):
        ax.set_ylim(0, 1)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def coefficient_label(rows: Sequence[Mapping]) -> str:
    """The x-axis label of a coefficient plot, naming the rows' coefficient unit.

    Example:
        >>> coefficient_label([{"coefficient_unit": "raw"}])
        'steering coefficient (multiples of the stored vector)'
    """
    from ..vectors import describe_unit

    units = {r.get("coefficient_unit") for r in rows} - {None}
    if len(units) != 1:
        return "steering coefficient"
    return f"steering coefficient ({describe_unit(units.pop())})"


def plot_sweep(
    rows: Sequence[Mapping],
    path: str | Path,
    metric: str = "target_rate",
    series: Sequence[str] = ("layer",),
    title: str | None = None,
    ylabel: str | None = None,
) -> Path:
    """``metric`` against the coefficient, one panel per condition, one line per ``series`` value.

    Rows with ``mode == "ablate"`` are drawn as dashed horizontal lines in their series' colour;
    ``<metric-stem>_low/high`` columns, when present, give error bars.

    Example:
        >>> plot_sweep(result.rows, "plots/sweep.png", series=("layer",))
    """
    conditions = list(dict.fromkeys(r.get("condition", "none") for r in rows))
    fig = Figure(figsize=(5.5 * len(conditions), 4.0), layout="constrained")
    axes = fig.subplots(1, len(conditions), squeeze=False)[0]
    stem = metric.rsplit("_", 1)[0]
    for ax, condition in zip(axes, conditions):
        subset = [r for r in rows if r.get("condition", "none") == condition]
        keys = list(dict.fromkeys(tuple(r.get(s) for s in series) for r in subset))
        for i, key in enumerate(keys):
            color = f"C{i % 10}"
            mine = [r for r in subset if tuple(r.get(s) for s in series) == key]
            label = _label(mine[0], series)
            added = sorted(
                (r for r in mine if r.get("mode", "add") == "add"), key=lambda r: r["coefficient"]
            )
            if added:
                x = np.array([r["coefficient"] for r in added], dtype=float)
                y = np.array(
                    [np.nan if r.get(metric) is None else r[metric] for r in added], dtype=float
                )
                if f"{stem}_low" in added[0] and f"{stem}_high" in added[0]:
                    low = np.array([r[f"{stem}_low"] for r in added], dtype=float)
                    high = np.array([r[f"{stem}_high"] for r in added], dtype=float)
                    ax.fill_between(x, low, high, color=color, alpha=0.15, linewidth=0)
                ax.plot(x, y, marker="o", markersize=3, color=color, label=label)
            for r in mine:
                if r.get("mode") == "ablate" and r.get(metric) is not None:
                    ax.axhline(
                        r[metric],
                        color=color,
                        linestyle="--",
                        linewidth=1,
                        label=f"{label} (ablated)",
                    )
        ax.set_title(condition if title is None else f"{title}: {condition}")
        ax.set_xlabel(coefficient_label(rows))
        ax.set_ylabel(ylabel or metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return save_figure(fig, path)


def plot_tradeoff(
    rows: Sequence[Mapping], fits: Mapping, path: str | Path, title: str | None = None
) -> Path:
    """Behaviour and helpfulness against the coefficient, with the fitted curves.

    Example:
        >>> plot_tradeoff(result.rows, result.fits, "plots/tradeoff.png")
    """
    c = np.array([r["coefficient"] for r in rows], dtype=float)
    grid = np.linspace(c.min(), c.max(), 400)
    fig = Figure(figsize=(11, 4), layout="constrained")
    left, right = fig.subplots(1, 2)
    panels = (
        (left, (("behaviour", "behaviour", "C0"),), "behaviour expectation"),
        (
            right,
            (
                ("p_correct", "helpfulness", "C1"),
                ("p_correct_restricted", "helpfulness_restricted", "C2"),
            ),
            "P(correct letter)",
        ),
    )
    for ax, series, ylabel in panels:
        for column, fit_name, color in series:
            y = np.array([r[column] for r in rows], dtype=float)
            se = np.array([r.get(f"{column}_se", np.nan) for r in rows], dtype=float)
            ax.errorbar(
                c,
                y,
                yerr=np.nan_to_num(se),
                fmt="o",
                markersize=3,
                color=color,
                alpha=0.7,
                label=column,
            )
            fit = fits.get(fit_name)
            if fit is not None:
                params = ", ".join(f"{k}={v:.3g}" for k, v in fit.params.items())
                ax.plot(
                    grid,
                    fit.predict(grid),
                    color=color,
                    label=f"{fit.formula} ({params}; R²={fit.r2:.3f})",
                )
        ax.set_xlabel(coefficient_label(rows))
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def plot_robustness(rows: Sequence[Mapping], path: str | Path, metric: str = "target_rate"):
    """One line per (model, layer) against the coefficient, one panel per condition.

    Example:
        >>> plot_robustness(result.rows, "plots/robustness.png")
    """
    return plot_sweep(rows, path, metric, series=("model", "layer"), title="robustness")


def plot_conditions(rows: Sequence[Mapping], path: str | Path, title: str) -> Path:
    """Grouped bars: each condition's mean on every axis with its interval.

    Example:
        >>> plot_conditions(quality_rows(scores), "report/conditions.png", "sentiment, test")
    """
    fig = Figure(figsize=(1.6 + 1.3 * len(rows), 3.8), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / len(AXES)
    x = np.arange(len(rows))
    for i, axis in enumerate(AXES):
        values = np.array([r[axis] for r in rows], dtype=float)
        low = values - np.array([r[f"{axis}_low"] for r in rows], dtype=float)
        high = np.array([r[f"{axis}_high"] for r in rows], dtype=float) - values
        ax.bar(x + (i - 1.5) * width, values, width, yerr=[low, high], capsize=2, label=axis)
    ax.set_xticks(x, [r["condition"] for r in rows], rotation=20, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("score (0-1), 95% interval")
    ax.set_title(title)
    ax.legend(fontsize=7, ncols=4, loc="upper center")
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path)


def save_sweep(result, directory: str | Path, name: str = "sweep") -> dict[str, Path]:
    """Write a sweep's ``<name>.csv``, ``<name>.json`` and ``<name>.png`` (target rate) into
    ``directory``, all three at once (:func:`reptune.io.atomic_folder`; other files stay).

    ``result`` is a :class:`~reptune.evaluation.studies.sweep.SweepResult` (or anything with
    its ``rows``).

    Example:
        >>> paths = save_sweep(steering_sweep(...), "runs/honesty/sweep")
    """
    directory = Path(directory)
    series = ("model", "layer") if any("model" in r for r in result.rows) else ("layer",)
    with atomic_folder(directory) as tmp:
        write_table(result.rows, tmp / name)
        plot_sweep(result.rows, tmp / f"{name}.png", series=series)
    return {key: directory / f"{name}.{key}" for key in ("csv", "json", "png")}
