"""BN recalibration (DESIGN.md §8).

Before a candidate is scored with supernet weights, the running statistics of the BNs it uses
are reset and re-estimated as a cumulative average (momentum ``None``) over R training batches,
forwarded in train mode without gradients; then the modules go back to eval mode. Shared-part
BNs see the shared activations once; each path's private BNs see that path's activations.
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch
import torch.nn as nn

__all__ = ["recalibrate_bn", "batch_norms"]


def batch_norms(modules: Iterable[nn.Module]) -> list[nn.modules.batchnorm._BatchNorm]:
    seen, out = set(), []
    for module in modules:
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and id(m) not in seen:
                seen.add(id(m))
                out.append(m)
    return out


@torch.no_grad()
def recalibrate_bn(
    forward: Callable[[torch.Tensor], object],
    modules: Iterable[nn.Module],
    batches: Iterable[torch.Tensor],
    root: "nn.Module | None" = None,
) -> None:
    """Re-estimates the running statistics of every BN inside ``modules``.

    Args:
        forward: runs the candidate on a batch of images (its outputs are ignored).
        modules: the modules the candidate uses; only their BNs are reset.
        batches: R batches of training images.
        root: the network to put in train mode for the passes (eval mode afterwards).
    """
    norms = batch_norms(modules)
    momenta = [bn.momentum for bn in norms]
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average: the exact mean over the R batches
    if root is not None:
        root.train()
    try:
        for x in batches:
            forward(x)
    finally:
        for bn, m in zip(norms, momenta):
            bn.momentum = m
        if root is not None:
            root.eval()
