"""Confidence-gated early exit over an ensemble's paths (as in ENCAS).

Step j (1..K) predicts with the sub-ensemble of the first j paths: the mean of their logits. An
image stops at the first step j < K whose sub-ensemble's max softmax probability (of the logits
divided by the temperature, when one is given) is >= ``thresholds[j - 1]``; every other image runs
all K paths. A threshold above 1 (``NEVER``) never stops; a threshold of 0 always stops.

``step_costs[j]`` is the cost (e.g. MACs) of running the first j + 1 paths; it is given, not summed,
because paths may share a trunk. :func:`fit_thresholds` minimises the mean cost per image subject
to top-1 >= the full ensemble's top-1 - ``tolerance``, by coordinate descent that starts from
"never stop early" and searches each threshold exactly over every distinct confidence (for K = 2 one
pass is the exact optimum). A fitted threshold sits midway between the lowest confidence it stops
and the next lower one, never on an image's own confidence.

:func:`cross_fit` prices a cascade honestly on the images it is fitted on (the search's held-out
scoring images): the images are dealt into folds by position (image i to fold i mod F); for each
fold, the order of the paths and the thresholds are fitted on the other folds and the cascade is
scored on this one, so no threshold is ever scored on an image it was fitted on. The order is
part of the fit: every order for K <= 4 (24 at most), above that the K orders that start with each
path, the others in index order. The reported order and thresholds are then fitted on all images.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import torch

from neas.errors import NeasError

__all__ = [
    "EXHAUSTIVE_ORDERS",
    "NEVER",
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
        in 1..K.
    """
    _check(path_logits_in_order)
    confidence, _ = _steps(path_logits_in_order, temperature)
    stops = _stops(confidence, thresholds)
    logits = torch.empty_like(path_logits_in_order[0])
    for j in stops.unique().tolist():
        chosen = stops == j
        logits[chosen] = path_logits_in_order[:j, chosen].mean(0)
    return logits, stops


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
    best = (base_cost, base_correct, NEVER) if base_correct >= required else (float("inf"), -1, NEVER)
    total_cost, total_correct = base_cost + gain_cost, base_correct + gain_correct
    feasible = total_correct >= required
    if not bool(feasible.any()):
        return best
    # lower cost, then more correct; ties keep the higher threshold (values run high to low)
    cheapest = feasible & (total_cost == total_cost[feasible].min())
    i = int(torch.where(cheapest, total_correct, -1).argmax())  # argmax returns the first maximum
    if (float(total_cost[i]), -int(total_correct[i])) < (best[0], -best[1]):
        best = (float(total_cost[i]), int(total_correct[i]), _between(values, i))
    return best


def _between(values: torch.Tensor, i: int) -> float:
    """A threshold that stops exactly the images with confidence >= ``values[i]`` (distinct, high
    to low), placed midway to the next lower confidence (to 0 below the lowest): a confidence
    recomputed by another kernel, CPU or runtime (ONNX) then falls on the same side of it, where a
    threshold on an image's own confidence flips that image's stop on a last-bit difference."""
    high = float(values[i])
    low = float(values[i + 1]) if i + 1 < len(values) else 0.0
    mid = (high + low) / 2
    return mid if low < mid <= high else high  # adjacent doubles have no midpoint between them


def _coordinate(confidence, correct, costs, thresholds: list, j: int, required: int) -> tuple:
    """The best threshold of step j + 1 (0-based j) with the others fixed."""
    # where every image ends if this step never fires; the ones past step j are those that reach it
    stops = _stops(confidence, [*thresholds[:j], NEVER, *thresholds[j + 1 :]])
    n = stops.shape[0]
    reach = stops > j  # images that were not stopped before this step
    idx = torch.arange(n)
    stop = (torch.full((n,), float(costs[j]), dtype=torch.float64), correct[j, idx].long())
    go = (costs[stops - 1], correct[stops - 1, idx].long())
    fixed = (float(costs[stops[~reach] - 1].sum()), int(correct[stops[~reach] - 1, idx[~reach]].sum()))
    sub = (stop[0][reach], stop[1][reach]), (go[0][reach], go[1][reach])
    return _best_threshold(confidence[j][reach], *sub, fixed, required)


def fit_thresholds(
    path_logits_in_order: torch.Tensor, labels: torch.Tensor, step_costs, tolerance: float, temperature=None
) -> list[float]:
    """Thresholds that minimise the mean cost per image with top-1 >= full top-1 - ``tolerance``.

    Coordinate descent from all ``NEVER`` (which meets the constraint): each sweep sets every
    threshold in turn to its exact best value given the others, over every distinct confidence of
    the images reaching that step; a change is kept only if it strictly lowers the cost (or keeps
    it and gains correct images), so it terminates and never costs more than the full ensemble.
    Deterministic; exact for K = 2.

    Args:
        path_logits_in_order: (K, N, C) logits of the paths in running order.
        labels: (N,) true classes.
        step_costs: K costs, ``step_costs[j]`` of running the first j + 1 paths.
        tolerance: allowed top-1 drop as a fraction (0.005 = half a point).
        temperature: divides the logits for the stopping confidence only.
    """
    _check(path_logits_in_order, labels)
    if not tolerance >= 0:
        raise NeasError(f"tolerance must be >= 0, got {tolerance!r}")
    k, n = path_logits_in_order.shape[:2]
    costs = _costs(step_costs, k)
    confidence, predicted = _steps(path_logits_in_order, temperature)
    correct = predicted == labels  # (K, N)
    required = int(correct[-1].sum()) - int(tolerance * n + 1e-9)  # integer form of the constraint
    thresholds = [NEVER] * (k - 1)
    best = (float(costs[-1]) * n, int(correct[-1].sum()))
    for _ in range(_MAX_SWEEPS):
        changed = False
        for j in range(k - 1):
            cost, right, value = _coordinate(confidence, correct, costs, thresholds, j, required)
            eps = 1e-9 * max(abs(best[0]), 1.0)  # the same cascade summed in another order
            if cost < best[0] - eps or (cost <= best[0] + eps and right > best[1]):
                thresholds[j], best, changed = value, (cost, right), True
        if not changed:
            break
    return thresholds


def cascade_summary(
    path_logits_in_order: torch.Tensor, labels: torch.Tensor, thresholds, step_costs, temperature=None
) -> dict:
    """``top1``, ``mean_cost`` per image and ``stop_fraction`` (K floats: images stopping at step j)."""
    _check(path_logits_in_order, labels)
    k = path_logits_in_order.shape[0]
    costs = _costs(step_costs, k)
    logits, stops = cascade_predict(path_logits_in_order, thresholds, temperature)
    return {
        "top1": float((logits.argmax(-1) == labels).double().mean()),
        "mean_cost": float(costs[stops - 1].mean()),
        "stop_fraction": [float(f) for f in torch.bincount(stops - 1, minlength=k).double() / len(stops)],
    }


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
) -> tuple[tuple[int, ...], list[float]]:
    """The order and thresholds with the lowest mean cost on these images (then the higher top-1,
    then the first order listed)."""
    best = None
    for order in orders:
        in_order, costs = path_logits[list(order)], step_costs(order)
        thresholds = fit_thresholds(in_order, labels, costs, tolerance)
        summary = cascade_summary(in_order, labels, thresholds, costs)
        key = (summary["mean_cost"], -summary["top1"])
        if best is None or key < best[0]:
            best = (key, order, thresholds)
    return best[1], best[2]


def cross_fit(
    path_logits: torch.Tensor,
    labels: torch.Tensor,
    step_costs: Callable[[tuple], Sequence[float]],
    tolerance: float,
    folds: int = 2,
) -> dict:
    """The cascade of an ensemble priced without scoring thresholds on their own images (module docstring).

    Args:
        path_logits: (K, N, C) logits of the paths in index order (K >= 2).
        labels: (N,) true classes; N >= ``folds``.
        step_costs: the K step costs (e.g. MACs) of an order: ``step_costs(order)[j]`` runs its first
            j + 1 paths, a shared trunk once (:meth:`neas.cost.CostTable.step_costs`).
        tolerance: allowed top-1 drop below the full ensemble, a fraction.
        folds: F >= 2.

    Returns:
        ``mean_cost`` and ``top1``: the cross-fitted cascade's mean cost per image and top-1 over all
        N images; ``order`` and ``thresholds``: the cascade fitted on all of them; ``folds``.
    """
    _check(path_logits, labels)
    k, n = path_logits.shape[:2]
    if k < 2 or folds < 2 or n < folds:
        raise ValueError(f"a cross-fitted cascade needs K >= 2 paths and N >= F >= 2 images, got {k}, {n}, {folds}")
    orders = cascade_orders(k)
    fold_of = torch.arange(n) % folds
    cost, right = 0.0, 0.0
    for f in range(folds):
        fit, scored = fold_of != f, fold_of == f
        order, thresholds = _fit_order(path_logits[:, fit], labels[fit], step_costs, tolerance, orders)
        summary = cascade_summary(path_logits[list(order)][:, scored], labels[scored], thresholds, step_costs(order))
        m = int(scored.sum())
        cost, right = cost + summary["mean_cost"] * m, right + summary["top1"] * m
    order, thresholds = _fit_order(path_logits, labels, step_costs, tolerance, orders)
    return {
        "order": list(order),
        "thresholds": thresholds,
        "mean_cost": cost / n,
        "top1": right / n,
        "folds": folds,
    }
