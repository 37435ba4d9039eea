"""Report material for the generation-time diagnostics, the PCA token view and the suffix attack.

Each builder runs its analysis, writes its files (PNGs, raw results) under ``folder`` and returns
``{"title", "text", "tables": [{"name", "title", "rows"}], "plots": [paths], "seconds"}``;
:func:`add_section` puts such a dict into a :class:`~.report.Report`.

Example:
    >>> sec = projection_section({"base": model, "steered": steered}, tok, vecs, prompts,
    ...                          layers=[4, 10, 16], folder="runs/x/report")
    >>> add_section(report, sec)
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from ..analysis.projection_plots import plot_projections
from ..analysis.projections import record_projections
from ..analysis.token_pca import plot_token_pca, token_pca
from ..evaluation.adversarial.attack import AttackConfig, compare_attacks
from ..plotting import save_figure
from .plots import plot_rates

__all__ = ["projection_section", "pca_section", "attack_section", "add_section"]


def add_section(report, material: Mapping[str, Any]):
    """Add a builder's dict to ``report`` as one section; returns the section.

    Example:
        >>> add_section(report, attack_section(models, tok, items, cfg, "runs/x/report"))
    """
    sec = report.section(material["title"], material.get("text", ""))
    for table in material.get("tables", []):
        sec.add_table(table["name"], table["rows"], title=table.get("title"))
    for path in material.get("plots", []):
        sec.add_plot(path)
    return sec


def projection_section(
    models: Mapping[str, Any],
    tokenizer,
    vectors,
    prompts: Sequence[str],
    layers: Sequence[int],
    folder: str | Path,
    *,
    max_new_tokens: int = 30,
    plot_prompts: int = 2,
    last: int = 5,
) -> dict[str, Any]:
    """Projections onto ``vectors`` during generation for each model (base, steered, tuned...).

    Writes ``projections/<name>/`` (safetensors + JSON) and one heatmap per plotted prompt with a
    panel per model under ``folder/plots``.

    Example:
        >>> projection_section({"base": m, "steered": s}, tok, vecs, prompts, [10], "runs/x")
    """
    folder = Path(folder)
    started = time.perf_counter()
    results, rows = {}, []
    for name, model in models.items():
        res = record_projections(
            model, tokenizer, prompts, vectors, layers, max_new_tokens=max_new_tokens
        )
        res.save(folder / "projections" / name)
        results[name] = res
        rows.extend(res.summary_rows(last=last, name=name))
    plots = [
        plot_projections(results, folder / "plots" / f"projections_prompt{i}.png", index=i)
        for i in range(min(plot_prompts, len(prompts)))
    ]
    samples = [
        {"model": name, "prompt": i, "completion": res.completion(i, tokenizer)}
        for name, res in results.items()
        for i in range(len(res))
    ]
    text = (
        "Projection `h . v / |v|` of each layer's residual stream (output of the block) onto the "
        f"behaviour vector at every prompt and generated token ({len(prompts)} prompts, "
        f"{max_new_tokens} new tokens, greedy). The table gives per-layer means over the prompt "
        f"(without the first token, the attention sink), over its last {last} tokens and over "
        "the generated tokens; the heatmaps show single prompts, the dashed line marking where "
        "generation starts. With steering the stream is recorded after the addition."
    )
    return {
        "title": "Generation-time projections",
        "text": text,
        "tables": [
            {"name": "projection_summary", "title": "Mean projection by layer", "rows": rows},
            {"name": "projection_samples", "title": "Generated text", "rows": samples},
        ],
        "plots": plots,
        "seconds": time.perf_counter() - started,
    }


def pca_section(
    model,
    tokenizer,
    pairs,
    layer: int,
    folder: str | Path,
    *,
    texts: Sequence[str] | None = None,
    n_components: int = 2,
    top: int = 8,
    position=-1,
) -> dict[str, Any]:
    """Components of one layer's pair differences and the tokens that load on them.

    Example:
        >>> pca_section(model, tok, pairs, layer=10, folder="runs/x/report")
    """
    started = time.perf_counter()
    view = token_pca(
        model, tokenizer, pairs, layer, texts, position=position, n_components=n_components
    )
    plot = plot_token_pca(view, Path(folder) / "plots" / f"pca_tokens_layer{layer}.png")
    tops = [
        {
            "component": k + 1,
            **{key: r[key] for key in ("side", "rank", "text", "token")},
            "loading": r[f"pc{k + 1}"],
        }
        for k in range(view.n_components)
        for r in view.top_tokens(k, top)
    ]
    text = (
        f"Principal components of the {len(pairs)} pair differences at layer {layer} (centred), "
        "signed along the mean difference, and the loadings of every token of "
        f"{len(view.texts)} example texts (activation minus the pairs' mean activation, on each "
        "component). Special tokens and each text's first token are left out of the ranking."
    )
    return {
        "title": f"PCA view, layer {layer}",
        "text": text,
        "tables": [
            {
                "name": f"pca_components_layer{layer}",
                "title": "Components",
                "rows": view.component_rows(),
            },
            {"name": f"pca_top_tokens_layer{layer}", "title": "Top-loading tokens", "rows": tops},
        ],
        "plots": [plot],
        "seconds": time.perf_counter() - started,
    }


def _plot_losses(results, path) -> Path:
    fig = Figure(figsize=(6, 3.8), layout="constrained")
    ax = fig.subplots()
    for i, (name, res) in enumerate(results.items()):
        steps = max(len(t.losses) for t in res.traces)
        # Early-stopped traces hold their last value for the remaining steps.
        curves = np.array([t.losses + [t.losses[-1]] * (steps - len(t.losses)) for t in res.traces])
        ax.plot(range(steps), curves.mean(0), marker="o", ms=3, color=f"C{i}", label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("best -log P(negative letter), mean over items")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def attack_section(
    models, tokenizer, items, config: AttackConfig, folder: str | Path, progress: bool = False
) -> dict[str, Any]:
    """Attack success rate of the same GCG budget against each model, with Wilson intervals.

    ``models`` as in :func:`~.attack.compare_attacks` (a mapping, or ``(name, loader)`` pairs).

    Example:
        >>> attack_section({"base": m, "steered": s}, tok, items, AttackConfig(steps=10), "runs/x")
    """
    folder = Path(folder)
    started = time.perf_counter()
    results = compare_attacks(models, tokenizer, items, config, progress)
    rows = [res.summary(name) for name, res in results.items()]
    per_item = [
        {
            "model": name,
            "item": t.item_index,
            "target": items[t.item_index].target,
            "success_before": t.success_before,
            "success": t.success,
            "initial_loss": t.losses[0],
            "final_loss": t.losses[-1],
            "p_negative": t.p_negative,
            "p_target": t.p_target,
            "suffix": t.suffix,
        }
        for name, res in results.items()
        for t in res.traces
    ]
    plots = [
        plot_rates(
            rows,
            folder / "plots" / "attack_success.png",
            metric="success_rate",
            group="model",
            series="method",
            ylabel="attack success rate",
        ),
        _plot_losses(results, folder / "plots" / "attack_loss.png"),
    ]
    text = (
        f"GCG-style suffix search ({config.suffix_length} tokens, {config.steps} steps x "
        f"{config.candidates} candidates from the top {config.topk} gradient tokens per "
        f"position, seed {config.seed}) on {len(items)} items, the same budget for every model. "
        "Success: the final suffix makes the negative (non-target) letter more likely than the "
        "target one. `before_rate` is that rate with the initial suffix, before any search."
    )
    return {
        "title": "Adversarial suffix attack",
        "text": text,
        "tables": [
            {"name": "attack_summary", "title": "Attack success rate", "rows": rows},
            {"name": "attack_items", "title": "Per item", "rows": per_item},
        ],
        "plots": plots,
        "seconds": time.perf_counter() - started,
    }
