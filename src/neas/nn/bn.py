"""BN recalibration (paper §3.3; docs/DESIGN.md §8): the one implementation shrinking and search use.

Before a candidate is scored with supernet weights, the running statistics of the BNs it uses
are reset and re-estimated as a cumulative average (momentum ``None``) over R training batches,
forwarded in train mode without gradients; then the modules go back to eval mode. Shared-part
BNs see the shared activations once; each path's private BNs see that path's activations.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import torch
import torch.nn as nn

__all__ = ["batch_norms", "recalibrate_bn", "recalibrating"]


def batch_norms(modules: Iterable[nn.Module]) -> list[nn.modules.batchnorm._BatchNorm]:
    """Every BN inside ``modules``, each once."""
    seen, out = set(), []
    for module in modules:
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and id(m) not in seen:
                seen.add(id(m))
                out.append(m)
    return out


@contextmanager
def recalibrating(modules: Iterable[nn.Module], mode_modules: Iterable[nn.Module] | None = None) -> Iterator[None]:
    """Inside the block, the BNs of ``modules`` start from reset statistics and average every
    batch forwarded (momentum ``None``), with ``mode_modules`` (default: ``modules``) in train
    mode. On exit — an exception included — momenta are restored and the modules are in eval mode.
    """
    modules = list(modules)
    mode_modules = modules if mode_modules is None else list(mode_modules)
    norms = batch_norms(modules)
    momenta = [bn.momentum for bn in norms]
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average: the exact mean over the R batches
    for m in mode_modules:  # only these: toggling a whole supernet walks thousands of modules
        m.train()
    try:
        yield
    finally:
        for bn, m in zip(norms, momenta):
            bn.momentum = m
        for m in mode_modules:
            m.eval()


@torch.no_grad()
def recalibrate_bn(
    forward: Callable[[torch.Tensor], object],
    modules: Iterable[nn.Module],
    batches: Iterable[torch.Tensor],
    root: nn.Module | None = None,
) -> None:
    """Re-estimates the running statistics of every BN inside ``modules``.

    Args:
        forward: runs the candidate on a batch of images (its outputs are ignored).
        modules: the modules the candidate uses; only their BNs are reset.
        batches: R batches of training images.
        root: the network to put in train mode for the passes (eval mode afterwards).
    """
    with recalibrating(modules, [root] if root is not None else []):
        for x in batches:
            forward(x)
