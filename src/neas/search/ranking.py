"""Rank correlation between supernet (one-shot) accuracies and from-scratch accuracies, with
bootstrap 95 % confidence intervals (scipy.stats)."""

from __future__ import annotations

import numpy as np
from scipy import stats

__all__ = ["rank_correlation", "tau_difference"]


def _bootstrap(arrays, statistic, bootstrap: int, seed: int) -> list:
    """``statistic(*resampled)`` for percentile-bootstrap resamples of the paired ``arrays``
    (the same indices for all); resamples where some array is constant have no ranking and
    are skipped."""
    rng = np.random.default_rng(seed)
    n = len(arrays[0])
    out = []
    for _ in range(bootstrap):
        idx = rng.integers(0, n, n)
        if min(np.ptp(a[idx]) for a in arrays) == 0:
            continue
        out.append(statistic(*(a[idx] for a in arrays)))
    return out


def _ci95(values) -> list:
    values = [v for v in values if np.isfinite(v)]
    return [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))] if values else [float("nan")] * 2


def _tau(x, y) -> float:
    return stats.kendalltau(x, y).statistic


def rank_correlation(supernet_acc, scratch_acc, bootstrap: int = 1000, seed: int = 0) -> dict:
    """Kendall τ and Spearman ρ with percentile bootstrap 95 % CIs (resampling the ensembles)."""
    x, y = np.asarray(supernet_acc, float), np.asarray(scratch_acc, float)
    if len(x) != len(y) or len(x) < 3:
        raise ValueError("need at least 3 paired accuracies")
    pairs = _bootstrap((x, y), lambda x, y: (_tau(x, y), stats.spearmanr(x, y).statistic), bootstrap, seed)
    return {"n": int(len(x)), "kendall_tau": float(_tau(x, y)), "kendall_tau_ci95": _ci95([t for t, _ in pairs]),
            "spearman_rho": float(stats.spearmanr(x, y).statistic), "spearman_rho_ci95": _ci95([r for _, r in pairs]),
            "bootstrap": bootstrap}


def tau_difference(acc_a, acc_b, scratch_acc, bootstrap: int = 1000, seed: int = 0) -> dict:
    """Kendall τ(a, scratch) - τ(b, scratch) for two supernets scored on the same ensembles,
    with a paired percentile bootstrap 95 % CI (both τ computed on the same resample)."""
    a, b, y = (np.asarray(v, float) for v in (acc_a, acc_b, scratch_acc))
    if not len(a) == len(b) == len(y) or len(y) < 3:
        raise ValueError("need the same >= 3 ensembles scored by both supernets")
    diffs = _bootstrap((a, b, y), lambda a, b, y: _tau(a, y) - _tau(b, y), bootstrap, seed)
    return {"tau_difference": float(_tau(a, y) - _tau(b, y)), "ci95": _ci95(diffs), "bootstrap": bootstrap}
