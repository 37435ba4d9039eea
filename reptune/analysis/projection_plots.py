"""Heatmaps of generation-time projections: layers by tokens, one panel per model.

Example:
    >>> from reptune.analysis.projection_plots import plot_projections
    >>> plot_projections({"base": base_res, "steered": steered_res}, "p0.png", index=0)
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from .projections import ProjectionResult, check_kind

__all__ = ["plot_projections"]


def _label(token: str) -> str:
    return repr(token)[1:-1][:14]


def plot_projections(
    results: ProjectionResult | Mapping[str, ProjectionResult],
    path: str | Path,
    index: int = 0,
    kind: str = "projection",
    prompt_tokens: int | None = None,
) -> Path:
    """Heatmap of one prompt: layers by tokens, decoded tokens on the x axis.

    Several results (``{"base": r1, "steered": r2}``) are stacked as panels with one shared,
    zero-centred colour scale (clipped at the 98th percentile of ``|value|`` so the attention
    sink does not wash the rest out). A dashed line marks where generation starts;
    ``prompt_tokens`` shows only that many prompt tokens before it.

    Example:
        >>> plot_projections({"base": base_res, "steered": steered_res}, "p0.png", index=0)
    """
    from ..plotting import save_figure

    check_kind(kind)
    named = {"": results} if isinstance(results, ProjectionResult) else dict(results)
    if not named:
        raise ValueError("no results to plot")
    panels = []
    for name, res in named.items():
        if not 0 <= index < len(res):
            raise IndexError(f"prompt index {index} out of range for {len(res)} prompts")
        values = res.values(index, kind).numpy()
        start = 0 if prompt_tokens is None else max(res.prompt_lengths[index] - prompt_tokens, 0)
        panels.append((name, res, values[:, start:], start))
    finite = np.concatenate([np.abs(v[np.isfinite(v)]) for _, _, v, _ in panels])
    limit = float(np.quantile(finite, 0.98)) if finite.size else 1.0
    limit = limit or 1.0
    width = max(p[2].shape[1] for p in panels)
    height = 0.25 * sum(len(res.layers) + 6 for _, res, _, _ in panels)
    fig = Figure(figsize=(max(6.0, 0.17 * width + 2), height), layout="constrained")
    axes = fig.subplots(len(panels), 1, squeeze=False)[:, 0]
    image = None
    for ax, (name, res, values, start) in zip(axes, panels):
        image = ax.imshow(
            np.ma.masked_invalid(values),
            aspect="auto",
            cmap="RdBu_r",
            vmin=-limit,
            vmax=limit,
            interpolation="nearest",
        )
        tokens = res.tokens[index][start:]
        ax.set_xticks(range(len(tokens)))
        ax.set_xticklabels([_label(t) for t in tokens], rotation=90, fontsize=6)
        ax.set_yticks(range(len(res.layers)))
        ax.set_yticklabels([str(layer) for layer in res.layers], fontsize=7)
        ax.set_ylabel("layer")
        ax.axvline(res.prompt_lengths[index] - start - 0.5, color="black", ls="--", lw=1)
        title = f"{name}: " if name else ""
        ax.set_title(f"{title}{kind} per token (generation starts at the dashed line)", fontsize=8)
    fig.colorbar(image, ax=list(axes), extend="both", fraction=0.02, label=kind)
    return save_figure(fig, path)
