"""The search priced at the cost users pay: a cascade's cross-fitted mean MACs (issue 37)."""

import json

import pytest

from neas.cli import main
from neas.cost import cost_table
from neas.recipes.search import search
from neas.space import EnsembleArch
from neas.supernet.io import load_supernet

from ..helpers import Killed
from .test_search_recipe import cfg

MEAN_BUDGET = 600_000  # below the static MACs of the unconstrained winner (~1.1M on the tiny space)


def _search(supernet, out, **kw):
    kw = {"max_macs": None, "max_mean_macs": MEAN_BUDGET, "generations": 2, "population": 8, **kw}
    return search(cfg(supernet, out, **kw))


@pytest.fixture(scope="module")
def priced(trained_supernet, tmp_path_factory):
    return _search(trained_supernet, tmp_path_factory.mktemp("c") / "mean")


def test_the_winner_meets_the_mean_macs_budget_and_records_its_fitted_cascade(priced, trained_supernet):
    arch = json.loads((priced / "arch.json").read_text())
    assert arch["mean_macs"] <= MEAN_BUDGET < arch["macs"]  # paid per image, not statically
    cascade = arch["cascade"]
    assert sorted(cascade["order"]) == [0, 1] and len(cascade["thresholds"]) == 1
    assert cascade["folds"] == 2 and cascade["tolerance"] == 0.5
    assert arch["constraints"] == {"max_mean_macs": MEAN_BUDGET, "cascade_tolerance": 0.5}
    # the static MACs are the whole ensemble's; the mean lies between the cheapest first step and them
    supernet, _ = load_supernet(trained_supernet)
    table = cost_table(supernet.space, supernet.num_classes)
    ens = EnsembleArch.from_json(arch)
    assert arch["macs"] == table.cost(ens).macs
    assert table.first_step_floor(ens) <= arch["mean_macs"] <= arch["macs"]


def test_candidates_over_the_mean_budget_are_recorded_but_never_chosen(priced):
    members = [m for g in sorted(priced.glob("generation_*.json")) for m in json.loads(g.read_text())["members"]]
    assert all("mean_macs" in m and "cascade" in m for m in members)
    feasible = [m for m in members if m["mean_macs"] <= MEAN_BUDGET]
    arch = json.loads((priced / "arch.json").read_text())
    assert feasible and arch["supernet_acc"] == max(m["ensemble_acc"] for m in feasible)


def test_a_priced_search_resumes_to_the_same_result(priced, trained_supernet, tmp_path, kill_after):
    import neas.rundir as rundir

    restore = kill_after(
        rundir,
        "write_json",
        when=lambda path, value, **kw: str(path).endswith("state.json") and value["generation"] == 0,
    )
    out = tmp_path / "mean"
    with pytest.raises(Killed):
        _search(trained_supernet, out)
    restore()
    _search(trained_supernet, out, resume=True)
    for name in ("arch.json", "generation_00.json", "generation_01.json"):
        assert json.loads((out / name).read_text()) == json.loads((priced / name).read_text()), name


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--max-mean-macs", "10K"], "max_mean_macs=10000: below the cheapest path of the space alone"),
        (["--max-mean-macs", "nan"], "max_mean_macs: amount 'nan' must be a finite number >= 0"),
        (["--max-mean-macs=-1M"], "max_mean_macs"),
        (["--cascade-tolerance=-1"], "cascade_tolerance"),
    ],
)
def test_a_mean_macs_budget_no_cascade_can_meet_is_refused_before_the_search(
    trained_supernet, tmp_path, capsys, extra, message
):
    code = main(["search", "--supernet", str(trained_supernet), "--out", str(tmp_path / "x"), *extra])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("neas: error: ") and err.count("\n") == 1, err
    assert message in err
    assert not (tmp_path / "x").exists()


def test_mean_macs_is_a_cost_for_the_pareto_front(trained_supernet, tmp_path):
    run = search(cfg(trained_supernet, tmp_path / "front", max_macs=None, pareto="mean_macs", generations=1))
    front = json.loads((run / "pareto.json").read_text())["front"]
    assert json.loads((run / "pareto.json").read_text())["metric"] == "mean_macs"
    costs = [m["mean_macs"] for m in front]
    accs = [m["ensemble_acc"] for m in front]
    assert costs == sorted(costs) and accs == sorted(accs)  # cheaper is worse along a front
    assert all(m["mean_macs"] <= m["macs"] for m in front)


def test_a_candidate_over_the_mean_macs_bound_ranks_below_every_feasible_one_as_a_parent():
    import dataclasses
    import random

    from neas.search.fitness import Evaluation
    from neas.search.session import SearchSession
    from neas.search.settings import Constraints
    from neas.space import SearchSpace, ShrunkSpace

    space = SearchSpace.preset("tiny")
    session = SearchSession(
        constraints=Constraints(max_mean_macs=MEAN_BUDGET), objective="top1", strategy="evolution", pareto=None,
        space=space, num_classes=10, shrunk=ShrunkSpace.full(space), table=cost_table(space, 10), latency=None,
        evaluator=None,
    )  # fmt: skip
    rng = random.Random(0)
    cheap, dear = EnsembleArch.sample(space, rng), EnsembleArch.sample(space, rng)
    feasible = session._fitness(cheap, Evaluation(0.30, (0.3, 0.3), mean_macs=MEAN_BUDGET - 1))
    over = session._fitness(dear, Evaluation(0.90, (0.9, 0.9), mean_macs=MEAN_BUDGET + 1))
    assert over < feasible  # better top-1, but over the bound: never preferred as a parent
    assert session.feasible(cheap) and not session.feasible(dear)
    # a candidate whose cheapest path alone costs more than the bound is never scored
    floor = session.table.first_step_floor(dear)
    tight = dataclasses.replace(session, constraints=Constraints(max_mean_macs=floor - 1), costs_of={})
    assert not tight.ok(dear)
    assert dataclasses.replace(tight, constraints=Constraints(max_mean_macs=floor), costs_of={}).ok(dear)
