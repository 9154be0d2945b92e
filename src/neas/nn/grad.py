"""Gradient scaling at the split point: the shared trunk gets the mean, not the sum, of the
K paths' gradients (the released models do this; docs/DESIGN.md §4)."""

from __future__ import annotations

import torch

__all__ = ["scale_grad"]


class _ScaleGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scale):
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.scale, None


def scale_grad(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Identity in the forward pass; multiplies the gradient by ``scale`` in the backward pass."""
    if scale == 1.0 or not torch.is_grad_enabled() or not x.requires_grad:
        return x
    return _ScaleGrad.apply(x, scale)
