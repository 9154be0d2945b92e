import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from neas.cost import cost_table
from neas.errors import NeasError
from neas.search.constraints import Constraints
from neas.search.evolution import (
    EvolutionSettings,
    SearchProblem,
    crossover,
    evolve,
    mutate,
    random_search,
    repair,
    sample_within,
)
from neas.space import EnsembleArch, SearchSpace, ShrunkSpace

from ..conftest import random_shrunk

SPACE = SearchSpace.preset("tiny")
BIG = SearchSpace.preset("imagenet")


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), space=st.sampled_from([SPACE, BIG]), p_split=st.sampled_from([0.0, 0.5, 1.0]))
def test_mutation_children_are_valid_in_the_shrunk_space(seed, space, p_split):
    rng = random.Random(seed)
    shrunk = random_shrunk(space, seed)
    parent = EnsembleArch.sample(space, rng, shrunk)
    for _ in range(5):
        child = mutate(parent, shrunk, p_split, 0.3, rng)
        if child is not None:
            child.validate(space, shrunk)


@pytest.mark.parametrize("space", [SPACE, BIG], ids=["tiny", "imagenet"])
def test_mutation_and_crossover_make_a_child_on_most_draws(space):
    """The two validity tests above check a child only when there is one: this one fails if
    ``mutate`` or ``crossover`` gave up (returned None) on most draws (measured: never, in 40 draws)."""
    made = {"mutate": 0, "crossover": 0}
    for seed in range(40):
        rng = random.Random(seed)
        shrunk = random_shrunk(space, seed)
        a, b = EnsembleArch.sample(space, rng, shrunk), EnsembleArch.sample(space, rng, shrunk)
        made["mutate"] += mutate(a, shrunk, 0.5, 0.3, rng) is not None
        made["crossover"] += crossover(a, b, shrunk, rng) is not None
    assert min(made.values()) >= 30, made


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), space=st.sampled_from([SPACE, BIG]))
def test_every_evolved_member_is_in_the_space_and_the_budget(seed, space):
    rng = random.Random(seed)
    shrunk = random_shrunk(space, seed)
    table = cost_table(space, 10)
    costs = sorted(table.cost(EnsembleArch.sample(space, rng, shrunk)).macs for _ in range(30))
    budget = Constraints(max_macs=costs[len(costs) // 2])  # about half of the space is over budget
    ok = lambda a: budget.satisfied(table.cost(a).to_json())
    members = []
    settings_ = EvolutionSettings(
        population=8, parents=3, generations=4, mutations=4, crossovers=4, p_split=0.5, p_layer=0.5
    )
    problem = SearchProblem(
        ok, lambda archs: [rng.random() for _ in archs], lambda g, m, accs, origins: members.extend(zip(m, origins))
    )
    history = evolve(shrunk, settings_, problem, rng)
    assert len(members) == len(history) >= settings_.population
    assert {o for _, o in members} & {"mutation", "crossover"}
    for arch, _ in members:
        arch.validate(space, shrunk)
        assert table.cost(arch).macs <= budget.max_macs


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), space=st.sampled_from([SPACE, BIG]))
def test_crossover_children_are_valid(seed, space):
    rng = random.Random(seed)
    shrunk = random_shrunk(space, seed + 1)
    a, b = EnsembleArch.sample(space, rng, shrunk), EnsembleArch.sample(space, rng, shrunk)
    for _ in range(5):
        child = crossover(a, b, shrunk, rng)
        if child is not None:
            child.validate(space, shrunk)
            assert child.split in (a.split, b.split)
            for i in range(space.num_layers):
                column = tuple(p[i] for p in child.paths)
                from_a, from_b = tuple(p[i] for p in a.paths), tuple(p[i] for p in b.paths)
                if i < child.split:  # shared: one op of a parent's column at this layer
                    assert column[0] in from_a + from_b
                elif column not in (from_a, from_b):
                    # re-drawn only because the column taken was shared in its parent, around that op
                    shared_ops = [p.paths[0][i] for p in (a, b) if i < p.split]
                    assert any(op in column for op in shared_ops), (column, from_a, from_b)


def test_evolution_beats_random_search_at_equal_evaluations_over_seeds():
    """On a fitness with structure (a per-layer, per-op score summed over paths), evolution finds
    a better best than random search with as many evaluations, on most seeds and on average."""
    shrunk = ShrunkSpace.full(BIG)
    settings_ = EvolutionSettings(population=16, parents=4, generations=6, mutations=8, crossovers=8)
    wins, gaps = 0, []
    for seed in range(8):
        weights = random.Random(f"fitness:{seed}")
        w = {(i, op): weights.gauss(0, 1) for i in range(BIG.num_layers) for op in BIG.layers[i].ops}
        fitness = lambda archs: [sum(w[(i, p[i])] for p in a.paths for i in range(BIG.num_layers)) for a in archs]
        problem = SearchProblem(lambda a: True, fitness, lambda *args: None)
        evo = evolve(shrunk, settings_, problem, random.Random(seed))
        rand = random_search(shrunk, len(evo), settings_.population, problem, random.Random(seed))
        assert len(rand) == len(evo)
        gaps.append(max(evo.values()) - max(rand.values()))
        wins += gaps[-1] > 0
    assert wins >= 7, gaps
    assert sum(gaps) / len(gaps) > 0, gaps


def test_split_growth_takes_one_paths_ops():
    shrunk = ShrunkSpace.full(BIG)
    rng = random.Random(0)
    grew = 0
    for _ in range(200):
        parent = EnsembleArch.sample(BIG, rng, shrunk, split=12)
        child = mutate(parent, shrunk, 1.0, 0.0, rng)
        if child is None or child.split <= 12:
            continue
        grew += 1
        new_shared = [child.paths[0][i] for i in range(12, child.split)]
        assert any(new_shared == [p[i] for i in range(12, child.split)] for p in parent.paths)
        assert child.paths[0][:12] == parent.paths[0][:12]
    assert grew > 20


def test_split_shrink_keeps_the_shared_op_in_the_new_combination():
    shrunk = ShrunkSpace.full(BIG)
    rng = random.Random(1)
    shrank = 0
    for _ in range(200):
        parent = EnsembleArch.sample(BIG, rng, shrunk, split=18)
        child = mutate(parent, shrunk, 1.0, 0.0, rng)
        if child is None or child.split >= 18:
            continue
        shrank += 1
        for i in range(child.split, 18):
            column = [p[i] for p in child.paths]
            assert parent.paths[0][i] in column
            assert len(set(column)) == 2
        assert child.paths[0][18:] == parent.paths[0][18:]
        assert child.paths[1][18:] == parent.paths[1][18:]
    assert shrank > 20


def test_layer_mutation_with_p_one_redraws_within_the_space():
    shrunk = random_shrunk(SPACE, 3)
    rng = random.Random(2)
    parent = EnsembleArch.sample(SPACE, rng, shrunk)
    children = {mutate(parent, shrunk, 0.0, 1.0, rng) for _ in range(50)}
    assert len(children) > 3
    assert all(c.split == parent.split for c in children)


def test_repair_drops_children_outside_the_shrunk_space():
    from neas.space import parse_op

    k3e3, k3e6, k5e3 = parse_op("k3e3"), parse_op("k3e6"), parse_op("k5e3")
    only = ShrunkSpace.full(SPACE).without({2: [c for c in SPACE.combinations(2) if c != (k3e3, k3e6)]})
    rng = random.Random(0)
    arch = EnsembleArch.sample(SPACE, rng, only, split=2)
    columns = [tuple(p[i] for p in arch.paths) for i in range(4)]
    columns[1] = (k5e3, k5e3)  # L2 becomes private: no surviving combination contains k5e3
    assert repair(columns, 1, only, rng) is None
    columns[1] = (k3e3, k3e3)  # ... but one contains k3e3: re-drawn to k3e3/k3e6
    child = repair(columns, 1, only, rng)
    assert child is not None
    assert set(child.combination(2)) == {k3e3, k3e6}


def test_sample_within_respects_the_budget():
    table = cost_table(SPACE, 10)
    budget = Constraints(max_macs=600_000)
    rng = random.Random(0)
    for _ in range(20):
        arch = sample_within(ShrunkSpace.full(SPACE), rng, lambda a: budget.satisfied(table.cost(a).to_json()))
        assert table.cost(arch).macs <= 600_000


def test_bad_settings():
    with pytest.raises(NeasError, match="population \\(5\\) must not be smaller than the number of parents \\(10\\)"):
        EvolutionSettings(population=5, parents=10)
    with pytest.raises(NeasError, match="contradictory constraints: min_macs=5 is larger than max_macs=3"):
        Constraints(min_macs=5, max_macs=3)
