"""Gradient routing: the token loss reaches only ``lm_params`` and the representation terms
only ``rep_params``, in one backward pass.

The router's tensor hooks live for one training step: :meth:`GradientRouter.clear` removes them,
and the trainer calls it when each step ends (also on error) and when training ends.
"""

from __future__ import annotations

import re

import torch
from torch import nn

__all__ = ["GradientRouter"]


class _Arm(torch.autograd.Function):
    """Identity whose backward runs first in the routed loss's backward pass and arms the
    router's parameter hooks: a backward through anything else (the user's own loss after a
    failed step) finds them disarmed."""

    @staticmethod
    def forward(ctx, loss, router):
        ctx.router = router
        return loss.view_as(loss)

    @staticmethod
    def backward(ctx, grad):
        ctx.router._armed = True
        return grad, None


def _replace_once(router: GradientRouter, grad: torch.Tensor | None):
    """Tensor hook replacing the incoming gradient by ``grad`` (zeros if None), once, and only
    in the backward pass of the routed loss."""
    live = [True]

    def hook(incoming):
        if not (live[0] and router._armed):
            return None
        live[0] = False
        return torch.zeros_like(incoming) if grad is None else grad.to(incoming.dtype)

    return hook


class GradientRouter:
    """Send the token loss only to the ``lm_params`` and the representation losses only to the
    ``rep_params`` (regexes on the trainable parameters' names; None = all).

    :meth:`route` takes the representation gradient with ``autograd.grad`` and re-injects it
    through a zero-valued surrogate ``sum(p * g) - sum(p * g).detach()``; parameters outside
    ``lm_params`` get a one-shot hook that replaces their incoming gradient by their
    representation gradient alone. One backward pass, so DDP sees the usual single sync.

    Example:
        >>> router = GradientRouter(model, rep_params="v_proj", lm_params="o_proj")
        >>> loss = router.route(lm_term, rep_term)
        >>> loss.backward(); router.clear()
    """

    def __init__(self, model: nn.Module, rep_params: str | None, lm_params: str | None):
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        for label, pattern in (("rep_params", rep_params), ("lm_params", lm_params)):
            if pattern is not None and not any(re.search(pattern, n) for n, _ in named):
                raise ValueError(f"{label}={pattern!r} matches no trainable parameter")
        self.rep_set = [p for n, p in named if rep_params is None or re.search(rep_params, n)]
        self.not_lm = [p for n, p in named if lm_params is not None and not re.search(lm_params, n)]
        self._handles: list = []
        self._armed = False

    def route(self, lm_term: torch.Tensor, rep_term: torch.Tensor | None) -> torch.Tensor:
        """A loss whose value is the weighted total and whose gradient is routed."""
        self.clear()
        rep_grads: dict[int, torch.Tensor] = {}
        if rep_term is not None and self.rep_set:
            grads = torch.autograd.grad(
                rep_term, self.rep_set, retain_graph=True, allow_unused=True
            )
            rep_grads = {id(p): g for p, g in zip(self.rep_set, grads) if g is not None}
        surrogate = lm_term.new_zeros(())
        for p in self.rep_set:
            g = rep_grads.get(id(p))
            if g is not None:
                surrogate = surrogate + (p * g.to(p.dtype)).sum()
        loss = lm_term + (surrogate - surrogate.detach())
        if rep_term is not None:
            loss = loss + rep_term.detach()
        for p in self.not_lm:
            self._handles.append(p.register_hook(_replace_once(self, rep_grads.get(id(p)))))
        return _Arm.apply(loss, self)

    @property
    def active(self) -> bool:
        """Whether tensor hooks are attached right now."""
        return bool(self._handles)

    def clear(self) -> None:
        """Remove every tensor hook this router attached."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._armed = False
