"""Deterministic splits and subsets: everything a run calibrates or scores on.

Every split and subset depends only on the labels, its size, a fixed seed and what it is for
(``purpose``) — never on the run's seed or on where a class happens to sit in the file list —
so every stage of a pipeline and every rank sees the same images. Image folders list their
files class by class, so a prefix of a split is one class: no set here is ever a prefix.
"""

from __future__ import annotations

import torch

from neas.seeding import stream_seed

__all__ = ["SPLIT_SEED", "class_counts", "holdout_split", "stratified_subset"]

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


def stratified_subset(labels: torch.Tensor, n: int | None, purpose: str, seed: int = SPLIT_SEED) -> torch.Tensor:
    """Indices of ``min(n, N)`` images (all of them when ``n`` is None) with the split's class mix.

    Class ``c`` of ``n_c`` images gives ``floor(n * n_c / N)`` or one more (largest remainder,
    ties to the larger class): every class count is within one image of its proportional share.
    Which images a class gives is a permutation seeded by (``seed``, ``purpose``, class), so
    different purposes draw different images. The result is interleaved — the j-th of ``t_c``
    images of class c sits at position ``(j + 1/2) / t_c`` of the sequence — so every batch cut
    from it in order is class-balanced too.
    """
    labels = labels.detach().cpu().long()
    total = len(labels)
    n = total if n is None else max(0, min(int(n), total))
    classes, counts = torch.unique(labels, return_counts=True)
    classes, counts = classes.tolist(), counts.tolist()
    take = [n * m // total for m in counts] if total else []
    by_remainder = sorted(range(len(classes)), key=lambda i: (-(n * counts[i] % total), -counts[i], classes[i]))
    for i in by_remainder[: n - sum(take)]:
        take[i] += 1
    keyed = []
    for c, t in zip(classes, take):
        if t == 0:
            continue
        idx = torch.nonzero(labels == c).flatten()
        gen = torch.Generator().manual_seed(stream_seed(seed, "subset", purpose, c))
        chosen = idx[torch.randperm(len(idx), generator=gen)[:t]]
        keyed += [((j + 0.5) / t, c, int(i)) for j, i in enumerate(chosen.tolist())]
    keyed.sort()
    return torch.tensor([i for _, _, i in keyed], dtype=torch.int64)


def class_counts(labels: torch.Tensor, classes: list[str]) -> dict[str, int]:
    """``{class name: number of images}`` for the classes present in ``labels``."""
    counts = torch.bincount(labels.detach().cpu().long(), minlength=len(classes)).tolist()
    return {name: c for name, c in zip(classes, counts) if c}
