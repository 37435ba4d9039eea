"""Turn contrastive pairs into one direction per layer, with per-layer diagnostics.

The model runs only up to the deepest requested layer (no later blocks, no LM head), and the
activations are aggregated as they stream in: exact running sums for the mean difference, and a
bounded reservoir of pairs (exact up to ``max_pairs_in_memory`` pairs, a uniform sample beyond)
for PCA and the diagnostics.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from .hooks import Positions, forward_until, recording, validate_positions
from .layers import check_layers, model_device, num_layers
from .pairs import ContrastivePair, fingerprint, validate_pairs
from .tokenization import context_length, encode_batch
from .vectors import SteeringVectors

__all__ = [
    "METHODS",
    "extract_vectors",
    "read_activations",
    "measure_residual_norms",
    "layer_diagnostics",
    "Reservoir",
]

METHODS = ("mean_diff", "pca_diff", "pca_center")


def _forward(model, tokenizer, texts, layers, position, layer_path):
    """One left-padded batch run up to the deepest layer; the batch and the recorder."""
    batch = encode_batch(
        tokenizer,
        texts,
        max_length=context_length(model),
        device=model_device(model),
        position_ids=True,
    )
    rec, fns = recording(layers)
    forward_until(model, fns, position, layer_path=layer_path, **batch)
    return batch, rec


@torch.no_grad()
def read_activations(
    model,
    tokenizer,
    texts: Sequence[str],
    layers: Sequence[int],
    position: Positions = -1,
    layer_path: str | None = None,
) -> dict[int, torch.Tensor]:
    """Per-text activations ``{layer: (n, hidden)}`` (mean over the selected positions), float32.

    Runs one left-padded batch and stops after the deepest layer.

    Example:
        >>> acts = read_activations(model, tok, ["Hello"], layers=[2, 3], position=-1)
    """
    _, rec = _forward(model, tokenizer, texts, layers, position, layer_path)
    return {layer: rec.per_row_mean(layer).float() for layer in layers}


class _NormSample:
    """Uniform sample of at most ``capacity`` token norms from a stream (exact below it).

    Each norm gets a random key and the ``capacity`` smallest keys are kept: a uniform sample
    without replacement whatever the batch sizes, in O(capacity) per batch.
    """

    def __init__(self, capacity: int = 1 << 16, seed: int = 0):
        self.capacity = capacity
        self.values = torch.empty(0)
        self.keys = torch.empty(0)
        self._gen = torch.Generator().manual_seed(seed)

    def add(self, norms: torch.Tensor) -> None:
        norms = norms.detach().float().cpu().reshape(-1)
        self.values = torch.cat([self.values, norms])
        self.keys = torch.cat([self.keys, torch.rand(norms.numel(), generator=self._gen)])
        if self.values.numel() > self.capacity:
            keep = self.keys.topk(self.capacity, largest=False).indices
            self.values, self.keys = self.values[keep], self.keys[keep]

    def median(self) -> float:
        return float(self.values.median())


def _token_norms(rec, layer: int, attention_mask: torch.Tensor) -> torch.Tensor:
    return rec.hidden(layer).float().norm(dim=-1)[attention_mask.bool()]


@torch.no_grad()
def measure_residual_norms(
    model,
    tokenizer,
    texts: Sequence[str],
    layers: Sequence[int],
    *,
    batch_size: int = 16,
    layer_path: str | None = None,
) -> dict[int, float]:
    """Median residual-stream norm of each layer over every real token of ``texts``.

    This is what coefficient 1 means in the ``"residual_norm"`` unit. The median, because a few
    tokens (the attention sink) have norms many times the typical one.

    Example:
        >>> norms = measure_residual_norms(model, tok, texts, layers=[10])
        >>> vecs = vecs.with_residual_norms(norms)
    """
    if not texts:
        raise ValueError("measure_residual_norms needs at least one text")
    layer_ids = check_layers(layers, num_layers(model, layer_path))
    samples = {layer: _NormSample(seed=layer) for layer in layer_ids}
    for start in range(0, len(texts), batch_size):
        chunk = list(texts[start : start + batch_size])
        batch, rec = _forward(model, tokenizer, chunk, layer_ids, "all", layer_path)
        for layer in layer_ids:
            samples[layer].add(_token_norms(rec, layer, batch["attention_mask"]))
    return {layer: samples[layer].median() for layer in layer_ids}


class Reservoir:
    """Uniform sample of at most ``capacity`` rows from a stream (exact below capacity)."""

    def __init__(self, capacity: int, seed: int = 0):
        self.capacity = capacity
        self.rows: list[torch.Tensor] = []
        self.seen = 0
        self._rng = random.Random(seed)

    def add(self, rows: torch.Tensor) -> None:
        for row in rows:
            self.seen += 1
            if len(self.rows) < self.capacity:
                self.rows.append(row.clone())
            else:
                slot = self._rng.randrange(self.seen)
                if slot < self.capacity:
                    self.rows[slot] = row.clone()

    def tensor(self) -> torch.Tensor:
        return torch.stack(self.rows)


@dataclass
class _LayerStats:
    diff_sum: torch.Tensor
    pos: Reservoir
    neg: Reservoir


def _first_component(x: torch.Tensor, center: bool) -> tuple[torch.Tensor, float]:
    """Top principal direction of the rows of ``x`` and its explained-variance ratio."""
    if center:
        x = x - x.mean(0, keepdim=True)
    if x.shape[0] < 2 and center:
        raise ValueError("pca_diff needs at least 2 pairs; use mean_diff for a single pair")
    _, s, vh = torch.linalg.svd(x.double(), full_matrices=False)
    ratio = float(s[0] ** 2 / (s**2).sum()) if s.sum() > 0 else 0.0
    return vh[0].float(), ratio


def layer_diagnostics(pos: torch.Tensor, neg: torch.Tensor, vector: torch.Tensor) -> dict:
    """Separation accuracy, explained variance and projection gap of one layer's pairs.

    ``accuracy``: fraction of pairs whose positive member projects higher on ``vector``;
    ``explained_variance``: share of the pair differences' energy along ``vector``.
    """
    unit = vector / vector.norm()
    diffs = pos - neg
    proj = diffs @ unit
    energy = (diffs**2).sum()
    return {
        "accuracy": float((proj > 0).float().mean()),
        "explained_variance": float((proj**2).sum() / energy) if energy > 0 else 0.0,
        "projection_gap": float(proj.mean()),
        "projection_gap_std": float(proj.std()) if len(proj) > 1 else 0.0,
    }


@torch.no_grad()
def extract_vectors(
    model,
    tokenizer,
    pairs: Sequence[ContrastivePair],
    layers: Sequence[int] | int | None = None,
    method: str = "mean_diff",
    position: Positions = -1,
    *,
    normalize: bool = True,
    batch_size: int = 8,
    layer_path: str | None = None,
    max_pairs_in_memory: int = 1024,
    progress: bool = True,
) -> SteeringVectors:
    """Extract one behaviour direction per layer from contrastive pairs.

    ``method``: ``"mean_diff"`` (mean of positive - negative), ``"pca_diff"`` (first principal
    component of the centred differences), ``"pca_center"`` (first component of the activations
    centred on each pair's midpoint). The sign is fixed by a vote (the positive member should
    project higher); ``normalize`` makes each vector unit-norm. ``position`` uses the hook position
    language; for full texts ``-1`` is the last token. Diagnostics per layer land in
    ``vectors.metadata["diagnostics"]``.

    Example:
        >>> vecs = extract_vectors(model, tok, pairs, layers=range(4, 12), method="mean_diff")
        >>> vecs.metadata["diagnostics"][8]["accuracy"]
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}: use one of {METHODS}")
    validate_positions(position)
    validate_pairs(pairs)
    n_layers = num_layers(model, layer_path)
    layer_ids = check_layers(range(n_layers) if layers is None else layers, n_layers)
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    stats: dict[int, _LayerStats] = {}
    norm_samples = {layer: _NormSample(seed=layer) for layer in layer_ids}
    # One batch holds the positives and negatives of `batch_size` pairs.
    starts = range(0, len(pairs), batch_size)
    for start in tqdm(starts, desc="extracting", disable=not progress, unit="batch"):
        chunk = pairs[start : start + batch_size]
        texts = [p.positive for p in chunk] + [p.negative for p in chunk]
        batch, rec = _forward(model, tokenizer, texts, layer_ids, position, layer_path)
        for layer in layer_ids:
            # The residual norms ride along at no extra forward pass: they define the
            # "residual_norm" coefficient unit of these vectors.
            norm_samples[layer].add(_token_norms(rec, layer, batch["attention_mask"]))
            act = rec.per_row_mean(layer).float().to("cpu")
            pos, neg = act[: len(chunk)], act[len(chunk) :]
            if layer not in stats:
                stats[layer] = _LayerStats(
                    torch.zeros(act.shape[1], dtype=torch.float64),
                    Reservoir(max_pairs_in_memory, seed=layer),
                    Reservoir(max_pairs_in_memory, seed=layer),
                )
            st = stats[layer]
            st.diff_sum += (pos - neg).double().sum(0)
            # Same seed for both reservoirs keeps positives and negatives aligned.
            st.pos.add(pos)
            st.neg.add(neg)
    vectors, diagnostics = {}, {}
    for layer in layer_ids:
        st = stats[layer]
        pos, neg = st.pos.tensor(), st.neg.tensor()
        diffs = pos - neg
        if method == "mean_diff":
            vec = (st.diff_sum / len(pairs)).float()
            pc_ratio = None
        elif method == "pca_diff":
            vec, pc_ratio = _first_component(diffs, center=True)
        else:
            mid = (pos + neg) / 2
            vec, pc_ratio = _first_component(torch.cat([pos - mid, neg - mid]), center=False)
        if not torch.isfinite(vec).all() or vec.norm() == 0:
            raise ValueError(
                f"layer {layer}: the extracted direction is zero or not finite; the pairs may not "
                "differ at the chosen position"
            )
        # Sign vote: the positive member should project higher in most pairs.
        if (diffs @ vec > 0).float().mean() < 0.5:
            vec = -vec
        if normalize:
            vec = vec / vec.norm()
        vectors[layer] = vec.contiguous()
        diag = layer_diagnostics(pos, neg, vec)
        if pc_ratio is not None:
            diag["pc1_explained_variance_ratio"] = pc_ratio
        diag["pairs_used"] = len(diffs)
        diagnostics[layer] = diag
    metadata = SteeringVectors.describe_model(model)
    metadata.update(
        method=method,
        position=position if not isinstance(position, torch.Tensor) else "mask",
        normalized=normalize,
        num_pairs=len(pairs),
        data_fingerprint=fingerprint(pairs),
        diagnostics=diagnostics,
        residual_norms={layer: norm_samples[layer].median() for layer in layer_ids},
    )
    return SteeringVectors(vectors, metadata)
