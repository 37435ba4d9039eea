"""Representation-tuning losses as pure functions of tensors.

The trainer only wires these to the hook mechanism and to logging; every formula lives here so it
can be checked against a hand computation.

Published honesty recipe: per selected position and layer, ``toward`` = ``(1 - cos) / 2``,
``away`` = the same with ``-v`` = ``(1 + cos) / 2``, ``orthogonal`` = ``|cos|``; averaged over
layers and positions; combined as ``0.01 * token_CE + 1 * cosine``.

The ``steer`` objective (:func:`steer_loss`) makes the tuned model compute what a steered model
computes: at each selected position and layer, the relative L2 distance between the tuned
activation and the target ``h_ref + c * v``, taken from the frozen model with the steering
applied. The ``prompt`` objective uses the same distance (:func:`relative_l2_loss`) to the frozen
model's activation with the behaviour instruction in context. :func:`reps_preference_loss` is
the bidirectional preference loss that trains steering vectors themselves.

Normalisation: each function returns ``sum over layers and selected positions / (n_layers * N)``.
``N`` defaults to the number of selected positions in the tensors given (a plain mean); the
trainer passes the number of selected positions in the whole accumulated (and, when tokens are
averaged across devices, all-device) batch instead, so that gradient accumulation and data
parallelism give the gradients of one big batch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import torch

__all__ = [
    "TARGETS",
    "COSINE_TARGETS",
    "RepLossOutput",
    "cosine_to_vector",
    "cosine_loss",
    "representation_loss",
    "retain_loss",
    "steer_loss",
    "relative_l2_loss",
    "reps_preference_loss",
]

#: Where the cosine loss pulls the activations: along ``+v``, along ``-v``, or perpendicular to it.
COSINE_TARGETS = ("toward", "away", "orthogonal")
#: Every representation objective: the three cosine targets, ``steer`` (behave like the steered
#: model: :func:`steer_loss`) and ``prompt`` (behave like the model with the behaviour instruction
#: in context: :func:`relative_l2_loss`).
TARGETS = (*COSINE_TARGETS, "steer", "prompt")


class RepLossOutput(NamedTuple):
    """A loss and, per layer, the detached sum of the per-position statistic and its count.

    ``stat_sums[layer] / count`` is the mean cosine (representation loss) or mean L2 distance
    (retain loss) over the selected positions of the tensors given, whatever the normaliser.

    Example:
        >>> out = representation_loss({3: h}, {3: v}, mask)
        >>> mean_cos = out.stat_sums[3] / out.count
    """

    loss: torch.Tensor
    stat_sums: dict[int, torch.Tensor]
    count: torch.Tensor


def _check_target(target: str) -> None:
    if target not in COSINE_TARGETS:
        raise ValueError(
            f"unknown rep_target {target!r} for a cosine loss: use one of {COSINE_TARGETS}"
        )


def cosine_to_vector(hidden: torch.Tensor, vector: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Cosine similarity of each ``(..., hidden)`` row with ``vector``, computed in float32.

    Example:
        >>> cosine_to_vector(torch.tensor([[1.0, 0.0], [1.0, 1.0]]), torch.tensor([2.0, 0.0]))
        tensor([1.0000, 0.7071])
    """
    h = hidden.float()
    v = vector.to(device=h.device, dtype=torch.float32)
    # clamp the norms, not their product: a zero activation row gives cos 0 instead of NaN
    return (h @ v) / (h.norm(dim=-1).clamp_min(eps) * v.norm().clamp_min(eps))


def cosine_loss(cos: torch.Tensor, target: str = "toward") -> torch.Tensor:
    """Elementwise loss of a cosine value: ``(1 - cos)/2``, ``(1 + cos)/2`` or ``|cos|``.

    Each lies in ``[0, 1]`` and is 0 exactly when the target is reached.

    Example:
        >>> cosine_loss(torch.tensor([1.0, 0.0, -1.0]), "toward")
        tensor([0.0000, 0.5000, 1.0000])
    """
    _check_target(target)
    if target == "toward":
        return (1 - cos) / 2
    if target == "away":
        return (1 + cos) / 2
    return cos.abs()


class _GatherRows(torch.autograd.Function):
    """Rows ``index`` of a ``(batch, seq, hidden)`` tensor, with a *sparse* gradient.

    The loss terms are the last operations of the graph, so their backward runs first: with a
    dense gradient each hooked layer would hold a ``(batch, seq, hidden)`` buffer until the
    backward pass reaches that layer (7 layers: 7 activations' worth of extra peak memory). A
    sparse gradient holds only the selected rows, and is added to the dense one on arrival.
    """

    @staticmethod
    def forward(ctx, hidden, index):
        ctx.shape = hidden.shape
        ctx.save_for_backward(index)
        return hidden.reshape(-1, hidden.shape[-1]).index_select(0, index)

    @staticmethod
    def backward(ctx, grad):
        (index,) = ctx.saved_tensors
        batch, seq, width = ctx.shape
        coords = torch.stack([index // seq, index % seq])  # sorted and unique: from nonzero()
        sparse = torch.sparse_coo_tensor(
            coords, grad, (batch, seq, width), is_coalesced=True, check_invariants=False
        )
        return sparse, None


def _rows(hidden: torch.Tensor, index: torch.Tensor | None, sparse_grad: bool) -> torch.Tensor:
    flat = hidden.reshape(-1, hidden.shape[-1])
    if index is None:
        return flat
    index = index.to(flat.device)
    sparse = sparse_grad and hidden.dim() == 3 and hidden.requires_grad
    if sparse and 2 * index.numel() < flat.shape[0]:
        return _GatherRows.apply(hidden, index)
    return flat.index_select(0, index)


def _selection(mask: torch.Tensor | None, example: torch.Tensor):
    """Row indices of the selected positions (one host sync for all layers) and their count."""
    if mask is None:
        n = example.reshape(-1, example.shape[-1]).shape[0]
        return None, torch.tensor(n, device=example.device)
    flat = mask.reshape(-1).bool()
    return flat.nonzero().squeeze(-1), flat.sum()


def _normaliser(num_positions, count: torch.Tensor, n_layers: int) -> torch.Tensor:
    n = count if num_positions is None else torch.as_tensor(num_positions, device=count.device)
    # An empty selection has a zero sum: divide by 1 rather than 0 so the loss stays finite.
    return n.float().clamp_min(1) * n_layers


def representation_loss(
    hidden: Mapping[int, torch.Tensor],
    vectors: Mapping[int, torch.Tensor],
    mask: torch.Tensor | None = None,
    target: str = "toward",
    num_positions: int | torch.Tensor | None = None,
    sparse_grad: bool = False,
) -> RepLossOutput:
    """Cosine loss between the activations of each layer and that layer's vector.

    ``hidden[layer]`` is ``(batch, seq, hidden)`` (or ``(n, hidden)``); ``mask`` ``(batch, seq)``
    selects the positions (the same for every layer; None = all). The loss is the sum of
    :func:`cosine_loss` over layers and selected positions divided by ``n_layers *
    num_positions`` (default: the number of selected positions, i.e. the mean).

    ``sparse_grad=True`` makes the gradient reaching ``hidden`` a sparse tensor (only the
    selected rows), which saves memory when a dense gradient also flows into ``hidden`` from the
    rest of the model (the trainer's case); leave it off when this loss is back-propagated alone.

    Example:
        >>> out = representation_loss({3: h}, {3: v}, mask, target="toward")
        >>> out.loss.backward()
    """
    _check_target(target)
    if not hidden:
        raise ValueError("representation_loss needs at least one layer")
    missing = [layer for layer in hidden if layer not in vectors]
    if missing:
        raise ValueError(f"no vector for layers {missing}")
    first = next(iter(hidden.values()))
    index, count = _selection(mask, first)
    total = first.new_zeros((), dtype=torch.float32)
    cos_sums = {}
    for layer, h in hidden.items():
        cos = cosine_to_vector(_rows(h, index, sparse_grad), vectors[layer])
        total = total + cosine_loss(cos, target).sum()
        cos_sums[layer] = cos.detach().sum()
    return RepLossOutput(total / _normaliser(num_positions, count, len(hidden)), cos_sums, count)


def retain_loss(
    hidden: Mapping[int, torch.Tensor],
    reference: Mapping[int, torch.Tensor],
    mask: torch.Tensor | None = None,
    num_positions: int | torch.Tensor | None = None,
    sparse_grad: bool = False,
) -> RepLossOutput:
    """L2 distance between the tuned and the original activations, per position.

    ``sum over layers and selected positions of ||h - h_ref||_2 / (n_layers * num_positions)``
    (the retain term of Circuit Breakers). ``reference`` carries no gradient; ``sparse_grad`` as
    in :func:`representation_loss`.

    Example:
        >>> out = retain_loss({3: h_tuned}, {3: h_orig}, attention_mask)
    """
    if not hidden:
        raise ValueError("retain_loss needs at least one layer")
    first = next(iter(hidden.values()))
    index, count = _selection(mask, first)
    total = first.new_zeros((), dtype=torch.float32)
    dist_sums = {}
    for layer, h in hidden.items():
        rows = _rows(h, index, sparse_grad).float()
        diff = rows - _rows(reference[layer], index, False).detach().float()
        # The norm's gradient at exactly zero (the first LoRA step: B = 0) is defined as 0 by
        # torch, so the term is inert until the model moves, never NaN.
        dist = torch.linalg.vector_norm(diff, dim=-1)
        total = total + dist.sum()
        dist_sums[layer] = dist.detach().sum()
    return RepLossOutput(total / _normaliser(num_positions, count, len(hidden)), dist_sums, count)


def relative_l2_loss(
    hidden: Mapping[int, torch.Tensor],
    targets: Mapping[int, torch.Tensor],
    mask: torch.Tensor | None = None,
    num_positions: int | torch.Tensor | None = None,
    sparse_grad: bool = False,
    eps: float = 1e-6,
) -> RepLossOutput:
    """Relative L2 distance to a target activation, per position.

    ``sum over layers and selected positions of ||h - t||_2 / ||t||_2`` divided by ``n_layers *
    num_positions``. Relative to the target's norm because residual norms differ by orders of
    magnitude between layers, models and token positions (the attention-sink token's is many
    times the others'): a raw L2 or MSE would let a few tokens and the deepest layers dominate,
    and a weight tuned on one model would mean something else on another. Unlike a cosine to the
    target, it also asks for the right length. ``targets`` carry no gradient; ``stat_sums`` hold
    the per-layer sums of the relative distance (0 = the target is reached exactly).

    Example:
        >>> out = relative_l2_loss({10: h_tuned}, {10: h_prompted}, mask)
        >>> out.loss.backward()
    """
    if not hidden:
        raise ValueError("relative_l2_loss needs at least one layer")
    missing = [layer for layer in hidden if layer not in targets]
    if missing:
        raise ValueError(f"no target activation for layers {missing}")
    first = next(iter(hidden.values()))
    index, count = _selection(mask, first)
    total = first.new_zeros((), dtype=torch.float32)
    dist_sums = {}
    for layer, h in hidden.items():
        rows = _rows(h, index, sparse_grad).float()
        target = _rows(targets[layer], index, False).detach().float()
        dist = torch.linalg.vector_norm(rows - target, dim=-1)
        rel = dist / torch.linalg.vector_norm(target, dim=-1).clamp_min(eps)
        total = total + rel.sum()
        dist_sums[layer] = rel.detach().sum()
    return RepLossOutput(total / _normaliser(num_positions, count, len(hidden)), dist_sums, count)


def steer_loss(
    hidden: Mapping[int, torch.Tensor],
    targets: Mapping[int, torch.Tensor],
    mask: torch.Tensor | None = None,
    num_positions: int | torch.Tensor | None = None,
    sparse_grad: bool = False,
    eps: float = 1e-6,
) -> RepLossOutput:
    """Relative L2 distance to the steered model's activations (:func:`relative_l2_loss`).

    ``t = h_ref + c * v`` is what the steered (frozen) model computes at that layer. Where the
    steering shift is small next to the activation, the distance still asks for it, since it
    asks for the right length and direction alike.

    Example:
        >>> out = steer_loss({10: h_tuned}, {10: h_ref + 0.2 * v}, mask)
        >>> out.loss.backward()
    """
    missing = [layer for layer in hidden if layer not in targets]
    if missing:
        raise ValueError(f"no steering target for layers {missing}")
    return relative_l2_loss(hidden, targets, mask, num_positions, sparse_grad, eps)


def reps_preference_loss(
    positive_behaviour: torch.Tensor,
    positive_base: torch.Tensor,
    negative_base: torch.Tensor,
    negative_behaviour: torch.Tensor,
    reference_behaviour: torch.Tensor,
    reference_base: torch.Tensor,
) -> torch.Tensor:
    """The bidirectional preference loss of RePS, per pair (Wu et al. 2025, arXiv 2505.20809).

    Inputs are per-pair log-likelihoods of the behaviour answer ``y_c`` and the base answer ``y``
    to the same prompt. ``positive_*`` and ``negative_*``: *length-normalised* (mean per token)
    under positive steering and under null or negative steering; ``reference_*``: *summed*
    log-likelihoods under the unsteered model, which carry no gradient. With

        beta+ = max(log p(y|x) - log p(y_c|x), 1),  beta- = max(log p(y_c|x) - log p(y|x), 1)

    the loss is ``-log sigmoid(beta+ * l+(y_c) - l+(y)) - log sigmoid(beta- * l-(y) - l-(y_c))``:
    positive steering should prefer the behaviour answer, null or negative steering the base
    answer; the margin weight beta grows where the unsteered model finds the answer to promote
    unlikely (RePS's Eq. for Delta+ and Delta-; EasyEdit2's ``scaled_simpo`` loss is the one
    direction of it). Returns the per-pair losses (take ``.mean()``).

    Example:
        >>> loss = reps_preference_loss(lp_c, lp_y, ln_y, ln_c, ref_c, ref_y).mean()
    """
    ref_c, ref_y = reference_behaviour.detach().float(), reference_base.detach().float()
    beta_pos = torch.clamp(ref_y - ref_c, min=1.0)
    beta_neg = torch.clamp(ref_c - ref_y, min=1.0)
    pos = beta_pos * positive_behaviour.float() - positive_base.float()
    neg = beta_neg * negative_base.float() - negative_behaviour.float()
    return -torch.nn.functional.logsigmoid(pos) - torch.nn.functional.logsigmoid(neg)
