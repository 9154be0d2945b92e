"""The layout walker: the pieces an ensemble runs, in order, and every piece of a space."""

import random

import pytest

from neas.space import (
    FIRST,
    HEAD,
    LAYER,
    SKIP,
    STEM,
    EnsembleArch,
    Piece,
    SearchSpace,
    arch_pieces,
    parse_op,
    path_pieces,
    space_pieces,
    trunk_pieces,
)

from ..conftest import PRESETS


@pytest.fixture
def arch(tiny):
    """split 2 of the 4 layers; path 1 skips L4 (and L2 is skip, shared)."""
    k3e3, k5e3, skip = parse_op("k3e3"), parse_op("k5e3"), SKIP
    arch = EnsembleArch(2, ((k3e3, skip, k3e3, k5e3), (k3e3, skip, k5e3, skip)))
    return arch.validate(tiny)


def test_an_ensemble_runs_stem_l0_shared_layers_then_each_path_and_its_head(arch):
    assert [str(p) for p in arch_pieces(arch)] == [
        "stem",
        "L0",
        "L1:k3e3",
        "L3:k3e3@path0",
        "L4:k5e3@path0",
        "head@path0",
        "L3:k5e3@path1",
        "head@path1",
    ]


def test_skip_layers_are_pieces_only_when_asked_for(arch):
    with_skips = arch_pieces(arch, skips=True)
    assert [p for p in with_skips if not p.runs] == [Piece(LAYER, None, 2, SKIP), Piece(LAYER, 1, 4, SKIP)]
    assert tuple(p for p in with_skips if p.runs) == arch_pieces(arch)


@pytest.mark.parametrize("skips", [False, True])
def test_trunk_and_paths_split_the_walk(arch, skips):
    walked = trunk_pieces(arch, skips) + path_pieces(arch, 0, skips) + path_pieces(arch, 1, skips)
    assert walked == arch_pieces(arch, skips)
    assert trunk_pieces(arch)[:2] == (Piece(STEM), Piece(FIRST))
    assert [p.kind for p in path_pieces(arch, 1)] == [LAYER, HEAD]


def test_a_layers_op_names_the_same_weights_shared_or_private_and_each_path_has_its_own_head():
    op = parse_op("k3e3")
    assert Piece(LAYER, None, 3, op).weights == Piece(LAYER, 1, 3, op).weights
    assert Piece(LAYER, 0, 3, op).weights != Piece(LAYER, 0, 4, op).weights
    assert Piece(HEAD, 0).weights != Piece(HEAD, 1).weights


@pytest.mark.parametrize("name", PRESETS)
def test_every_piece_of_an_ensemble_is_a_piece_of_its_space(name):
    space = SearchSpace.preset(name)
    pieces = space_pieces(space)
    assert len(pieces) == 2 + sum(len(spec.ops) - (SKIP in spec.ops) for spec in space.layers) + space.num_paths
    assert len(space_pieces(space, skips=True)) == 2 + sum(len(spec.ops) for spec in space.layers) + space.num_paths
    held = {p.weights for p in pieces}
    rng = random.Random(0)
    for _ in range(20):
        assert {p.weights for p in arch_pieces(EnsembleArch.sample(space, rng))} <= held
