"""Scores of operation combinations: the DPP diversity score (§3.2, Eq. 4 and 8) and the
accuracy baseline."""

from __future__ import annotations

import numpy as np

from neas.shrink.statistics import LayerStats, ProbeSample, nearest_psd
from neas.space import Op

__all__ = ["accuracy_scores", "diversity_scores", "quality_scores"]


def diversity_scores(stats: LayerStats, combinations: list[tuple[Op, ...]]) -> list[float]:
    """``det(L_m[h, h])`` for each combination h, with ``L_m = diag(r) S diag(r)`` (Eq. 4, 8).

    S is projected onto the PSD cone first (:func:`~neas.shrink.statistics.nearest_psd`; a no-op
    for the S of :func:`layer_statistics`, which is projected already), so every score is >= 0; a
    determinant that rounding makes negative is reported as 0.
    """
    S = nearest_psd(stats.S)
    kernel = stats.r[:, None] * S * stats.r[None, :]
    pos = {op: i for i, op in enumerate(stats.ops)}
    out = []
    for combo in combinations:
        idx = [pos[op] for op in combo]
        out.append(max(0.0, float(np.linalg.det(kernel[np.ix_(idx, idx)]))))
    return out


def quality_scores(stats: LayerStats, combinations: list[tuple[Op, ...]]) -> list[float]:
    """The DPP score with S = I: ``prod r_i^2`` over the combination's ops — quality alone, to
    isolate what the similarity matrix contributes."""
    pos = {op: i for i, op in enumerate(stats.ops)}
    return [float(np.prod([stats.r[pos[op]] ** 2 for op in combo])) for combo in combinations]


def accuracy_scores(index: int, samples: list[ProbeSample], combinations: list[tuple[Op, ...]]) -> list[float]:
    """Mean ensemble accuracy of the sampled ensembles whose private layer ``L{index}`` uses
    exactly combination h; combinations never sampled get the mean over the sampled ones."""
    totals: dict[frozenset, list[float]] = {}
    for sample in samples:
        if index <= sample.arch.split:
            continue
        key = frozenset(path[index - 1] for path in sample.arch.paths)
        totals.setdefault(key, []).append(sample.ensemble_acc)
    means = {key: float(np.mean(v)) for key, v in totals.items()}
    fill = float(np.mean(list(means.values()))) if means else 0.0
    return [means.get(frozenset(combo), fill) for combo in combinations]
