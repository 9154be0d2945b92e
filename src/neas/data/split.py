"""Deterministic splits: the held-out part of the training split used to score candidates.

The split depends only on the labels, the fraction and a fixed seed — never on the run's seed
— so every stage of a pipeline (and every rank) sees the same held-out images.
"""

from __future__ import annotations

import torch

__all__ = ["holdout_split"]

SPLIT_SEED = 20210619  # fixed: splits must not move when a run's seed changes


def holdout_split(labels: torch.Tensor, fraction: float, seed: int = SPLIT_SEED) -> tuple[torch.Tensor, torch.Tensor]:
    """Stratified split of indices ``0..N-1`` into (kept, held out).

    Every class gives ``round(fraction * n_c)`` of its images (at least one when
    ``fraction > 0`` and the class has two or more) to the held-out part.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"holdout fraction must be in [0, 1), got {fraction}")
    gen = torch.Generator().manual_seed(seed)
    keep, held = [], []
    for c in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        n = int(round(fraction * len(idx)))
        if fraction > 0 and n == 0 and len(idx) > 1:
            n = 1
        held.append(idx[:n])
        keep.append(idx[n:])
    return torch.cat(keep).sort().values, torch.cat(held).sort().values
