"""Layer diagnostics: plots that show which layers carry a behaviour."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from matplotlib.figure import Figure

from ..extract import read_activations
from ..hooks import Positions
from ..pairs import ContrastivePair
from ..plotting import save_figure
from ..vectors import SteeringVectors

__all__ = ["plot_layer_accuracy", "plot_pca_scatter"]


def plot_layer_accuracy(vectors: SteeringVectors, path: str | Path) -> Path:
    """Separation accuracy and explained variance by layer (from extraction diagnostics).

    Example:
        >>> plot_layer_accuracy(vecs, "runs/x/layer_accuracy.png")
    """
    diag = vectors.metadata.get("diagnostics")
    if not diag:
        raise ValueError("these vectors carry no diagnostics; extract them with extract_vectors")
    layers = sorted(diag)
    fig = Figure(figsize=(7, 3.5))
    ax = fig.subplots()
    ax.plot(layers, [diag[k]["accuracy"] for k in layers], "o-", label="separation accuracy")
    ax.plot(
        layers, [diag[k]["explained_variance"] for k in layers], "s--", label="explained variance"
    )
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("layer (output of block)")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"{vectors.metadata.get('model_name', '')} — {vectors.metadata.get('method', '')}")
    ax.legend(loc="lower right")
    return save_figure(fig, path)


def plot_pca_scatter(
    model,
    tokenizer,
    pairs: Sequence[ContrastivePair],
    layer: int,
    position: Positions = -1,
    path: str | Path = "pca.png",
    max_pairs: int = 200,
) -> Path:
    """Positive and negative activations of one layer on their first two principal components.

    Example:
        >>> plot_pca_scatter(model, tok, pairs, layer=12, path="runs/x/pca_layer12.png")
    """
    pairs = list(pairs)[:max_pairs]
    texts = [p.positive for p in pairs] + [p.negative for p in pairs]
    acts = torch.cat(
        [
            read_activations(model, tokenizer, texts[i : i + 16], [layer], position)[layer]
            for i in range(0, len(texts), 16)
        ]
    ).cpu()
    centred = acts - acts.mean(0)
    _, _, vh = torch.linalg.svd(centred.double(), full_matrices=False)
    xy = (centred.double() @ vh[:2].T).float()
    n = len(pairs)
    fig = Figure(figsize=(4.5, 4.5))
    ax = fig.subplots()
    ax.scatter(xy[:n, 0], xy[:n, 1], s=12, alpha=0.7, label="positive")
    ax.scatter(xy[n:, 0], xy[n:, 1], s=12, alpha=0.7, label="negative")
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title(f"layer {layer}")
    ax.legend()
    return save_figure(fig, path)
