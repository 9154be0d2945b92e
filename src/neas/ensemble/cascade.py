"""Confidence-gated early exit over an ensemble's paths (as in ENCAS).

Step j (1..K) predicts with the sub-ensemble of the first j paths: the mean of their logits. An
image stops at the first step j < K whose sub-ensemble's max softmax probability (of the logits
divided by the temperature, when one is given) is >= ``thresholds[j - 1]``; every other image runs
all K paths. A threshold above 1 (``NEVER``) never stops; a threshold of 0 always stops.

``step_costs[j]`` is the cost (e.g. MACs) of running the first j + 1 paths; it is given, not summed,
because paths may share a trunk. :func:`fit_thresholds` minimises the mean cost per image subject
to its exit rule (:data:`~neas.records.CASCADE_EXITS`), by coordinate descent that starts from
"never stop early" and searches each threshold exactly over every distinct confidence (for K = 2 one
pass is the exact optimum). A fitted threshold sits midway between the lowest confidence it stops
and the next lower one, never on an image's own confidence. The rules:

- ``accuracy``: top-1 >= the full ensemble's top-1 - ``tolerance``;
- ``risk`` (the uncertainty-first rule of Xia & Bouganis, ICCV 2023): coverage at 5 % selective risk
  >= the full ensemble's - ``tolerance``. An image's confidence is its exit confidence: the max softmax
  probability (at the temperature, when one is given) of the sub-ensemble it stopped at, the one its
  stop was decided by (the full ensemble's, for the images that run every path). Coverage at 5 % risk
  is :func:`neas.ensemble.uncertainty.accepted_at_risk` over those confidences: images accepted in
  decreasing confidence, tied confidences accepted together, the largest fraction accepted whose error
  rate is <= 5 %. A full ensemble whose most confident images are already wrong more than 5 % of the time
  covers nothing at that risk, so the rule has nothing to keep: :class:`RiskUnreachable`.

:func:`cross_fit` prices a cascade honestly on the images it is fitted on (the search's held-out
scoring images): the images are dealt into folds by position (image i to fold i mod F); for each
fold, the order of the paths and the thresholds are fitted on the other folds and the cascade is
scored on this one, so no threshold is ever scored on an image it was fitted on. The order is part of
the fit: every order for K <= 4 (24 at most), above that the K orders that start with each path, the
others in index order. The reported order and thresholds are then fitted on all images. (With the risk
rule, a fold whose fitting images the full ensemble covers nothing of at 5 % risk keeps the full
ensemble there: no image stops early, nothing is saved.)
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import torch

from neas.ensemble.uncertainty import accepted_at_risk
from neas.errors import NeasError
from neas.records import CASCADE_EXITS

__all__ = [
    "EXHAUSTIVE_ORDERS",
    "NEVER",
    "RiskUnreachable",
    "cascade_curve",
    "cascade_orders",
    "cascade_predict",
    "cascade_summary",
    "cross_fit",
    "fit_thresholds",
]

NEVER = 2.0  # a threshold no softmax probability reaches
EXHAUSTIVE_ORDERS = 4  # up to this K every order of the paths is tried (4! = 24)
_MAX_SWEEPS = 20


class RiskUnreachable(NeasError):
    """The risk exit rule on images where the full ensemble covers nothing at 5 % selective risk."""


def _check(path_logits: torch.Tensor, labels: torch.Tensor | None = None) -> None:
    """Shapes: a caller's bug, not a user's input (a ValueError keeps its traceback)."""
    if path_logits.dim() != 3 or path_logits.shape[0] == 0 or path_logits.shape[1] == 0:
        raise ValueError(f"path_logits must have shape (K, N, C) with K, N > 0, got {tuple(path_logits.shape)}")
    if labels is not None and labels.shape != path_logits.shape[1:2]:
        raise ValueError(f"labels must have shape ({path_logits.shape[1]},), got {tuple(labels.shape)}")


def _steps(path_logits: torch.Tensor, temperature: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Max softmax probability (float64) and predicted class of every sub-ensemble, both (K, N); a
    sub-ensemble's logits are the mean of its paths' logits, as the model computes them. One step's
    logits at a time, so a large split never holds K copies."""
    t = 1.0 if temperature is None else float(temperature)
    if not t > 0:
        raise NeasError(f"temperature must be positive, got {temperature!r}")
    confidence, predicted = [], []
    for j in range(1, path_logits.shape[0] + 1):
        logits = path_logits[:j].mean(0)
        confidence.append((logits.double() / t).softmax(-1).max(-1).values)
        predicted.append(logits.argmax(-1))
    return torch.stack(confidence), torch.stack(predicted)


def _stops(confidence: torch.Tensor, thresholds) -> torch.Tensor:
    """(N,) long in 1..K: the first step j < K whose confidence reaches ``thresholds[j - 1]``."""
    k, n = confidence.shape
    if len(thresholds) != k - 1:
        raise NeasError(f"need K - 1 = {k - 1} thresholds, got {len(thresholds)}")
    stops = torch.full((n,), k, dtype=torch.long)
    for j in reversed(range(k - 1)):  # the earliest step that fires wins
        stops[confidence[j] >= float(thresholds[j])] = j + 1
    return stops


def cascade_predict(
    path_logits_in_order: torch.Tensor, thresholds, temperature: float | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Early-exit prediction.

    Args:
        path_logits_in_order: (K, N, C) logits of the paths in the order they run.
        thresholds: K - 1 confidence thresholds, one per step before the last.
        temperature: divides the logits for the stopping confidence only.

    Returns:
        The logits of the sub-ensemble each image stopped at (N, C), unscaled, and the step (N,) long
        in 1..K. Raw on purpose (``eval.json``'s numbers are raw): the exported cascades
        (``cascade_export``, ``cascade_onnx``) return these logits divided by the model's stored
        temperature, as ``neas.load_ensemble``'s model does; divide by ``EnsembleNet.temperature`` to
        get what they return.
    """
    logits, stops, _ = _predict(path_logits_in_order, thresholds, temperature)
    return logits, stops


def _predict(path_logits_in_order: torch.Tensor, thresholds, temperature) -> tuple:
    """:func:`cascade_predict`'s logits and stops, and each image's exit confidence (N,) float64: the
    stopping confidence of the step it stopped at."""
    _check(path_logits_in_order)
    confidence, _ = _steps(path_logits_in_order, temperature)
    stops = _stops(confidence, thresholds)
    logits = torch.empty_like(path_logits_in_order[0])
    for j in stops.unique().tolist():
        chosen = stops == j
        logits[chosen] = path_logits_in_order[:j, chosen].mean(0)
    return logits, stops, confidence[stops - 1, torch.arange(len(stops))]


def _costs(step_costs, k: int) -> torch.Tensor:
    if len(step_costs) != k:
        raise NeasError(f"need K = {k} step costs, got {len(step_costs)}")
    return torch.tensor([float(c) for c in step_costs], dtype=torch.float64)


def _best_threshold(conf: torch.Tensor, stop: tuple, go: tuple, fixed: tuple, required: int) -> tuple:
    """Exact 1-D search for one step: the threshold that minimises the total cost with at least
    ``required`` correct images. ``conf`` are the confidences of the images that reach the step;
    ``stop`` / ``go`` their (cost, correct) if they stop here / go on; ``fixed`` the totals of the
    other images. Returns (total cost, correct, threshold); NEVER is the first candidate, an infeasible
    answer has cost inf."""
    order = torch.sort(conf, descending=True, stable=True)
    values, counts = torch.unique_consecutive(order.values, return_counts=True)
    ends = counts.cumsum(0) - 1  # stopping every image with confidence >= values[i]
    gain_cost = (stop[0] - go[0])[order.indices].cumsum(0)[ends]
    gain_correct = (stop[1] - go[1])[order.indices].cumsum(0)[ends]
    base_cost, base_correct = fixed[0] + float(go[0].sum()), fixed[1] + int(go[1].sum())
    total_cost = torch.cat([gain_cost.new_zeros(1), gain_cost]) + base_cost
    total_correct = torch.cat([gain_correct.new_zeros(1), gain_correct]) + base_correct
    return _pick(values, total_cost, total_correct, required)


def _pick(values: torch.Tensor, total_cost: torch.Tensor, score: torch.Tensor, required: int) -> tuple:
    """The cheapest candidate whose ``score`` (correct images, or images covered at 5 % risk) is at least
    ``required``, then the higher score, then the higher threshold: candidate 0 is NEVER, candidate
    i > 0 stops every image with confidence >= ``values[i - 1]`` (distinct, high to low). Returns (total
    cost, score, threshold); cost inf when none is feasible."""
    feasible = score >= required
    if not bool(feasible.any()):
        return float("inf"), -1, NEVER
    cheapest = feasible & (total_cost == total_cost[feasible].min())
    i = int(torch.where(cheapest, score, -1).argmax())  # argmax returns the first maximum
    return float(total_cost[i]), int(score[i]), NEVER if i == 0 else _between(values, i - 1)


def _between(values: torch.Tensor, i: int) -> float:
    """A threshold that stops exactly the images with confidence >= ``values[i]`` (distinct, high
    to low), placed midway to the next lower confidence (to 0 below the lowest): a confidence
    recomputed by another kernel, CPU or runtime (ONNX) then falls on the same side of it, where a
    threshold on an image's own confidence flips that image's stop on a last-bit difference."""
    high = float(values[i])
    low = float(values[i + 1]) if i + 1 < len(values) else 0.0
    mid = (high + low) / 2
    return mid if low < mid <= high else high  # adjacent doubles have no midpoint between them


def _outcomes(confidence, correct, costs, thresholds: list, j: int) -> tuple:
    """Where every image ends if step j + 1 (0-based j) never fires, the others fixed: its stop (N,) 1..K,
    whether it reaches step j + 1, and its exit (confidence, correct, cost) there."""
    stops = _stops(confidence, [*thresholds[:j], NEVER, *thresholds[j + 1 :]])
    idx = torch.arange(stops.shape[0])
    return stops, stops > j, (confidence[stops - 1, idx], correct[stops - 1, idx], costs[stops - 1])


def _coordinate(confidence, correct, costs, thresholds: list, j: int, required: int) -> tuple:
    """The best threshold of step j + 1 (0-based j) with the others fixed, for the accuracy rule."""
    _, reach, (_, right, cost) = _outcomes(confidence, correct, costs, thresholds, j)
    stop = (torch.full(reach.shape, float(costs[j]), dtype=torch.float64), correct[j].long())
    go = (cost, right.long())
    fixed = (float(cost[~reach].sum()), int(right[~reach].sum()))
    sub = (stop[0][reach], stop[1][reach]), (go[0][reach], go[1][reach])
    return _best_threshold(confidence[j][reach], *sub, fixed, required)


def _coordinate_risk(confidence, correct, costs, thresholds: list, j: int, required: int) -> tuple:
    """The best threshold of step j + 1 (0-based j) with the others fixed, for the risk rule: every
    candidate (NEVER, then stopping the images reaching the step down to each distinct confidence) priced
    and its coverage at 5 % risk counted exactly (:func:`_coverage_scan`)."""
    _, reach, (conf_go, right_go, cost_go) = _outcomes(confidence, correct, costs, thresholds, j)
    reaching = reach.nonzero().squeeze(1)
    order = torch.sort(confidence[j, reaching], descending=True, stable=True)
    ranked = reaching[order.indices]  # the images reaching the step, most confident there first
    values, counts = torch.unique_consecutive(order.values, return_counts=True)
    sizes = torch.cat([counts.new_zeros(1), counts.cumsum(0)])  # images each candidate stops here
    gain = (float(costs[j]) - cost_go[ranked]).cumsum(0)
    total_cost = float(cost_go.sum()) + torch.cat([gain.new_zeros(1), gain[sizes[1:] - 1]])
    covered = _coverage_scan((conf_go, ~right_go), (confidence[j, ranked], ~correct[j, ranked]), ranked, sizes)
    return _pick(values, total_cost, covered, required)


def _coverage_scan(go: tuple, stop: tuple, ranked: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
    """Images covered at 5 % selective risk (:func:`~neas.ensemble.uncertainty.accepted_at_risk`: accepted
    in decreasing confidence, ties together, the most accepted with ``wrong * 20 <= accepted``) by each
    candidate of a one-step search, all M at once in O((N + M) sqrt N log N) rather than M sorts.

    ``go``: (confidence, wrong) of every image's exit if the step never fires, (N,) each; ``stop``: the same
    of the R reaching images if they stop at the step, most confident first; ``ranked``: those images'
    indices; candidate m stops the first ``sizes[m]`` of them (toggle q swaps image ``ranked[q]``'s go exit
    for stop exit q). Over the G distinct confidences, high to low, let D(g) = sum of (20 wrong - 1) and A(g)
    the count of the candidate's exits with confidence >= the g-th: it covers A at the last g with D <= 0.
    Candidates are taken in blocks: D and A of the block's first candidate in full, then the block's own
    toggles cut the G confidences into segments on which each candidate's D differs from that base by one
    constant, so "the last g of the segment with base D(g) <= -constant" is one binary search on the
    segment's suffix minima (made one sorted array by offsetting segment s by s * BIG)."""
    n, m = len(go[0]), len(sizes)
    values, group = torch.unique(torch.cat([go[0], stop[0]]), sorted=True, return_inverse=True)
    g = len(values)
    group = g - 1 - group  # 0 = the most confident
    weight = 20 * torch.cat([go[1], stop[1]]).long() - 1
    # toggle q: + its stop exit, - the go exit of image ranked[q]; two events each, in toggle order
    pos = torch.stack([group[n:], group[:n][ranked]], 1).flatten()
    dw = torch.stack([weight[n:], -weight[:n][ranked]], 1).flatten()
    da = torch.tensor([1, -1]).repeat(len(ranked))
    d_diff = torch.zeros(g, dtype=torch.long).index_add_(0, group[:n], weight[:n])
    a_diff = torch.zeros(g, dtype=torch.long).index_add_(0, group[:n], torch.ones(n, dtype=torch.long))
    big = 64 * (n + len(ranked)) + 1  # more than any D or offset can span
    block = max(8, int(g**0.5))
    out, applied = torch.zeros(m, dtype=torch.long), 0
    for m0 in range(0, m, block):
        size = sizes[m0 : m0 + block]
        lo, hi = int(size[0]), int(size[-1])
        d_diff.index_add_(0, pos[2 * applied : 2 * lo], dw[2 * applied : 2 * lo])
        a_diff.index_add_(0, pos[2 * applied : 2 * lo], da[2 * applied : 2 * lo])
        applied = lo
        d_base, a_base = d_diff.cumsum(0), a_diff.cumsum(0)
        events = slice(2 * lo, 2 * hi)
        starts = torch.unique(torch.cat([pos.new_zeros(1), pos[events]]))
        segment = torch.bucketize(torch.arange(g), starts, right=True) - 1  # of each confidence
        lift = (len(starts) - 1 - segment) * big  # so that a reversed running minimum restarts per segment
        suffix_min = (d_base - lift).flip(0).cummin(0).values.flip(0) + lift
        key = suffix_min + segment * big  # nondecreasing
        # per candidate and segment: the block's events included so far, summed over segments <= s
        row = torch.searchsorted(size, lo + torch.arange(2 * (hi - lo)) // 2, right=True)  # first including
        col = segment[pos[events]]
        shift_d = torch.zeros(len(size), len(starts), dtype=torch.long).index_put_((row, col), dw[events], True)
        shift_a = torch.zeros(len(size), len(starts), dtype=torch.long).index_put_((row, col), da[events], True)
        shift_d, shift_a = shift_d.cumsum(0).cumsum(1), shift_a.cumsum(0).cumsum(1)
        query = -shift_d + torch.arange(len(starts)) * big
        last = torch.searchsorted(key, query, right=True) - 1  # the last confidence with key <= query
        last = torch.where(last >= starts, last, -1)  # ... inside that segment, or none there
        best, s = last.max(1)
        covered = a_base[best.clamp(min=0)] + shift_a.gather(1, s[:, None]).squeeze(1)
        out[m0 : m0 + block] = torch.where(best >= 0, covered, 0)
    return out


def _check_exit_rule(exit_rule: str) -> None:
    if exit_rule not in CASCADE_EXITS:
        raise NeasError(f"cascade_exit: unknown {exit_rule!r}; choose {' or '.join(CASCADE_EXITS)}")


def _requirement(confidence, correct, tolerance: float, exit_rule: str) -> tuple[int, int]:
    """The full ensemble's score under ``exit_rule`` (correct images, or images covered at 5 % risk) and
    the least score a cascade must keep, both in images: the constraint in integers."""
    n = correct.shape[1]
    if exit_rule == "accuracy":
        full = int(correct[-1].sum())
    else:
        full = accepted_at_risk(confidence[-1], correct[-1])
        if full == 0:
            raise RiskUnreachable(
                f"cascade_exit risk: the full ensemble covers none of the {n} images the thresholds are fitted on "
                "at 5 % selective risk (its most confident predictions are wrong more than 5 % of the time), so "
                "there is no coverage to keep; use cascade_exit accuracy (the top-1 rule), or a better-trained model"
            )
    return full, full - int(tolerance * n + 1e-9)


def fit_thresholds(
    path_logits_in_order: torch.Tensor,
    labels: torch.Tensor,
    step_costs,
    tolerance: float,
    temperature=None,
    exit_rule: str = "accuracy",
) -> list[float]:
    """Thresholds that minimise the mean cost per image under ``exit_rule`` (module docstring).

    Coordinate descent from all ``NEVER`` (which meets the constraint): each sweep sets every
    threshold in turn to its exact best value given the others, over every distinct confidence of
    the images reaching that step; a change is kept only if it strictly lowers the cost (or keeps
    it and gains correct, or covered, images), so it terminates and never costs more than the full
    ensemble. Deterministic; exact for K = 2.

    Args:
        path_logits_in_order: (K, N, C) logits of the paths in running order.
        labels: (N,) true classes.
        step_costs: K costs, ``step_costs[j]`` of running the first j + 1 paths.
        tolerance: allowed drop of top-1 (accuracy) or of the coverage at 5 % risk (risk), as a
            fraction (0.005 = half a point).
        temperature: divides the logits for the stopping confidence only.
        exit_rule: ``accuracy`` or ``risk``.

    Raises:
        RiskUnreachable: the risk rule where the full ensemble covers nothing at 5 % risk.
    """
    _check(path_logits_in_order, labels)
    _check_exit_rule(exit_rule)
    if not tolerance >= 0:
        raise NeasError(f"tolerance must be >= 0, got {tolerance!r}")
    k, n = path_logits_in_order.shape[:2]
    costs = _costs(step_costs, k)
    confidence, predicted = _steps(path_logits_in_order, temperature)
    correct = predicted == labels  # (K, N)
    full, required = _requirement(confidence, correct, tolerance, exit_rule)
    coordinate = _coordinate if exit_rule == "accuracy" else _coordinate_risk
    thresholds = [NEVER] * (k - 1)
    best = (float(costs[-1]) * n, full)
    for _ in range(_MAX_SWEEPS):
        changed = False
        for j in range(k - 1):
            cost, score, value = coordinate(confidence, correct, costs, thresholds, j, required)
            eps = 1e-9 * max(abs(best[0]), 1.0)  # the same cascade summed in another order
            if cost < best[0] - eps or (cost <= best[0] + eps and score > best[1]):
                thresholds[j], best, changed = value, (cost, score), True
        if not changed or k == 2:  # one threshold: a second sweep would search the same step again
            break
    return thresholds


def cascade_summary(
    path_logits_in_order: torch.Tensor,
    labels: torch.Tensor,
    thresholds,
    step_costs,
    temperature=None,
    per_image: bool = False,
) -> dict:
    """``top1``, ``mean_cost`` per image, ``stop_fraction`` (K floats: images stopping at step j) and
    ``coverage_at_5_risk`` (of the exit confidences, module docstring); with ``per_image``, also each
    image's ``exit_confidence`` and ``correct`` (N,) tensors."""
    _check(path_logits_in_order, labels)
    k = path_logits_in_order.shape[0]
    costs = _costs(step_costs, k)
    logits, stops, exit_confidence = _predict(path_logits_in_order, thresholds, temperature)
    correct = logits.argmax(-1) == labels
    out = {
        "top1": float(correct.double().mean()),
        "mean_cost": float(costs[stops - 1].mean()),
        "stop_fraction": [float(f) for f in torch.bincount(stops - 1, minlength=k).double() / len(stops)],
        "coverage_at_5_risk": accepted_at_risk(exit_confidence, correct) / len(labels),
    }
    if per_image:
        out |= {"exit_confidence": exit_confidence, "correct": correct}
    return out


def cascade_curve(
    path_logits_in_order: torch.Tensor, labels: torch.Tensor, step_costs, points: int = 21, temperature=None
) -> list[dict]:
    """Top-1 and mean cost with one threshold shared by all steps, at ``points`` thresholds evenly
    spaced over [0, 1]: ``[{"threshold", "top1", "mean_cost"}, ...]``."""
    if points < 2:
        raise NeasError(f"points must be >= 2, got {points}")
    k = path_logits_in_order.shape[0]
    curve = []
    for t in torch.linspace(0, 1, points, dtype=torch.float64).tolist():
        summary = cascade_summary(path_logits_in_order, labels, [t] * (k - 1), step_costs, temperature)
        curve.append({"threshold": t, "top1": summary["top1"], "mean_cost": summary["mean_cost"]})
    return curve


def cascade_orders(k: int) -> list[tuple[int, ...]]:
    """The orders of ``k`` paths a fit tries: all of them for K <= :data:`EXHAUSTIVE_ORDERS`; above,
    the K orders that start with each path, the others following in index order."""
    if k <= EXHAUSTIVE_ORDERS:
        return list(itertools.permutations(range(k)))
    return [(first, *(j for j in range(k) if j != first)) for first in range(k)]


def _fit_order(
    path_logits: torch.Tensor,
    labels: torch.Tensor,
    step_costs: Callable[[tuple], Sequence[float]],
    tolerance: float,
    orders: list[tuple[int, ...]],
    exit_rule: str = "accuracy",
) -> tuple[tuple[int, ...], list[float]]:
    """The order and thresholds with the lowest mean cost on these images (then the higher top-1, or
    coverage at 5 % risk under the risk rule, then the first order listed)."""
    best = None
    score = "top1" if exit_rule == "accuracy" else "coverage_at_5_risk"
    for order in orders:
        in_order, costs = path_logits[list(order)], step_costs(order)
        thresholds = fit_thresholds(in_order, labels, costs, tolerance, exit_rule=exit_rule)
        summary = cascade_summary(in_order, labels, thresholds, costs)
        key = (summary["mean_cost"], -summary[score])
        if best is None or key < best[0]:
            best = (key, order, thresholds)
    return best[1], best[2]


def _fit_or_keep(path_logits, labels, step_costs, tolerance, orders, exit_rule) -> tuple:
    """:func:`_fit_order`; under the risk rule, on images the full ensemble covers nothing of at 5 % risk,
    the full ensemble (the first order, never stopping early) and False."""
    try:
        return *_fit_order(path_logits, labels, step_costs, tolerance, orders, exit_rule), True
    except RiskUnreachable:
        return orders[0], [NEVER] * (path_logits.shape[0] - 1), False


def cross_fit(
    path_logits: torch.Tensor,
    labels: torch.Tensor,
    step_costs: Callable[[tuple], Sequence[float]],
    tolerance: float,
    folds: int = 2,
    exit_rule: str = "accuracy",
) -> dict:
    """The cascade of an ensemble priced without scoring thresholds on their own images (module docstring).

    Args:
        path_logits: (K, N, C) logits of the paths in index order (K >= 2).
        labels: (N,) true classes; N >= ``folds``.
        step_costs: the K step costs (e.g. MACs) of an order: ``step_costs(order)[j]`` runs its first
            j + 1 paths, a shared trunk once (:meth:`neas.cost.CostTable.step_costs`).
        tolerance: allowed drop below the full ensemble (top-1, or coverage at 5 % risk), a fraction.
        folds: F >= 2.
        exit_rule: ``accuracy`` or ``risk`` (:func:`fit_thresholds`).

    Returns:
        ``mean_cost``, ``top1`` and ``coverage_at_5_risk``: the cross-fitted cascade's mean cost per image,
        top-1 and coverage at 5 % risk over all N images (each image's exit from the cascade fitted on the
        other folds); ``order`` and ``thresholds``: the cascade fitted on all of them; ``folds``;
        ``full_coverage_at_5_risk``: the full ensemble's on all N images; ``kept_full``: the folds (and
        the fit on all images, counted as one more) on whose fitting images the risk rule had nothing to
        keep, so the full ensemble was kept (always 0 under the accuracy rule).
    """
    _check(path_logits, labels)
    _check_exit_rule(exit_rule)
    k, n = path_logits.shape[:2]
    if k < 2 or folds < 2 or n < folds:
        raise ValueError(f"a cross-fitted cascade needs K >= 2 paths and N >= F >= 2 images, got {k}, {n}, {folds}")
    orders = cascade_orders(k)
    fold_of = torch.arange(n) % folds
    cost, right, kept_full = 0.0, 0.0, 0
    confidence, correct = [], []
    for f in range(folds):
        fit, scored = fold_of != f, fold_of == f
        order, thresholds, fitted = _fit_or_keep(
            path_logits[:, fit], labels[fit], step_costs, tolerance, orders, exit_rule
        )
        summary = cascade_summary(
            path_logits[list(order)][:, scored], labels[scored], thresholds, step_costs(order), per_image=True
        )
        m = int(scored.sum())
        cost, right, kept_full = cost + summary["mean_cost"] * m, right + summary["top1"] * m, kept_full + (not fitted)
        confidence.append(summary["exit_confidence"])
        correct.append(summary["correct"])
    order, thresholds, fitted = _fit_or_keep(path_logits, labels, step_costs, tolerance, orders, exit_rule)
    full = cascade_summary(path_logits, labels, [NEVER] * (k - 1), step_costs(orders[0]))
    return {
        "order": list(order),
        "thresholds": thresholds,
        "mean_cost": cost / n,
        "top1": right / n,
        "coverage_at_5_risk": accepted_at_risk(torch.cat(confidence), torch.cat(correct)) / n,
        "full_coverage_at_5_risk": full["coverage_at_5_risk"],
        "kept_full": kept_full + (not fitted),
        "folds": folds,
    }
