"""Streaming aggregation of pair activations, and the direction each extraction method finds.

Running sums give the exact mean difference; a bounded reservoir keeps pairs for PCA and the
diagnostics (exact up to its capacity, a uniform sample beyond), and a bounded sample of token
norms gives each layer's median residual norm.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

__all__ = [
    "NormSample",
    "Reservoir",
    "LayerStats",
    "first_component",
    "check_direction_exists",
    "layer_diagnostics",
]

# Activations of the two members of a pair closer than this (relative to their size) are the same
# up to float rounding: there is no direction to find.
_SAME_ACTIVATIONS = 1e-5


class NormSample:
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
class LayerStats:
    diff_sum: torch.Tensor
    pos: Reservoir
    neg: Reservoir


def first_component(x: torch.Tensor, center: bool) -> tuple[torch.Tensor, float]:
    """Top principal direction of the rows of ``x`` and its explained-variance ratio."""
    if center:
        x = x - x.mean(0, keepdim=True)
    _, s, vh = torch.linalg.svd(x.double(), full_matrices=False)
    ratio = float(s[0] ** 2 / (s**2).sum()) if s.sum() > 0 else 0.0
    return vh[0].float(), ratio


def _rms(x: torch.Tensor) -> float:
    return float(x.double().pow(2).mean().sqrt())


def check_direction_exists(layer, method, position, pos, neg, mean_diff) -> None:
    """Raise if the pairs give no direction at ``layer`` (a PCA of nothing is an arbitrary unit
    vector, which would come back with accuracy 0)."""
    diffs = pos - neg
    scale = max(_rms(torch.cat([pos, neg])), 1e-30)
    spread = _rms(diffs)
    if spread <= _SAME_ACTIVATIONS * scale:
        raise ValueError(
            f"layer {layer}: the positive and negative texts give the same activations at "
            f"position {position!r} (rms difference {spread:.3g} for activations of rms "
            f"{scale:.3g}), so there is no direction to extract: read a position where the "
            "texts differ (the default -1 for texts that differ in their last tokens) or leave "
            "this layer out"
        )
    if method == "mean_diff" and float(mean_diff.norm()) <= _SAME_ACTIVATIONS * spread:
        raise ValueError(
            f"layer {layer}: the pair differences cancel out (their mean is zero), so mean_diff "
            "has no direction: check the pairs' polarity or use method='pca_diff'"
        )
    if method == "pca_diff" and _rms(diffs - diffs.mean(0)) <= _SAME_ACTIVATIONS * spread:
        raise ValueError(
            f"layer {layer}: every pair has the same difference, so the centred differences "
            "have no principal component: use method='mean_diff'"
        )


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
