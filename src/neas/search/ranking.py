"""Rank correlation between supernet (one-shot) accuracies and from-scratch accuracies, with
bootstrap 95 % confidence intervals (scipy.stats)."""

from __future__ import annotations

import numpy as np
from scipy import stats

__all__ = ["rank_correlation", "tau_difference"]


def rank_correlation(supernet_acc, scratch_acc, bootstrap: int = 1000, seed: int = 0) -> dict:
    """Kendall τ and Spearman ρ with percentile bootstrap 95 % CIs (resampling the ensembles)."""
    x, y = np.asarray(supernet_acc, float), np.asarray(scratch_acc, float)
    if len(x) != len(y) or len(x) < 3:
        raise ValueError("need at least 3 paired accuracies")
    tau = float(stats.kendalltau(x, y).statistic)
    rho = float(stats.spearmanr(x, y).statistic)
    rng = np.random.default_rng(seed)
    taus, rhos = [], []
    for _ in range(bootstrap):
        idx = rng.integers(0, len(x), len(x))
        if np.ptp(x[idx]) == 0 or np.ptp(y[idx]) == 0:
            continue  # a constant resample has no ranking
        taus.append(stats.kendalltau(x[idx], y[idx]).statistic)
        rhos.append(stats.spearmanr(x[idx], y[idx]).statistic)

    def ci(values):
        values = [v for v in values if np.isfinite(v)]
        return [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))] if values else [float("nan")] * 2

    return {"n": int(len(x)), "kendall_tau": tau, "kendall_tau_ci95": ci(taus), "spearman_rho": rho,
            "spearman_rho_ci95": ci(rhos), "bootstrap": bootstrap}


def tau_difference(acc_a, acc_b, scratch_acc, bootstrap: int = 1000, seed: int = 0) -> dict:
    """Kendall τ(a, scratch) - τ(b, scratch) for two supernets scored on the same ensembles,
    with a paired percentile bootstrap 95 % CI (both τ computed on the same resample)."""
    a, b, y = (np.asarray(v, float) for v in (acc_a, acc_b, scratch_acc))
    if not len(a) == len(b) == len(y) or len(y) < 3:
        raise ValueError("need the same >= 3 ensembles scored by both supernets")

    def tau(x, idx=slice(None)):
        return stats.kendalltau(x[idx], y[idx]).statistic

    diff = float(tau(a) - tau(b))
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(bootstrap):
        idx = rng.integers(0, len(y), len(y))
        if min(np.ptp(a[idx]), np.ptp(b[idx]), np.ptp(y[idx])) == 0:
            continue
        d = tau(a, idx) - tau(b, idx)
        if np.isfinite(d):
            diffs.append(d)
    ci = [float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5))] if diffs else [float("nan")] * 2
    return {"tau_difference": diff, "ci95": ci, "bootstrap": bootstrap}
