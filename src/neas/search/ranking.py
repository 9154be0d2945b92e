"""Rank correlation between supernet (one-shot) accuracies and from-scratch accuracies, with
percentile-bootstrap 95 % confidence intervals (``scipy.stats.bootstrap``, paired resampling).

Every bound of a percentile interval is itself an estimate from a finite number of resamples;
:func:`percentile_ci` also returns its Monte-Carlo error (:func:`mc_band`), so that a caller
can tell a bound that excludes 0 from one that only happens to, for this bootstrap seed.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy import stats

__all__ = [
    "RESAMPLES",
    "kendall_tau",
    "mc_band",
    "paired_bootstrap",
    "percentile_ci",
    "rank_correlation",
    "spearman_rho",
    "tau_difference",
]

RESAMPLES = 10_000  # bootstrap resamples behind every interval (1,000 left a study verdict to the bootstrap's seed)
_BATCH = 2_000  # resamples evaluated at once (memory: batch x n(n-1)/2 pair signs per array)


def kendall_tau(x, y, axis: int = -1) -> np.ndarray:
    """Kendall τ-b (ties counted as ``scipy.stats.kendalltau`` counts them) along ``axis``,
    vectorised over every other axis: one call scores a whole batch of bootstrap resamples.
    nan where ``x`` or ``y`` is constant (no ranking)."""
    x, y = np.moveaxis(np.asarray(x, float), axis, -1), np.moveaxis(np.asarray(y, float), axis, -1)
    i, j = np.triu_indices(x.shape[-1], 1)
    sx, sy = np.sign(x[..., i] - x[..., j]), np.sign(y[..., i] - y[..., j])
    untied_x, untied_y = np.count_nonzero(sx, axis=-1), np.count_nonzero(sy, axis=-1)  # pairs not tied in x (in y)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (sx * sy).sum(-1) / np.sqrt(untied_x.astype(float) * untied_y)


def spearman_rho(x, y, axis: int = -1) -> np.ndarray:
    """Spearman ρ (Pearson correlation of average ranks, as ``scipy.stats.spearmanr``) along
    ``axis``, vectorised like :func:`kendall_tau`; nan where ``x`` or ``y`` is constant."""
    rx = stats.rankdata(np.asarray(x, float), axis=axis)
    ry = stats.rankdata(np.asarray(y, float), axis=axis)
    rx, ry = np.moveaxis(rx, axis, -1), np.moveaxis(ry, axis, -1)
    rx, ry = rx - rx.mean(-1, keepdims=True), ry - ry.mean(-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (rx * ry).sum(-1) / np.sqrt((rx * rx).sum(-1) * (ry * ry).sum(-1))


def paired_bootstrap(arrays, statistic, resamples: int = RESAMPLES, seed: int = 0) -> np.ndarray:
    """The bootstrap distribution of ``statistic(*arrays, axis=-1)`` (vectorised: each array
    arrives as (batch, n)), resampling the n paired observations with the same indices for
    every array: ``scipy.stats.bootstrap(paired=True, vectorized=True)``, rng
    ``numpy.random.default_rng(seed)``. Resamples where the statistic is nan (an array constant
    in that resample: no ranking) are left out. Shape (resamples left,) or (k, resamples left)
    for a statistic with k outputs (a resample is left out if any output is nan)."""
    arrays = [np.asarray(a, float) for a in arrays]
    with (
        warnings.catch_warnings()
    ):  # the percentile interval of a distribution holding nan; ours is computed without them
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        res = stats.bootstrap(
            arrays,
            statistic,
            n_resamples=resamples,
            batch=_BATCH,
            vectorized=True,
            paired=True,
            method="percentile",
            rng=np.random.default_rng(seed),
        )
    dist = np.asarray(res.bootstrap_distribution, float)
    keep = np.isfinite(dist).all(axis=tuple(range(dist.ndim - 1)))
    return dist[..., keep]


def mc_band(distribution, q: float) -> list:
    """The Monte-Carlo error of the ``q`` percentile bound of a bootstrap distribution of B
    values: the bound's own value at the quantiles q ± 2·sqrt(q(1−q)/B).

    The number of resamples below the infinite-B quantile is Binomial(B, q), so the empirical
    q-quantile lies between these two order statistics with ≈ 95 % probability (the
    distribution-free interval for a quantile); another bootstrap seed's bound falls in the band
    about as often. A bound whose band contains 0 excludes 0 only by the luck of the resamples."""
    values = np.asarray(distribution, float)
    h = 2 * math.sqrt(q * (1 - q) / len(values))
    return [float(np.quantile(values, max(0.0, q - h))), float(np.quantile(values, min(1.0, q + h)))]


def percentile_ci(distribution, level: float = 0.95) -> dict:
    """``ci``: the percentile interval of a bootstrap distribution (linear interpolation, as
    ``scipy.stats.bootstrap(method="percentile")``); ``mc``: each bound's Monte-Carlo band
    (:func:`mc_band`); ``resamples``: how many values it rests on. nan without values."""
    values = np.asarray(distribution, float)
    values = values[np.isfinite(values)]
    q = (1 - level) / 2
    if not len(values):
        nan = float("nan")
        return {"ci": [nan, nan], "mc": [[nan, nan], [nan, nan]], "resamples": 0}
    return {
        "ci": [float(np.quantile(values, q)), float(np.quantile(values, 1 - q))],
        "mc": [mc_band(values, q), mc_band(values, 1 - q)],
        "resamples": len(values),
    }


def _checked(*arrays, message: str) -> list:
    out = [np.asarray(v, float) for v in arrays]
    if len({len(v) for v in out}) != 1 or len(out[0]) < 3:
        raise ValueError(message)
    return out


def rank_correlation(supernet_acc, scratch_acc, bootstrap: int = RESAMPLES, seed: int = 0) -> dict:
    """Kendall τ and Spearman ρ with percentile bootstrap 95 % CIs (resampling the ensembles);
    ``*_ci95_mc``: the Monte-Carlo band of each bound (:func:`mc_band`)."""
    x, y = _checked(supernet_acc, scratch_acc, message="need at least 3 paired accuracies")
    both = paired_bootstrap(
        (x, y), lambda x, y, axis=-1: np.stack([kendall_tau(x, y, axis), spearman_rho(x, y, axis)]), bootstrap, seed
    )
    tau, rho = percentile_ci(both[0]), percentile_ci(both[1])
    return {
        "n": len(x),
        "kendall_tau": float(kendall_tau(x, y)),
        "kendall_tau_ci95": tau["ci"],
        "kendall_tau_ci95_mc": tau["mc"],
        "spearman_rho": float(spearman_rho(x, y)),
        "spearman_rho_ci95": rho["ci"],
        "spearman_rho_ci95_mc": rho["mc"],
        "bootstrap": bootstrap,
    }


def tau_difference(acc_a, acc_b, scratch_acc, bootstrap: int = RESAMPLES, seed: int = 0) -> dict:
    """Kendall τ(a, scratch) - τ(b, scratch) for two supernets scored on the same ensembles,
    with a paired percentile bootstrap 95 % CI (both τ computed on the same resample) and the
    Monte-Carlo band of each bound (``ci95_mc``)."""
    a, b, y = _checked(acc_a, acc_b, scratch_acc, message="need the same >= 3 ensembles scored by both supernets")
    diff = percentile_ci(
        paired_bootstrap(
            (a, b, y), lambda a, b, y, axis=-1: kendall_tau(a, y, axis) - kendall_tau(b, y, axis), bootstrap, seed
        )
    )
    return {
        "tau_difference": float(kendall_tau(a, y) - kendall_tau(b, y)),
        "ci95": diff["ci"],
        "ci95_mc": diff["mc"],
        "bootstrap": bootstrap,
    }
