"""The statistics of seeded comparisons: t 95 % intervals over seeds and paired differences.

One implementation for ``neas compare`` and the CIFAR-10 study's tables (``experiments/cifar10/tables.py``):
a row reports the mean over seeds ± their standard deviation and a Student-t 95 % CI; two rows are
compared by their differences paired by seed, whose t CI either excludes 0 (better / worse) or not
(within noise). When every seed gives the same difference (no spread: top-1 values are multiples of
1/N, so equal differences happen), the t interval has no width to report (scipy gives nan): the
verdict is then the exact two-sided sign test's, which needs at least 6 seeds of one sign (2 · 2^-6 <
0.05), so a constant shift over 2 to 5 seeds is "within noise". numpy and scipy only (no torch).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

__all__ = ["ALPHA", "VERDICTS", "ci95", "decide", "judge_differences", "paired_difference"]

VERDICTS = ("better", "worse", "within noise")  # of paired_difference: a - b > 0, < 0, CI contains 0
ALPHA = 0.05  # the verdicts' two-sided level (the t CI is 95 %)


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


def _no_spread(d: list[float]) -> bool:
    """Whether the paired differences are all equal (up to float rounding of the subtraction)."""
    return max(d) - min(d) <= 1e-9 * max(abs(x) for x in d) + 1e-15


def _sign_test(d: list[float]) -> str:
    """The exact two-sided sign test of differences that are all equal: "+" / "-" when ``len(d)``
    equal signs are unlikely under a zero median (p < ALPHA: 6 seeds or more), else "noise"."""
    if d[0] == 0 or stats.binomtest(len(d), len(d), 0.5).pvalue >= ALPHA:
        return "noise"
    return "+" if d[0] > 0 else "-"


def judge_differences(d: list[float], boot: dict | None = None) -> tuple[float, float, float, float, str]:
    """The one rule for paired differences ``d`` (``neas compare`` and the study's tables): mean, sd,
    t 95 % CI low/high and the outcome of :func:`decide` ("+", "-", "noise", "borderline"). One pair:
    no interval, "noise". No spread (all equal): no interval (nan, as scipy's) and the sign test's
    outcome, which ``boot`` (a bootstrap CI that must also exclude 0) can still overrule."""
    mean, sd, lo, hi = ci95(d)
    if len(d) < 2:
        return mean, sd, lo, hi, "noise"
    if _no_spread(d):
        outcome = _sign_test(d)
        if outcome != "noise" and boot is not None:
            outcome = decide(mean, mean, mean, boot)
        return mean, 0.0, float("nan"), float("nan"), outcome
    return mean, sd, lo, hi, decide(lo, hi, mean, boot)


def paired_difference(a: list[float], b: list[float], higher_is_better: bool = True) -> dict:
    """``a - b`` paired by position (by seed): mean, sd, t 95 % CI ``lo``/``hi``, ``n`` and the
    verdict on ``a``, "better" (the CI lies above 0), "worse" (below) or "within noise" (it contains
    0, or there is one pair only: no interval). For a metric where lower is better (NLL, ECE:
    ``higher_is_better=False``) the CI below 0 is "better" and above 0 "worse". Differences without
    spread (all equal) have no interval (``lo``/``hi`` nan, as scipy's) and the sign test's verdict:
    "within noise" below 6 pairs (a firm verdict from 2 equal differences would claim a certainty
    that a sample without spread cannot give)."""
    if len(a) != len(b):
        raise ValueError(f"paired values differ in number: {len(a)} and {len(b)}")
    if not len(a):
        raise ValueError("no paired values")
    mean, sd, lo, hi, outcome = judge_differences([x - y for x, y in zip(a, b)])
    above, below = VERDICTS[:2] if higher_is_better else VERDICTS[1::-1]  # the verdict of a CI above / below 0
    verdict = {"+": above, "-": below}.get(outcome, VERDICTS[2])
    return {"mean": mean, "sd": sd, "lo": lo, "hi": hi, "n": len(a), "verdict": verdict}
