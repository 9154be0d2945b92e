import math

import numpy as np
import pytest
from scipy import stats

from neas.stats import ci95, decide, judge_differences, paired_difference


def test_ci95_is_scipys_t_interval():
    xs = [0.61, 0.64, 0.60, 0.66, 0.63]
    mean, sd, lo, hi = ci95(xs)
    want = stats.t.interval(0.95, len(xs) - 1, loc=np.mean(xs), scale=stats.sem(xs))
    assert mean == pytest.approx(np.mean(xs))
    assert sd == pytest.approx(np.std(xs, ddof=1))
    assert (lo, hi) == pytest.approx(want)


def test_ci95_of_one_value_has_no_interval_and_of_equal_values_a_point():
    mean, sd, lo, hi = ci95([0.7])
    assert mean == 0.7 and all(math.isnan(v) for v in (sd, lo, hi))
    assert ci95([0.5, 0.5, 0.5]) == (0.5, 0.0, 0.5, 0.5)  # a row's statistics: no spread shown as a point


@pytest.mark.parametrize(
    "a, b, verdict",
    [
        ([0.70, 0.72, 0.69, 0.71], [0.66, 0.69, 0.67, 0.66], "better"),  # every seed +0.02 .. +0.05
        ([0.66, 0.69, 0.67, 0.66], [0.70, 0.72, 0.69, 0.71], "worse"),
        ([0.70, 0.64, 0.69, 0.66], [0.66, 0.69, 0.67, 0.68], "within noise"),
    ],
)
def test_paired_difference_is_ttest_rels_interval(a, b, verdict):
    d = paired_difference(a, b)
    test = stats.ttest_rel(a, b)
    ci = test.confidence_interval(0.95)
    assert d["mean"] == pytest.approx(np.mean(np.subtract(a, b)))
    assert (d["lo"], d["hi"]) == pytest.approx((ci.low, ci.high))
    assert d["sd"] == pytest.approx(np.std(np.subtract(a, b), ddof=1))
    assert d["n"] == 4 and d["verdict"] == verdict
    assert (verdict == "within noise") == (test.pvalue >= 0.05)


def test_paired_difference_of_one_seed_is_within_noise():
    one = paired_difference([0.7], [0.6])
    assert one["mean"] == pytest.approx(0.1) and one["n"] == 1 and one["verdict"] == "within noise"
    assert math.isnan(one["lo"]) and math.isnan(one["hi"])
    assert paired_difference([0.5, 0.5], [0.5, 0.5])["verdict"] == "within noise"


@pytest.mark.parametrize(
    "a, b",
    [
        ([0.52, 0.61], [0.50, 0.59]),  # the audit's case: 2 seeds, sd 0
        ([0.7, 0.8, 0.9], [0.6, 0.7, 0.8]),  # sd 1e-17: float rounding of equal differences
        ([0.5] * 5, [0.4] * 5),
    ],
)
def test_a_difference_without_spread_over_few_seeds_is_within_noise_not_better(a, b):
    d = paired_difference(a, b)
    assert d["verdict"] == "within noise" and d["sd"] == 0.0 and d["mean"] > 0
    assert math.isnan(d["lo"]) and math.isnan(d["hi"])  # as scipy's t interval of scale 0: no interval


def test_a_difference_without_spread_is_decided_by_the_sign_test_from_six_seeds():
    assert stats.binomtest(6, 6).pvalue < 0.05 <= stats.binomtest(5, 5).pvalue
    assert paired_difference([0.5] * 6, [0.4] * 6)["verdict"] == "better"
    assert paired_difference([0.4] * 6, [0.5] * 6)["verdict"] == "worse"
    assert paired_difference([0.4] * 6, [0.5] * 6, higher_is_better=False)["verdict"] == "better"  # lower NLL
    assert paired_difference([0.4] * 6, [0.4] * 6)["verdict"] == "within noise"


def test_paired_difference_of_a_metric_where_lower_is_better_calls_a_lower_a_better():
    lower, higher = [0.66, 0.69, 0.67, 0.66], [0.70, 0.72, 0.69, 0.71]
    assert paired_difference(lower, higher, higher_is_better=False)["verdict"] == "better"
    assert paired_difference(higher, lower, higher_is_better=False)["verdict"] == "worse"
    noise = paired_difference([0.70, 0.64, 0.69, 0.66], [0.66, 0.69, 0.67, 0.68], higher_is_better=False)
    assert noise["verdict"] == "within noise"
    assert paired_difference(lower, higher, higher_is_better=False)["mean"] == paired_difference(lower, higher)["mean"]


def test_paired_difference_refuses_unpaired_values():
    with pytest.raises(ValueError, match="differ in number"):
        paired_difference([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="no paired"):
        paired_difference([], [])


def test_decide_with_a_bootstrap_that_contains_zero_is_noise():
    boot = {"ci": [-0.01, 0.2], "mc": [[-0.02, -0.005], [0.19, 0.21]]}
    assert decide(0.01, 0.2, 0.1) == "+"
    assert decide(0.01, 0.2, 0.1, boot) == "noise"
    assert decide(-0.2, -0.01, -0.1) == "-"
    assert decide(-0.1, 0.1, 0.0) == "noise"


def test_judge_differences_is_the_rule_of_paired_difference_and_takes_a_bootstrap():
    assert judge_differences([0.1])[4] == "noise" and math.isnan(judge_differences([0.1])[2])
    mean, sd, lo, hi, outcome = judge_differences([0.02, 0.02])  # no spread, 2 pairs
    assert (mean, sd, outcome) == (0.02, 0.0, "noise") and math.isnan(lo) and math.isnan(hi)
    assert judge_differences([0.02] * 6)[4] == "+"
    boot = {"ci": [-0.01, 0.2], "mc": [[-0.02, -0.005], [0.19, 0.21]]}  # contains 0
    assert judge_differences([0.02] * 6, boot)[4] == "noise"
    assert judge_differences([0.01, 0.03, 0.02], boot)[4] == decide(*ci95([0.01, 0.03, 0.02])[2:], 0.02, boot)
