"""The PCA view of a layer: principal components of the pair differences, and which tokens of
example texts load on them.

The differences ``positive - negative`` of one layer's activations (read where the vectors are
read) are centred and decomposed; each component is signed so that the mean difference projects
positively on it. Every token of a few example texts is then read at the same layer, centred on
the pairs' mean activation, and projected onto the components: the tokens with the largest
loadings are the ones the behaviour direction picks up.

Example:
    >>> view = token_pca(model, tok, pairs, layer=10, texts=[pairs[0].positive, pairs[0].negative])
    >>> view.top_tokens(component=0, n=5)
    >>> plot_token_pca(view, "runs/x/pca_tokens_layer10.png")
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from ..extract import read_activations
from ..hooks import Positions, forward_until, recording, validate_positions
from ..layers import check_layers, model_device, num_layers, unwrap_model
from ..pairs import ContrastivePair, validate_pairs
from ..tokenization import context_length, encode_batch

__all__ = ["TokenPCA", "pair_components", "token_pca", "plot_token_pca"]

#: Explained-variance ratios kept for the scree plot.
SCREE = 10


def pair_components(diffs: torch.Tensor, n_components: int = 2):
    """Principal components of the centred rows of ``diffs`` ``(n, hidden)``.

    Returns ``(components (k, hidden), ratios)``: unit rows signed so that the mean difference
    projects non-negatively on each, and the explained-variance ratio of the first
    ``max(k, 10)`` components (as many as the data has).

    Example:
        >>> comps, ratios = pair_components(pos - neg, n_components=2)
    """
    if diffs.dim() != 2 or diffs.shape[0] < 2:
        raise ValueError(f"need at least 2 difference rows (n, hidden), got {tuple(diffs.shape)}")
    if not 1 <= n_components <= min(diffs.shape):
        raise ValueError(f"n_components must be in 1..{min(diffs.shape)}, got {n_components}")
    x = diffs.double()
    mean = x.mean(0)
    _, s, vh = torch.linalg.svd(x - mean, full_matrices=False)
    energy = float((s**2).sum())
    if energy == 0.0:
        raise ValueError("the pair differences do not vary: there are no components to find")
    comps = vh[:n_components]
    # SVD signs are arbitrary: point each component along the mean difference (the behaviour's
    # direction), falling back to its largest coordinate when it is orthogonal to it.
    sign = torch.sign(comps @ mean)
    fallback = torch.sign(comps.gather(1, comps.abs().argmax(1, keepdim=True))).squeeze(1)
    sign = torch.where(sign == 0, fallback, sign)
    ratios = (s[: max(n_components, SCREE)] ** 2 / energy).tolist()
    return (comps * sign.unsqueeze(1)).float(), ratios


@dataclass
class TokenPCA:
    """Components of one layer's pair differences and the per-token loadings of example texts.

    ``loadings[i][t, k]``: token ``t`` of ``texts[i]`` on component ``k`` (its activation minus
    ``center``, the pairs' mean activation, dotted with the unit component). ``repeat[i][t]``
    marks tokens inside a prefix that an earlier text shares (same tokens, so the same
    activations: the two texts of a pair share their whole prompt).

    Example:
        >>> view.component_rows()[0]["explained_variance_ratio"]
        >>> view.rows()[:3]
    """

    layer: int
    components: torch.Tensor
    explained_variance_ratio: list[float]
    mean_difference: torch.Tensor
    center: torch.Tensor
    texts: list[str]
    tokens: list[list[str]]
    special: list[list[bool]]
    repeat: list[list[bool]]
    loadings: list[torch.Tensor]
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def n_components(self) -> int:
        return self.components.shape[0]

    def component_rows(self) -> list[dict[str, Any]]:
        """One row per component: explained variance and cosine with the mean difference."""
        unit = self.mean_difference / self.mean_difference.norm()
        return [
            {
                "layer": self.layer,
                "component": k + 1,
                "explained_variance_ratio": self.explained_variance_ratio[k],
                "cosine_with_mean_difference": float(self.components[k] @ unit),
            }
            for k in range(self.n_components)
        ]

    def rows(self) -> list[dict[str, Any]]:
        """One row per token of every example text, with its loading on each component."""
        out = []
        for i, (tokens, load) in enumerate(zip(self.tokens, self.loadings)):
            for t, token in enumerate(tokens):
                row = {"text": i, "position": t, "token": token}
                row.update(special=self.special[i][t], repeat=self.repeat[i][t])
                row.update({f"pc{k + 1}": float(load[t, k]) for k in range(self.n_components)})
                out.append(row)
        return out

    def top_tokens(self, component: int = 0, n: int = 10) -> list[dict[str, Any]]:
        """The ``n`` highest and ``n`` lowest loading tokens on ``component`` (0-based).

        Special tokens, each text's first token (the attention sink) and tokens repeating an
        earlier text's prefix are left out.

        Example:
            >>> [r["token"] for r in view.top_tokens(0, 3) if r["side"] == "high"]
        """
        key = f"pc{component + 1}"
        rows = _ranked(self.rows())
        rows.sort(key=lambda r: r[key], reverse=True)
        high = [{"side": "high", "rank": j + 1, **r} for j, r in enumerate(rows[:n])]
        low = [{"side": "low", "rank": j + 1, **r} for j, r in enumerate(rows[::-1][:n])]
        return high + low


def _ranked(rows: list[dict]) -> list[dict]:
    """The rows worth ranking: no special token, attention sink or repeated prefix."""
    return [r for r in rows if not (r["special"] or r["repeat"]) and r["position"] > 0]


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _token_activations(model, tokenizer, texts, layer, batch_size):
    """Per text, the ``(tokens, hidden)`` outputs of block ``layer`` at every real token."""
    out = []
    for start in range(0, len(texts), batch_size):
        chunk = list(texts[start : start + batch_size])
        batch = encode_batch(
            tokenizer,
            chunk,
            max_length=context_length(model),
            device=model_device(model),
            position_ids=True,
        )
        rec, fns = recording([layer])
        forward_until(model, fns, "all", **batch)
        hidden = rec.hidden(layer).float().cpu()
        mask = batch["attention_mask"].bool().cpu()
        ids = batch["input_ids"].cpu()
        out.extend((ids[r][mask[r]], hidden[r][mask[r]]) for r in range(len(chunk)))
    return out


@torch.no_grad()
def token_pca(
    model,
    tokenizer,
    pairs: Sequence[ContrastivePair],
    layer: int,
    texts: Sequence[str] | None = None,
    *,
    position: Positions = -1,
    n_components: int = 2,
    batch_size: int = 8,
) -> TokenPCA:
    """Components of ``layer``'s pair differences (read at ``position``) and token loadings.

    ``texts`` default to the first two pairs' positive and negative texts.

    Example:
        >>> view = token_pca(model, tok, load_sentiment_pairs(tok, "train"), layer=10)
        >>> view.top_tokens(0, n=5)
    """
    pairs = list(pairs)
    validate_pairs(pairs)
    validate_positions(position)
    if len(pairs) < 2:
        raise ValueError("the PCA view needs at least 2 pairs")
    (layer,) = check_layers([layer], num_layers(model))
    if texts is None:
        texts = [t for p in pairs[:2] for t in (p.positive, p.negative)]
    texts = list(texts)
    if not texts or not all(isinstance(t, str) and t for t in texts):
        raise ValueError("texts must be a non-empty list of non-empty strings")
    pos, neg = [], []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        both = [p.positive for p in chunk] + [p.negative for p in chunk]
        acts = read_activations(model, tokenizer, both, [layer], position)[layer].cpu()
        pos.append(acts[: len(chunk)])
        neg.append(acts[len(chunk) :])
    pos, neg = torch.cat(pos), torch.cat(neg)
    comps, ratios = pair_components(pos - neg, n_components)
    center = torch.cat([pos, neg]).mean(0)
    special_ids = set(getattr(tokenizer, "all_special_ids", []) or [])
    tokens, special, repeat, loadings, seen = [], [], [], [], []
    for ids, hidden in _token_activations(model, tokenizer, texts, layer, batch_size):
        ids = ids.tolist()
        shared = max((_common_prefix(ids, other) for other in seen), default=0)
        seen.append(ids)
        tokens.append([tokenizer.decode([t]) for t in ids])
        special.append([t in special_ids for t in ids])
        repeat.append([t < shared for t in range(len(ids))])
        loadings.append((hidden - center) @ comps.T)
    metadata = {
        "model_name": getattr(unwrap_model(model), "name_or_path", None),
        "num_pairs": len(pairs),
        "position": position if not isinstance(position, torch.Tensor) else "mask",
    }
    return TokenPCA(
        layer,
        comps,
        ratios,
        (pos - neg).mean(0),
        center,
        texts,
        tokens,
        special,
        repeat,
        loadings,
        metadata,
    )


def plot_token_pca(view: TokenPCA, path: str | Path, annotate: int = 6) -> Path:
    """Scree plot of the pair differences, and every example token on PC1 x PC2.

    The ``annotate`` highest and lowest loading tokens on PC1 (and the extremes on PC2) are
    labelled; special tokens, the first token of each text and repeated prefixes are not drawn.

    Example:
        >>> plot_token_pca(view, "runs/x/pca_tokens_layer10.png")
    """
    from ..plotting import save_figure

    fig = Figure(figsize=(11, 4.2), layout="constrained")
    scree, scatter = fig.subplots(1, 2, width_ratios=[1, 2])
    ratios = view.explained_variance_ratio
    scree.bar(range(1, len(ratios) + 1), ratios, color="C0")
    scree.set_xlabel("component of the pair differences")
    scree.set_ylabel("explained variance ratio")
    scree.set_title(f"layer {view.layer}")
    rows = _ranked(view.rows())
    two = view.n_components > 1
    for i in range(len(view.texts)):
        mine = [r for r in rows if r["text"] == i]
        x = np.array([r["pc1"] for r in mine])
        y = np.array([r["pc2"] for r in mine]) if two else np.full(len(mine), float(i))
        scatter.scatter(x, y, s=10, alpha=0.7, color=f"C{i % 10}", label=f"text {i}")
    labelled = {(r["text"], r["position"]): r for r in view.top_tokens(0, annotate)}
    if two:
        extremes = view.top_tokens(1, max(annotate // 2, 1))
        labelled.update({(r["text"], r["position"]): r for r in extremes})
    for r in labelled.values():
        y = r["pc2"] if two else float(r["text"])
        scatter.annotate(repr(r["token"])[1:-1][:16], (r["pc1"], y), fontsize=7, alpha=0.9)
    scatter.axvline(0, color="grey", lw=0.6)
    scatter.set_xlabel("PC 1 loading")
    scatter.set_ylabel("PC 2 loading" if two else "text")
    scatter.set_title("tokens of the example texts (centred on the pairs' mean)")
    scatter.legend(fontsize=7)
    return save_figure(fig, path)
