import pytest
import torch
import torch.nn.functional as F

from neas.ensemble.cascade import (
    NEVER,
    _best_threshold,
    cascade_curve,
    cascade_predict,
    cascade_summary,
    fit_thresholds,
)
from neas.errors import NeasError


def _data(k: int, n: int = 400, c: int = 10, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """K paths of growing skill on the same labels; the ensemble beats its first path."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(c, (n,), generator=g)
    signal = F.one_hot(labels, c).float()
    logits = torch.stack([torch.randn(n, c, generator=g) * 2 + signal * (1.5 + 0.3 * j) for j in range(k)])
    return logits, labels


def _costs(k: int) -> list[float]:
    return [100.0 + 60.0 * j for j in range(k)]  # a shared trunk: not K multiples of one path


@pytest.mark.parametrize("k", [2, 3])
def test_threshold_extremes(k):
    logits, _ = _data(k)
    first, stops = cascade_predict(logits, [0.0] * (k - 1))
    assert torch.equal(first, logits[0]) and torch.equal(stops, torch.ones(400, dtype=torch.long))
    full, stops = cascade_predict(logits, [1.5] * (k - 1), temperature=0.5)
    assert torch.equal(full, logits.mean(0)) and torch.equal(stops, torch.full((400,), k, dtype=torch.long))


def test_stop_rule_per_image():
    logits, _ = _data(3, n=50)
    thresholds, t = [0.6, 0.4], 1.7
    out, stops = cascade_predict(logits, thresholds, temperature=t)
    for i in range(50):
        expected = 3
        for j in (1, 2):
            if (logits[:j, i].mean(0) / t).softmax(-1).max() >= thresholds[j - 1]:
                expected = j
                break
        assert stops[i] == expected
        torch.testing.assert_close(out[i], logits[:expected, i].mean(0))


def test_input_checks():
    logits, labels = _data(3, n=20)
    with pytest.raises(NeasError, match="thresholds"):
        cascade_predict(logits, [0.5])
    with pytest.raises(NeasError, match="step costs"):
        fit_thresholds(logits, labels, [1.0, 2.0], 0.01)
    with pytest.raises(ValueError, match="labels"):
        fit_thresholds(logits, labels[:5], _costs(3), 0.01)


def _brute_force_k2(logits, labels, costs, tolerance):
    """Every set of images a 2-path cascade can stop early (those at or above each distinct
    first-path confidence, or none), cheapest feasible, counted by hand."""
    confidence = logits[0].double().softmax(-1).max(-1).values
    right = [logits[0].argmax(-1) == labels, logits.mean(0).argmax(-1) == labels]
    required = int(right[1].sum()) - int(tolerance * len(labels) + 1e-9)
    feasible = []
    for stop in [torch.zeros_like(confidence, dtype=torch.bool)] + [confidence >= v for v in confidence.unique()]:
        if int(torch.where(stop, right[0], right[1]).sum()) >= required:
            feasible.append(float(torch.where(stop, costs[0], costs[1]).double().mean()))
    return min(feasible)


@pytest.mark.parametrize("tolerance", [0.0, 0.005, 0.02])
def test_fit_thresholds_k2_is_exact(tolerance):
    logits, labels = _data(2)
    thresholds = fit_thresholds(logits, labels, _costs(2), tolerance)
    summary = cascade_summary(logits, labels, thresholds, _costs(2))
    full = cascade_summary(logits, labels, [NEVER], _costs(2))
    assert summary["top1"] >= full["top1"] - tolerance - 1e-12
    assert summary["mean_cost"] == pytest.approx(_brute_force_k2(logits, labels, _costs(2), tolerance))
    assert summary["mean_cost"] < full["mean_cost"]  # these paths leave room to stop early


@pytest.mark.parametrize("k", [2, 3, 4])
def test_fitted_thresholds_sit_between_confidences(k):
    """A confidence recomputed by another CPU or runtime differs in its last bits: no image may sit
    on a threshold, or its stop would flip (the fit's midpoints leave half a gap either side)."""
    logits, labels = _data(k, seed=k)
    thresholds = fit_thresholds(logits, labels, _costs(k), 0.01)
    assert any(t != NEVER for t in thresholds)
    _, stops = cascade_predict(logits, thresholds)
    for j, t in enumerate(thresholds):
        conf = logits[: j + 1].mean(0).double().softmax(-1).max(-1).values[stops > j]  # the images reaching step j + 1
        below, above = conf[conf < t], conf[conf >= t]
        gap = float(above.min() - below.max()) if len(below) and len(above) else None
        if t != NEVER and gap is not None:
            assert float((conf - t).abs().min()) >= gap / 2 - 1e-15


@pytest.mark.parametrize("tolerance", [0.0, 0.01])
def test_fit_thresholds_k3(tolerance):
    logits, labels = _data(3, seed=1)
    costs = _costs(3)
    thresholds = fit_thresholds(logits, labels, costs, tolerance)
    assert len(thresholds) == 2 and thresholds == fit_thresholds(logits, labels, costs, tolerance)  # deterministic
    summary = cascade_summary(logits, labels, thresholds, costs)
    full = cascade_summary(logits, labels, [NEVER, NEVER], costs)
    assert summary["top1"] >= full["top1"] - tolerance - 1e-12
    assert summary["mean_cost"] <= full["mean_cost"]
    assert summary["mean_cost"] < full["mean_cost"] or tolerance == 0.0
    assert sum(summary["stop_fraction"]) == pytest.approx(1.0)
    # coordinate descent ends where no single threshold, moved to any candidate value, does better
    for j in range(2):
        step_conf = logits[: j + 1].mean(0).softmax(-1).max(-1).values.double().unique().tolist()
        for value in [*step_conf, NEVER]:
            moved = list(thresholds)
            moved[j] = value
            other = cascade_summary(logits, labels, moved, costs)
            if other["top1"] >= full["top1"] - tolerance - 1e-12:
                assert other["mean_cost"] >= summary["mean_cost"] - 1e-9


@pytest.mark.parametrize("seed", range(4))
def test_fit_thresholds_k4_with_uneven_costs(seed):
    """Costs need not grow (given, not summed): the constraint must hold whatever they are."""
    logits, labels = _data(4, n=200, seed=seed)
    costs = [[100.0, 40.0, 300.0, 120.0], [10.0, 20.0, 30.0, 40.0]][seed % 2]
    thresholds = fit_thresholds(logits, labels, costs, 0.01)
    summary = cascade_summary(logits, labels, thresholds, costs)
    full = cascade_summary(logits, labels, [NEVER] * 3, costs)
    assert summary["top1"] >= full["top1"] - 0.01 - 1e-12
    assert summary["mean_cost"] <= full["mean_cost"]
    _assert_coordinate_wise_optimal(logits, labels, thresholds, costs, 0.01)


def _assert_coordinate_wise_optimal(logits, labels, thresholds, costs, tolerance) -> None:
    """No single threshold moved to another observed confidence (or NEVER) keeps top-1 within ``tolerance``
    of the full ensemble's at a lower mean cost."""
    summary = cascade_summary(logits, labels, thresholds, costs)
    full = cascade_summary(logits, labels, [NEVER] * len(thresholds), costs)
    for j in range(len(thresholds)):
        step_conf = logits[: j + 1].mean(0).double().softmax(-1).max(-1).values.unique().tolist()
        for value in [*step_conf, NEVER]:
            moved = list(thresholds)
            moved[j] = value
            other = cascade_summary(logits, labels, moved, costs)
            if other["top1"] >= full["top1"] - tolerance - 1e-12:
                assert other["mean_cost"] >= summary["mean_cost"] - 1e-9


def test_one_step_search_skips_an_infeasible_never():
    """Going on is cheaper here but loses the images: the search must not return it."""
    conf = torch.tensor([0.9, 0.5], dtype=torch.float64)
    stop = (torch.tensor([10.0, 10.0], dtype=torch.float64), torch.tensor([1, 1]))
    go = (torch.tensor([1.0, 1.0], dtype=torch.float64), torch.tensor([0, 0]))
    assert _best_threshold(conf, stop, go, (0.0, 0), required=2) == (20.0, 2, 0.25)  # below 0.5: midway to 0
    assert _best_threshold(conf, stop, go, (0.0, 0), required=3)[0] == float("inf")


def test_fit_thresholds_never_costs_more_when_the_first_path_is_useless():
    logits, labels = _data(3, seed=2)
    logits[0] = torch.randn(400, 10, generator=torch.Generator().manual_seed(5)) * 10  # confident and wrong
    thresholds = fit_thresholds(logits, labels, _costs(3), 0.0)
    summary = cascade_summary(logits, labels, thresholds, _costs(3))
    assert summary["top1"] >= cascade_summary(logits, labels, [NEVER] * 2, _costs(3))["top1"]
    # (its mean cost is at most the full ensemble's whatever the thresholds, since the step costs grow:
    # the audit's "cannot fail"; what can is that no other threshold is cheaper at that top-1)
    _assert_coordinate_wise_optimal(logits, labels, thresholds, _costs(3), 0.0)


def test_cascade_curve():
    logits, labels = _data(3)
    curve = cascade_curve(logits, labels, _costs(3), points=11)
    assert [p["threshold"] for p in curve] == pytest.approx([i / 10 for i in range(11)])
    first = (logits[0].argmax(-1) == labels).double().mean().item()
    assert curve[0] == {"threshold": 0.0, "top1": first, "mean_cost": 100.0}
    costs = [p["mean_cost"] for p in curve]
    assert costs == sorted(costs)  # a higher threshold stops fewer images early


def _brute_force_fit(logits, labels, costs_of, tolerance):
    """K = 2, every order and every threshold (NEVER and midway below each distinct confidence) tried:
    the cheapest feasible cascade on these images, then the more correct, then the higher threshold."""
    n = len(labels)
    best = None
    for order in [(0, 1), (1, 0)]:
        in_order, costs = logits[list(order)], costs_of(order)
        conf = in_order[0].double().softmax(-1).max(-1).values
        right_first = in_order[0].argmax(-1) == labels
        right_full = in_order.mean(0).argmax(-1) == labels
        required = int(right_full.sum()) - int(tolerance * n + 1e-9)
        values = sorted(set(conf.tolist()), reverse=True)
        candidates = [NEVER] + [(v + (values[i + 1] if i + 1 < len(values) else 0.0)) / 2 for i, v in enumerate(values)]
        for t in candidates:
            stop = conf >= t
            correct = int(torch.where(stop, right_first, right_full).sum())
            if correct < required:
                continue
            cost = float(torch.where(stop, costs[0], costs[1]).sum()) / n
            key = (cost, -correct, -t)
            if best is None or key < best[0]:
                best = (key, order, t)
    return best[1], best[2]


def test_the_cross_fitted_mean_cost_equals_a_brute_force_fit_scored_on_the_other_fold():
    from neas.ensemble.cascade import cross_fit

    logits, labels = _data(2, n=301, seed=5)
    logits[1] *= 1.3  # the orders differ
    costs_of = lambda order: [100.0, 160.0] if order == (0, 1) else [130.0, 160.0]
    got = cross_fit(logits, labels, costs_of, tolerance=0.01, folds=2)
    fold_of = torch.arange(301) % 2
    cost = right = 0.0
    for f in range(2):
        fit, scored = fold_of != f, fold_of == f
        order, t = _brute_force_fit(logits[:, fit], labels[fit], costs_of, 0.01)
        in_order = logits[list(order)][:, scored]
        stop = in_order[0].double().softmax(-1).max(-1).values >= t
        costs = costs_of(order)
        cost += float(torch.where(stop, costs[0], costs[1]).sum())
        predicted = torch.where(stop[:, None], in_order[0], in_order.mean(0)).argmax(-1)
        right += int((predicted == labels[scored]).sum())
    assert got["mean_cost"] == pytest.approx(cost / 301, rel=1e-12)
    assert got["top1"] == pytest.approx(right / 301, rel=1e-12)
    # the reported cascade is the one fitted on all the images
    order, t = _brute_force_fit(logits, labels, costs_of, 0.01)
    assert got["order"] == list(order) and got["thresholds"] == pytest.approx([t], abs=1e-12)


@pytest.mark.parametrize("exit_rule", ["accuracy", "risk"])
def test_a_cross_fitted_cascade_never_scores_thresholds_on_the_images_they_were_fitted_on(monkeypatch, exit_rule):
    import neas.ensemble.cascade as cascade

    logits, labels = _data(3, n=90, seed=2)
    tag = (-50 + torch.arange(90) * 1e-3)[None, :, None].expand(3, 90, 1)  # a class never predicted: image i's id
    logits = torch.cat([logits, tag], -1)
    image_ids = lambda in_order: set(((in_order[0, :, -1] + 50) * 1e3).round().long().tolist())
    events = []  # ("fit", images) / ("score", images), in call order
    real_fit, real_summary = cascade.fit_thresholds, cascade.cascade_summary

    def fit(lg, *args, **kwargs):
        events.append(("fit", image_ids(lg)))
        return real_fit(lg, *args, **kwargs)

    def summary(lg, *args, **kwargs):
        events.append(("score", image_ids(lg)))
        return real_summary(lg, *args, **kwargs)

    monkeypatch.setattr(cascade, "fit_thresholds", fit)
    monkeypatch.setattr(cascade, "cascade_summary", summary)
    cascade.cross_fit(logits, labels, lambda order: _costs(3), tolerance=0.01, folds=3, exit_rule=exit_rule)
    folds, since = [], []  # per fold: the images its thresholds were fitted on, and those it was scored on
    for kind, images in events:
        if kind == "fit":
            since.append(images)
        elif len(images) == 30:  # a fold's own score (the in-sample choice of the order scores 60)
            folds.append((set().union(*since), images))
            since = []
    assert len(folds) == 3
    for fitted_on, scored_on in folds:
        assert fitted_on and not fitted_on & scored_on
        assert fitted_on | scored_on == set(range(90))
    assert set().union(*(scored for _, scored in folds)) == set(range(90))


@pytest.mark.parametrize("k, count", [(2, 2), (3, 6), (4, 24), (5, 5)])
def test_every_order_is_tried_up_to_four_paths_and_each_first_path_above(k, count):
    from neas.ensemble.cascade import cascade_orders

    orders = cascade_orders(k)
    assert len(orders) == len(set(orders)) == count
    assert all(sorted(o) == list(range(k)) for o in orders)
    assert {o[0] for o in orders} == set(range(k))
