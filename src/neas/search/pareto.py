"""One search, every budget: the Pareto front of held-out quality against a cost, evolved as
NSGA-II does (Deb et al., 2002) — non-dominated sorting, then crowding distance inside the last
front that fits — with pymoo's implementations of both.

Objectives are minimised: ``(-fitness, cost)``, where fitness is what the search maximises
(top-1, or minus the NLL) and cost one of the cost model's metrics or the latency.
"""

from __future__ import annotations

import numpy as np

from neas.errors import NeasError
from neas.search.settings import COST_METRICS

__all__ = ["PARETO_METRICS", "crowding", "front_indices", "non_dominated_fronts", "nsga2_select", "pick_for_budgets"]

PARETO_METRICS = COST_METRICS


def non_dominated_fronts(objectives: np.ndarray) -> list[np.ndarray]:
    """Indices of each non-dominated front, best first (all objectives minimised)."""
    from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

    objectives = np.asarray(objectives, float)
    if len(objectives) == 0:
        return []
    return [np.asarray(f) for f in NonDominatedSorting().do(objectives)]


def crowding(objectives: np.ndarray) -> np.ndarray:
    """NSGA-II's crowding distance of each point of one front (boundary points: infinite), averaged
    over the objectives as pymoo does (Deb et al. sum them: the same order)."""
    from pymoo.operators.survival.rank_and_crowding.metrics import get_crowding_function

    objectives = np.asarray(objectives, float)
    if len(objectives) <= 2:
        return np.full(len(objectives), np.inf)
    return np.asarray(get_crowding_function("cd").do(objectives), float)


def nsga2_select(objectives: np.ndarray, k: int) -> list[int]:
    """The ``k`` survivors of NSGA-II: whole fronts in order, the last one cut by crowding
    distance (most isolated first; ties by index, so the choice is deterministic)."""
    chosen: list[int] = []
    for front in non_dominated_fronts(objectives):
        if len(chosen) + len(front) <= k:
            chosen += sorted(front.tolist())
            continue
        distance = crowding(np.asarray(objectives, float)[front])
        order = sorted(range(len(front)), key=lambda i: (-distance[i], front[i]))
        chosen += [int(front[i]) for i in order[: k - len(chosen)]]
        break
    return chosen


def front_indices(objectives: np.ndarray) -> list[int]:
    """The first front, by increasing value of the last objective (the cost)."""
    fronts = non_dominated_fronts(objectives)
    if not fronts:
        return []
    objectives = np.asarray(objectives, float)
    return sorted(fronts[0].tolist(), key=lambda i: (objectives[i, -1], objectives[i, 0]))


def pick_for_budgets(front: list[dict], budgets: list[float], metric: str, key: str = "fitness") -> dict[float, dict]:
    """For each budget, the member of ``front`` with the best ``key`` among those whose ``metric``
    is within it; an error names a budget below the cheapest member."""
    picks = {}
    for budget in budgets:
        within = [m for m in front if m[metric] <= budget]
        if not within:
            cheapest = min(front, key=lambda m: m[metric])
            raise NeasError(
                f"budgets: no ensemble of the front has {metric} <= {budget:g}; the cheapest has {cheapest[metric]:g}"
            )
        picks[budget] = max(within, key=lambda m: (m[key], -m[metric]))
    return picks
