"""The statistics of seeded comparisons: t 95 % intervals over seeds and paired differences.

One implementation for ``neas compare`` and the CIFAR-10 study's tables (``experiments/cifar10/tables.py``):
a row reports the mean over seeds ± their standard deviation and a Student-t 95 % CI; two rows are
compared by their differences paired by seed, whose t CI either excludes 0 (better / worse) or not
(within noise). numpy and scipy only (no torch).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

__all__ = ["VERDICTS", "ci95", "decide", "paired_difference"]

VERDICTS = ("better", "worse", "within noise")  # of paired_difference: a - b > 0, < 0, CI contains 0


def ci95(xs: list[float]) -> tuple[float, float, float, float]:
    """mean, sd, CI low, CI high (Student t); the CI is nan below 2 values, and the mean itself when sd is 0."""
    xs = np.asarray(xs, float)
    mean = float(xs.mean())
    if len(xs) < 2:
        return mean, float("nan"), float("nan"), float("nan")
    sd = float(xs.std(ddof=1))
    if sd == 0:
        return mean, 0.0, mean, mean
    lo, hi = stats.t.interval(0.95, len(xs) - 1, loc=mean, scale=sd / math.sqrt(len(xs)))
    return mean, sd, float(lo), float(hi)


def decide(lo: float, hi: float, mean: float, boot: dict | None = None) -> str:
    """The outcome of a difference with t CI [lo, hi] and, optionally, a bootstrap CI
    (``neas.search.ranking.percentile_ci``'s dict) that must also exclude 0: "+" / "-" (both exclude 0,
    on the mean's side), "noise" (either contains 0: either source of noise explains it), or
    "borderline": the t CI excludes 0 and the bootstrap bound on the mean's side is within its
    Monte-Carlo band of 0, so which of the other two it is depends on the bootstrap's seed."""
    if lo <= 0 <= hi:
        return "noise"
    up = mean > 0
    if boot is not None:
        bound, band = (boot["ci"][0], boot["mc"][0]) if up else (boot["ci"][1], boot["mc"][1])
        if band[0] <= 0 <= band[1]:
            return "borderline"
        if (bound <= 0) if up else (bound >= 0):
            return "noise"
    return "+" if up else "-"


def paired_difference(a: list[float], b: list[float], higher_is_better: bool = True) -> dict:
    """``a - b`` paired by position (by seed): mean, sd, t 95 % CI ``lo``/``hi``, ``n`` and the
    verdict on ``a``, "better" (the CI lies above 0), "worse" (below) or "within noise" (it contains
    0, or there is one pair only: no interval). For a metric where lower is better (NLL, ECE:
    ``higher_is_better=False``) the CI below 0 is "better" and above 0 "worse"."""
    if len(a) != len(b):
        raise ValueError(f"paired values differ in number: {len(a)} and {len(b)}")
    if not len(a):
        raise ValueError("no paired values")
    mean, sd, lo, hi = ci95([x - y for x, y in zip(a, b)])
    if math.isnan(lo):
        verdict = VERDICTS[2]
    else:
        above, below = VERDICTS[:2] if higher_is_better else VERDICTS[1::-1]  # the verdict of a CI above / below 0
        verdict = {"+": above, "-": below}.get(decide(lo, hi, mean), VERDICTS[2])
    return {"mean": mean, "sd": sd, "lo": lo, "hi": hi, "n": len(a), "verdict": verdict}
