import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from neas.errors import NeasError
from neas.space import EnsembleArch, SearchSpace, ShrunkSpace, parse_op
from neas.space.presets import ARCH_PRESETS

from ..conftest import PRESETS, random_shrunk

SPACES = {name: SearchSpace.preset(name) for name in PRESETS}


def _check_invariants(arch, space, shrunk=None):
    assert arch.num_paths == space.num_paths
    assert arch.num_layers == space.num_layers
    assert space.split[0] <= arch.split <= space.split[1]
    for spec in space.layers:
        column = [p[spec.index - 1] for p in arch.paths]
        if spec.index <= arch.split:
            assert len(set(column)) == 1
        else:
            assert len(set(column)) == len(column)
        assert all(op in spec.ops for op in column)
        if spec.first_of_stage:
            assert not any(op.is_skip for op in column)
        if shrunk is not None and spec.index > arch.split:
            assert shrunk.canonical(column) in shrunk.layer_combinations(spec.index)


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(PRESETS), seed=st.integers(0, 2**31 - 1))
def test_sampled_archs_are_valid_and_round_trip(name, seed):
    space = SPACES[name]
    arch = EnsembleArch.sample(space, random.Random(seed))
    _check_invariants(arch, space)
    assert EnsembleArch.from_json(json.dumps(arch.to_json())) == arch
    if name != "tiny":  # tiny uses ops without official ids
        assert EnsembleArch.from_official(arch.to_official()) == arch


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), drop_seed=st.integers(0, 2**31 - 1))
def test_sampling_respects_a_shrunk_space(seed, drop_seed):
    space = SPACES["tiny"]
    shrunk = random_shrunk(space, drop_seed)
    arch = EnsembleArch.sample(space, random.Random(seed), shrunk=shrunk)
    _check_invariants(arch, space, shrunk)
    arch.validate(space, shrunk)
    for spec in space.layers[: arch.split]:
        assert arch.paths[0][spec.index - 1] in shrunk.shared_ops(spec.index)


def test_sampling_is_uniform_over_split_points(tiny):
    gen = random.Random(0)
    counts = {s: 0 for s in tiny.split_points}
    for _ in range(2000):
        counts[EnsembleArch.sample(tiny, gen).split] += 1
    assert all(abs(c / 2000 - 1 / len(counts)) < 0.05 for c in counts.values())


def test_same_seed_same_arch(tiny):
    assert EnsembleArch.sample(tiny, 7) == EnsembleArch.sample(tiny, 7)
    g1, g2 = random.Random(3), random.Random(3)
    assert [EnsembleArch.sample(tiny, g1) for _ in range(5)] == [EnsembleArch.sample(tiny, g2) for _ in range(5)]


@pytest.mark.parametrize("name", sorted(ARCH_PRESETS))
def test_released_models(name, imagenet):
    arch = EnsembleArch.preset(name).validate(imagenet)
    assert arch.to_official() == ARCH_PRESETS[name]
    assert arch.split == (20 if name == "neas-s" else 16)


def test_neas_m_layers():
    arch = EnsembleArch.preset("neas-m")
    assert [str(o) for o in arch.shared[:4]] == ["k5e6", "k5e4", "k3e4", "k5e4"]
    assert [str(o) for o in arch.private(0)] == ["k7e6", "k3e4", "k7e6", "k7e4"]
    assert [str(o) for o in arch.private(1)] == ["k5e6", "k7e6", "k5e4", "k7e6"]


def _paths(*cols):
    return [list(c) for c in zip(*cols)]


def test_bad_archs(imagenet, tiny):
    with pytest.raises(NeasError, match="layer L2 is shared .* paths differ"):
        EnsembleArch(2, _paths(["k3e3", "k3e3"], ["k3e3", "k5e3"], ["k3e3", "k5e3"], ["k3e3", "k5e3"]))
    with pytest.raises(NeasError, match="layer L3 is private .* repeats an op"):
        EnsembleArch(2, _paths(["k3e3", "k3e3"], ["k3e3", "k3e3"], ["k5e3", "k5e3"], ["k3e3", "k5e3"]))
    arch = EnsembleArch(1, _paths(["k3e3", "k3e3"], ["skip", "k5e3"], ["k5e3", "k3e3"], ["k3e3", "k5e3"]))
    arch.validate(tiny)
    with pytest.raises(NeasError, match="layer L3 \\(path 0\\): skip is not allowed on the first layer of a stage"):
        EnsembleArch(1, _paths(["k3e3", "k3e3"], ["skip", "k5e3"], ["skip", "k3e3"], ["k3e3", "k5e3"])).validate(tiny)
    with pytest.raises(NeasError, match="split 0 is outside the split range \\[1, 4\\]"):
        EnsembleArch(0, _paths(["k3e3", "k5e3"], ["skip", "k5e3"], ["k5e3", "k3e3"], ["k3e3", "k5e3"])).validate(tiny)
    with pytest.raises(NeasError, match="4 layers per path but space 'imagenet' has 20"):
        arch.validate(imagenet)
    with pytest.raises(NeasError, match="op k7e4 is not a candidate"):
        EnsembleArch(1, _paths(["k3e3", "k3e3"], ["k7e4", "k5e3"], ["k5e3", "k3e3"], ["k3e3", "k5e3"])).validate(tiny)
    with pytest.raises(NeasError, match="path 1 has 3 layers but path 0 has 4"):
        EnsembleArch(1, [["k3e3"] * 4, ["k3e3"] * 3])
    with pytest.raises(NeasError, match="unknown op"):
        EnsembleArch(1, [["k3e3", "conv"], ["k3e3", "k5e3"]])


def test_shrunk_space_rejects_removed_combinations(tiny):
    arch = EnsembleArch(1, _paths(["k3e3", "k3e3"], ["skip", "k5e3"], ["k5e3", "k3e3"], ["k3e3", "k5e3"]))
    shrunk = ShrunkSpace.full(tiny).without({2: [(parse_op("k5e3"), parse_op("skip"))]})
    with pytest.raises(NeasError, match="layer L2 uses the combination skip/k5e3, which the shrunk space removed"):
        arch.validate(tiny, shrunk)
    # a shared layer may only use ops that survive in some combination of that layer
    only = ShrunkSpace.full(tiny).without({1: [c for c in tiny.combinations(1) if parse_op("k3e3") in c]})
    with pytest.raises(NeasError, match="shared layer L1 uses k3e3"):
        arch.validate(tiny, only)
    assert parse_op("k3e3") not in only.shared_ops(1)
    assert ShrunkSpace.from_json(tiny, only.to_json()) == only


def test_official_list_errors():
    with pytest.raises(NeasError, match="does not fit split=16, K=2"):
        EnsembleArch.from_official(ARCH_PRESETS["neas-m"][:-1])
    with pytest.raises(NeasError, match="list of integers"):
        EnsembleArch.from_official([16, 2, "x"])
    with pytest.raises(NeasError, match="unknown official op id 7"):
        EnsembleArch.from_official([1, 2, 0, 7, 0, 0, 0, 0])


def test_json_errors(tmp_path):
    with pytest.raises(NeasError, match="malformed arch JSON"):
        EnsembleArch.from_json("{split: 3")
    with pytest.raises(NeasError, match="keys 'split' and 'paths'"):
        EnsembleArch.from_json({"split": 3})
    path = tmp_path / "a.json"
    EnsembleArch.preset("neas-s").save(path, macs=1)
    assert EnsembleArch.load(path) == EnsembleArch.preset("neas-s")
    with pytest.raises(NeasError, match="no such arch file"):
        EnsembleArch.load(tmp_path / "missing.json")
