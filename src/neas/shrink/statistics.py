"""Similarity S and quality r of each layer's ops from sampled ensembles (§3.2, Eq. 5 and 7).

Each sampled ensemble is scored once on a fixed probe set (after BN recalibration): the
accuracy of every path and the mean distance between every two paths' pooled penultimate
features. From Z such samples, for every layer m:

- ``S_m[i, j]`` = mean over the samples where two paths use ops i and j at private layer m of
  ``exp(-beta * mean_x ||v_p(x) - v_q(x)||_2)``; ``S_m[i, i] = 1``; pairs never observed take
  the mean of the observed entries of that layer.
- ``r_m[i]`` = ``exp(gamma * mean accuracy of the paths that use op i at layer m)`` (docs/DESIGN.md §6.3:
  the exponential form, so gamma trades accuracy against diversity); unobserved ops take the
  layer's mean accuracy.

S estimated this way (means over different samples, filled gaps) need not be positive
semi-definite, and a DPP score of an indefinite S can be negative for K >= 3: S is projected
onto the PSD cone (eigenvalues clipped at ``PSD_EPS``, then rescaled to a unit diagonal). An S
that is already PSD is left exactly as it is.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from neas.space import EnsembleArch, Op, SearchSpace

__all__ = ["PSD_EPS", "LayerStats", "ProbeSample", "layer_statistics", "nearest_psd"]

PSD_EPS = 1e-6  # smallest eigenvalue S keeps after projection


@dataclass
class ProbeSample:
    """One sampled ensemble scored on the probe set."""

    arch: EnsembleArch
    path_acc: list[float]  # top-1 of each path
    ensemble_acc: float  # top-1 of the mean logits
    distances: dict[tuple[int, int], float]  # (p, q), p < q: mean_x ||v_p(x) - v_q(x)||_2

    def to_json(self) -> dict:
        return {
            **self.arch.to_json(),
            "path_acc": self.path_acc,
            "ensemble_acc": self.ensemble_acc,
            "distances": {f"{p},{q}": d for (p, q), d in self.distances.items()},
        }


@dataclass
class LayerStats:
    """Statistics of one layer; matrices are indexed by ``ops`` (the layer's candidates)."""

    index: int
    ops: tuple[Op, ...]
    S: np.ndarray  # (N, N) similarity, symmetric, unit diagonal, positive semi-definite
    r: np.ndarray  # (N,) quality
    pair_counts: np.ndarray  # (N, N) how many path pairs observed each (i, j)
    op_counts: np.ndarray  # (N,) how many paths used each op
    S_min_eigenvalue: float = 1.0  # of S as estimated, before the PSD projection


def nearest_psd(S: np.ndarray, eps: float = PSD_EPS) -> np.ndarray:
    """``S`` itself when its eigenvalues are all >= ``eps``; otherwise S with its eigenvalues
    clipped at ``eps``, rescaled to a unit diagonal (a similarity matrix again)."""
    S = (S + S.T) / 2
    values, vectors = np.linalg.eigh(S)
    if values.min() >= eps:
        return S
    P = (vectors * np.maximum(values, eps)) @ vectors.T
    d = np.sqrt(np.diag(P))
    P = P / d[:, None] / d[None, :]
    return (P + P.T) / 2


def layer_statistics(space: SearchSpace, samples: list[ProbeSample], beta: float, gamma: float) -> list[LayerStats]:
    """S and r of every searchable layer from the probe samples."""
    raw = []
    for spec in space.layers:
        ops = spec.ops
        pos = {op: i for i, op in enumerate(ops)}
        n = len(ops)
        sim, pairs = np.zeros((n, n)), np.zeros((n, n))
        acc, uses = np.zeros(n), np.zeros(n)
        for sample in samples:
            column = [path[spec.index - 1] for path in sample.arch.paths]
            for k, op in enumerate(column):
                acc[pos[op]] += sample.path_acc[k]
                uses[pos[op]] += 1
            if spec.index <= sample.arch.split:
                continue  # a shared layer: both paths use the same op, no pair to compare
            for p, q in itertools.combinations(range(len(column)), 2):
                i, j = pos[column[p]], pos[column[q]]
                value = float(np.exp(-beta * sample.distances[(p, q)]))
                sim[i, j] += value
                sim[j, i] += value
                pairs[i, j] += 1
                pairs[j, i] += 1
        mean_acc = acc.sum() / uses.sum() if uses.sum() else 0.0
        r = np.exp(gamma * np.where(uses > 0, acc / np.maximum(uses, 1), mean_acc))
        raw.append((spec, ops, sim, pairs, r, uses))
    observed = [
        sim[i, j] / pairs[i, j]
        for _, ops, sim, pairs, _, _ in raw
        for i in range(len(ops))
        for j in range(len(ops))
        if i != j and pairs[i, j]
    ]
    global_fill = float(np.mean(observed)) if observed else 0.0
    stats = []
    for spec, ops, sim, pairs, r, uses in raw:
        n = len(ops)
        seen = pairs > 0
        S = np.where(seen, sim / np.maximum(pairs, 1), 0.0)
        off = ~np.eye(n, dtype=bool)
        # unobserved pairs: the mean of the layer's observed pairs; a layer never private in any
        # sample (e.g. below the smallest split point) takes the mean over all layers
        fill = S[seen & off].mean() if (seen & off).any() else global_fill
        S = np.where(seen | ~off, S, fill)
        np.fill_diagonal(S, 1.0)
        stats.append(LayerStats(spec.index, ops, nearest_psd(S), r, pairs, uses, float(np.linalg.eigvalsh(S).min())))
    return stats
