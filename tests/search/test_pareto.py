"""One search, every budget (issue 18): NSGA-II selection, the front a search writes, and the
members picked for each budget."""

import json

import numpy as np
import pytest

from neas.config import from_dict
from neas.errors import NeasError
from neas.recipes.search import SearchConfig, search
from neas.search.pareto import crowding, front_indices, non_dominated_fronts, nsga2_select, pick_for_budgets


def test_non_dominated_fronts_match_a_hand_computed_sort():
    # (-accuracy, cost): a=(-0.9, 5) b=(-0.8, 3) c=(-0.6, 1) are the front; d=(-0.8, 4) is dominated by b;
    # e=(-0.5, 4) by b and c... and d; f=(-0.9, 6) by a
    points = np.array([[-0.9, 5], [-0.8, 3], [-0.6, 1], [-0.8, 4], [-0.5, 4], [-0.9, 6]])
    fronts = [sorted(f.tolist()) for f in non_dominated_fronts(points)]
    assert fronts == [[0, 1, 2], [3, 5], [4]]
    assert front_indices(points) == [2, 1, 0]  # by cost


def test_crowding_distance_by_hand():
    # one front of 4 points: boundaries infinite; inner ones: the mean over objectives (pymoo
    # averages where Deb et al. sum: the same order) of (next - previous) / (max - min)
    front = np.array([[-1.0, 4.0], [-0.8, 2.0], [-0.7, 1.5], [-0.2, 0.0]])
    got = crowding(front)
    assert np.isinf(got[0])
    assert np.isinf(got[3])
    assert got[1] == pytest.approx(((0.3 / 0.8) + (2.5 / 4.0)) / 2)  # neighbours 0 and 2
    assert got[2] == pytest.approx(((0.6 / 0.8) + (2.0 / 4.0)) / 2)  # neighbours 1 and 3


def test_nsga2_keeps_whole_fronts_then_the_most_isolated():
    points = np.array([[-1.0, 4.0], [-0.8, 2.0], [-0.7, 1.5], [-0.2, 0.0], [-0.1, 5.0], [-0.75, 3.0]])
    # front 0: 0, 1, 2, 3 (5 is dominated by 1, 4 by everything cheaper and better)
    assert sorted(nsga2_select(points, 4)) == [0, 1, 2, 3]
    assert sorted(nsga2_select(points, 3)) == [0, 2, 3]  # boundaries, then 2 (crowding 1.25 > 1.0)
    assert sorted(nsga2_select(points, 5)) == [0, 1, 2, 3, 5]


def test_budgets_pick_the_best_member_within_each():
    front = [{"macs": 100, "fitness": 0.5}, {"macs": 200, "fitness": 0.6}, {"macs": 300, "fitness": 0.7}]
    picks = pick_for_budgets(front, [150, 200, 1000], "macs")
    assert [picks[b]["macs"] for b in (150, 200, 1000)] == [100, 200, 300]
    with pytest.raises(NeasError, match="the cheapest has 100"):
        pick_for_budgets(front, [50], "macs")


def test_search_writes_a_front_of_mutually_non_dominated_members(trained_supernet, tmp_path):
    # NLL: a continuous objective (top-1 on 143 held-out images ties often, and ties shorten a front)
    cfg = from_dict(
        SearchConfig,
        dict(
            supernet=str(trained_supernet),
            out=str(tmp_path / "p"),
            pareto="macs",
            objective="nll",
            population=10,
            parents=6,
            generations=3,
            mutations=5,
            crossovers=5,
            bn_batches=1,
            batch_size=64,
            device="cpu",
            seed=1,
        ),
    )
    run = search(cfg)
    pareto = json.loads((run / "pareto.json").read_text())
    front = pareto["front"]
    assert pareto["metric"] == "macs"
    assert len(front) >= 2  # the cheapest ensemble has a far worse NLL than the best (a large margin)
    for a in front:
        for b in front:
            dominated = (
                b["fitness"] >= a["fitness"]
                and b["macs"] <= a["macs"]
                and (b["fitness"] > a["fitness"] or b["macs"] < a["macs"])
            )
            assert not dominated, (a, b)
    assert [m["macs"] for m in front] == sorted(m["macs"] for m in front)
    # anchored at the shrunk space's cheapest ensemble, whatever the floating-point details of the scores
    generations = [json.loads(g.read_text())["members"] for g in sorted(run.glob("generation_*.json"))]
    anchor = generations[0][0]
    assert anchor["origin"] == "anchor"
    assert anchor["macs"] == min(m["macs"] for members in generations for m in members)
    assert front[0]["macs"] == anchor["macs"]
    with pytest.raises(NeasError, match="pareto: unknown 'flops'"):
        from_dict(SearchConfig, {"pareto": "flops"})
