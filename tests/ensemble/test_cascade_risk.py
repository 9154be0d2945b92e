"""The risk exit rule of the cascade (issue 37 item 2, Xia & Bouganis 2023): thresholds that keep the coverage at
5 % selective risk within the tolerance of the full ensemble's, checked against brute force on constructed logits.
The coverage is counted here by a plain loop, independently of neas.ensemble.uncertainty."""

import pytest
import torch
import torch.nn.functional as F

from neas.ensemble.cascade import (
    NEVER,
    RiskUnreachable,
    _coverage_scan,
    cascade_summary,
    cross_fit,
    fit_thresholds,
)
from neas.errors import NeasError


def _covered(confidence: torch.Tensor, correct: torch.Tensor) -> int:
    """Images accepted at the largest coverage with selective risk <= 5 %: accepted in decreasing confidence,
    tied confidences together, a plain loop."""
    pairs = sorted(zip(confidence.tolist(), correct.tolist()), key=lambda p: -p[0])
    best = wrong = i = 0
    while i < len(pairs):
        end = i
        while end < len(pairs) and pairs[end][0] == pairs[i][0]:
            wrong += not pairs[end][1]
            end += 1
        if wrong * 20 <= end:
            best = end
        i = end
    return best


def _data(k: int, n: int = 300, seed: int = 0, overconfident: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """K paths of growing skill, the last one much better; the first's logits scaled by ``overconfident``
    (> 1: confident where it is wrong, which costs coverage at 5 % risk more than top-1)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(10, (n,), generator=g)
    signal = F.one_hot(labels, 10).float()
    logits = torch.stack([torch.randn(n, 10, generator=g) * 2 + signal * (1.5 + 0.3 * j) for j in range(k)])
    logits[-1] += signal * 3
    logits[0] *= overconfident
    return logits, labels


def _exit(in_order, labels, thresholds, temperature=None):
    """Each image's exit (confidence, correct) and step, by hand: the first step whose sub-ensemble's max
    softmax (at the temperature) reaches its threshold, else the last."""
    t = 1.0 if temperature is None else temperature
    k = in_order.shape[0]
    means = [in_order[:j].mean(0) for j in range(1, k + 1)]
    conf = torch.stack([(m.double() / t).softmax(-1).max(-1).values for m in means])  # (K, N)
    right = torch.stack([m.argmax(-1) == labels for m in means])
    fires = torch.stack([conf[j] >= thresholds[j] for j in range(k - 1)] + [torch.ones_like(labels, dtype=torch.bool)])
    steps = fires.long().argmax(0)  # the first step that fires (0-based)
    idx = torch.arange(len(labels))
    return conf[steps, idx], right[steps, idx], steps + 1


def _midpoints(values: list[float]) -> list[float]:
    values = sorted(set(values), reverse=True)
    return [(v + (values[i + 1] if i + 1 < len(values) else 0.0)) / 2 for i, v in enumerate(values)]


def _brute_force_k2(in_order, labels, costs, tolerance, temperature=None):
    """Every threshold a 2-path cascade can have (NEVER, and midway below each distinct first-step confidence):
    the cheapest whose coverage at 5 % risk is >= the full ensemble's - tolerance, then the most covered, then
    the higher threshold. Returns (threshold, mean cost)."""
    n = len(labels)
    t = 1.0 if temperature is None else temperature
    full = _covered(*_exit(in_order, labels, [NEVER], temperature)[:2])
    required = full - int(tolerance * n + 1e-9)
    first = (in_order[0].double() / t).softmax(-1).max(-1).values
    best = None
    for threshold in [NEVER, *_midpoints(first.tolist())]:
        confidence, correct, steps = _exit(in_order, labels, [threshold], temperature)
        covered = _covered(confidence, correct)
        if covered < required:
            continue
        cost = float(torch.tensor(costs, dtype=torch.float64)[steps - 1].sum()) / n
        key = (cost, -covered, -threshold)
        if best is None or key < best[0]:
            best = (key, threshold)
    return best[1], best[0][0]


@pytest.mark.parametrize(
    "tolerance, overconfident, temperature",
    [(0.0, 1.0, None), (0.02, 1.0, None), (0.1, 1.0, None), (0.02, 3.0, None), (0.1, 3.0, 2.0), (0.05, 1.0, 0.5)],
)
def test_the_risk_rule_fits_the_thresholds_a_brute_force_search_finds(tolerance, overconfident, temperature):
    logits, labels = _data(2, n=160, seed=int(10 * tolerance), overconfident=overconfident)
    costs = [100.0, 160.0]
    got = fit_thresholds(logits, labels, costs, tolerance, temperature, exit_rule="risk")
    threshold, cost = _brute_force_k2(logits, labels, costs, tolerance, temperature)
    assert got == pytest.approx([threshold], abs=1e-12)
    summary = cascade_summary(logits, labels, got, costs, temperature)
    assert summary["mean_cost"] == pytest.approx(cost, rel=1e-12)
    confidence, correct, _ = _exit(logits, labels, got, temperature)
    assert summary["coverage_at_5_risk"] == _covered(confidence, correct) / 160


def test_the_risk_rule_keeps_the_coverage_the_accuracy_rule_gives_away():
    """A weak first path: stopping its confident images early costs two points of top-1 but puts its confident
    errors at the top of the ranking, emptying the 5 %-risk region; only the risk rule keeps the coverage."""
    logits, labels = _data(2, seed=0)
    costs, tolerance = [100.0, 160.0], 0.02
    full = _covered(*_exit(logits, labels, [NEVER])[:2])
    accuracy = fit_thresholds(logits, labels, costs, tolerance)
    risk = fit_thresholds(logits, labels, costs, tolerance, exit_rule="risk")
    assert accuracy != risk and full >= 100
    assert _covered(*_exit(logits, labels, accuracy)[:2]) < full - tolerance * 300
    assert _covered(*_exit(logits, labels, risk)[:2]) >= full - tolerance * 300


@pytest.mark.parametrize("tolerance", [0.0, 0.03])
def test_three_step_risk_thresholds_keep_the_coverage_and_no_single_move_is_cheaper(tolerance):
    logits, labels = _data(3, n=150, seed=7)
    costs = [100.0, 160.0, 200.0]
    thresholds = fit_thresholds(logits, labels, costs, tolerance, exit_rule="risk")
    assert thresholds == fit_thresholds(logits, labels, costs, tolerance, exit_rule="risk")  # deterministic
    required = _covered(*_exit(logits, labels, [NEVER, NEVER])[:2]) - int(tolerance * 150 + 1e-9)
    assert _covered(*_exit(logits, labels, thresholds)[:2]) >= required
    cost = cascade_summary(logits, labels, thresholds, costs)["mean_cost"]
    assert cost < 200.0
    for j in range(2):  # coordinate descent ends where no single threshold, moved anywhere, does better
        step = logits[: j + 1].mean(0).double().softmax(-1).max(-1).values
        for value in [NEVER, *_midpoints(step.tolist())]:
            moved = list(thresholds)
            moved[j] = value
            if _covered(*_exit(logits, labels, moved)[:2]) >= required:
                assert cascade_summary(logits, labels, moved, costs)["mean_cost"] >= cost - 1e-9


@pytest.mark.parametrize("seed", range(40))
def test_the_one_step_coverage_scan_counts_every_candidate_as_a_loop_does(seed):
    """Heavily tied confidences (a few levels), any number of reaching images (none included)."""
    g = torch.Generator().manual_seed(seed)
    n = int(torch.randint(1, 60, (1,), generator=g))
    levels = int(torch.randint(1, 12, (1,), generator=g))
    go = (torch.randint(levels, (n,), generator=g).double() / levels, torch.rand(n, generator=g) < 0.15)
    r = int(torch.randint(0, n + 1, (1,), generator=g))
    ranked = torch.randperm(n, generator=g)[:r]
    stop_conf = (torch.randint(levels, (r,), generator=g).double() / levels).sort(descending=True).values
    stop = (stop_conf, torch.rand(r, generator=g) < 0.1)
    _, counts = torch.unique_consecutive(stop_conf, return_counts=True)
    sizes = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])
    got = _coverage_scan(go, stop, ranked, sizes)
    for m, size in enumerate(sizes.tolist()):
        confidence, wrong = go[0].clone(), go[1].clone()
        confidence[ranked[:size]], wrong[ranked[:size]] = stop[0][:size], stop[1][:size]
        assert int(got[m]) == _covered(confidence, ~wrong), (m, size)


def test_the_risk_rule_refuses_images_the_full_ensemble_covers_nothing_of():
    logits, _ = _data(2, n=100)
    wrong = (logits.mean(0).argmax(-1) + 1) % 10  # every prediction of the full ensemble is wrong
    with pytest.raises(RiskUnreachable) as caught:
        fit_thresholds(logits, wrong, [100.0, 160.0], 0.5, exit_rule="risk")
    message = str(caught.value)
    assert isinstance(caught.value, NeasError) and "\n" not in message
    assert message.startswith("cascade_exit risk: the full ensemble covers none of the 100 images")
    assert "use cascade_exit accuracy" in message
    accuracy = fit_thresholds(logits, wrong, [100.0, 160.0], 0.5)  # the top-1 rule has nothing to lose
    assert cascade_summary(logits, wrong, accuracy, [100.0, 160.0])["stop_fraction"] == [1.0, 0.0]


def test_an_unknown_exit_rule_is_refused_with_the_valid_ones():
    logits, labels = _data(2, n=20)
    with pytest.raises(NeasError, match=r"cascade_exit: unknown 'coverage'; choose accuracy or risk"):
        fit_thresholds(logits, labels, [1.0, 2.0], 0.01, exit_rule="coverage")
    with pytest.raises(NeasError, match=r"cascade_exit: unknown"):
        cross_fit(logits, labels, lambda order: [1.0, 2.0], 0.01, exit_rule="coverage")


def test_the_cross_fitted_risk_cascade_is_scored_only_on_the_fold_it_was_not_fitted_on():
    logits, labels = _data(2, n=201, seed=5, overconfident=2.0)
    costs_of = lambda order: [100.0, 160.0] if order == (0, 1) else [130.0, 160.0]
    got = cross_fit(logits, labels, costs_of, tolerance=0.02, folds=2, exit_rule="risk")
    fold_of = torch.arange(201) % 2
    cost, confidence, correct = 0.0, [], []
    for f in range(2):
        fit, scored = fold_of != f, fold_of == f
        best = None
        for order in [(0, 1), (1, 0)]:  # the order is part of the fit: the cheaper, then the more covered
            in_order = logits[list(order)][:, fit]
            threshold, fit_cost = _brute_force_k2(in_order, labels[fit], costs_of(order), 0.02)
            covered = _covered(*_exit(in_order, labels[fit], [threshold])[:2])
            if best is None or (fit_cost, -covered) < best[0]:
                best = ((fit_cost, -covered), order, threshold)
        _, order, threshold = best
        conf, right, steps = _exit(logits[list(order)][:, scored], labels[scored], [threshold])
        cost += float(torch.tensor(costs_of(order), dtype=torch.float64)[steps - 1].sum())
        confidence.append(conf)
        correct.append(right)
    assert got["mean_cost"] == pytest.approx(cost / 201, rel=1e-12)
    assert got["coverage_at_5_risk"] == _covered(torch.cat(confidence), torch.cat(correct)) / 201
    assert got["full_coverage_at_5_risk"] == _covered(*_exit(logits, labels, [NEVER])[:2]) / 201
    assert got["kept_full"] == 0


def test_a_fold_whose_fitting_images_reach_no_5_percent_risk_keeps_the_full_ensemble():
    """Odd images mislabelled: fold 0 is fitted on them (nothing to keep: every image runs both paths), fold 1
    on the even ones (a real fit)."""
    logits, labels = _data(2, n=200, seed=1)
    odd = torch.arange(200) % 2 == 1
    labels = torch.where(odd, (logits.mean(0).argmax(-1) + 1) % 10, labels)
    costs = [100.0, 160.0]
    got = cross_fit(logits, labels, lambda order: costs, tolerance=0.02, folds=2, exit_rule="risk")
    best = None  # fold 1: fitted on the even images, in the cheaper order there
    for order in [(0, 1), (1, 0)]:
        in_order = logits[list(order)]
        threshold = fit_thresholds(in_order[:, ~odd], labels[~odd], costs, 0.02, exit_rule="risk")
        fit = cascade_summary(in_order[:, ~odd], labels[~odd], threshold, costs)
        if best is None or (fit["mean_cost"], -fit["coverage_at_5_risk"]) < best[0]:
            best = ((fit["mean_cost"], -fit["coverage_at_5_risk"]), order, threshold)
    _, order, threshold = best
    fold1 = cascade_summary(logits[list(order)][:, odd], labels[odd], threshold, costs)["mean_cost"]
    assert fold1 < 160.0
    assert got["mean_cost"] == pytest.approx((160.0 * 100 + fold1 * 100) / 200, rel=1e-12)
    assert got["kept_full"] == 1 + (got["full_coverage_at_5_risk"] == 0)
