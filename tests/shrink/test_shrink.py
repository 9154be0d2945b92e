import itertools
import math
import random

import numpy as np
import pytest
import torch

from neas.shrink import (
    ProbeSample,
    ShrinkSettings,
    accuracy_scores,
    diversity_scores,
    layer_statistics,
    select_drops,
    shrink_round,
)
from neas.space import EnsembleArch, ShrunkSpace, parse_op

ops = [parse_op(o) for o in ("k3e3", "k3e6", "k5e3", "k5e6", "skip")]


def _arch(split, a, b):
    """tiny-space arch whose last private layer L4 uses ops a / b."""
    base = ["k3e3", "skip", "k5e3", None]
    p = [*base[:3], a]
    q = [*base[:3], b]
    if split < 3:
        q[2] = "k3e6"
    return EnsembleArch(split, [p, q])


def test_statistics_and_diversity_score_by_hand(tiny):
    beta, gamma = 0.5, 2.0
    samples = [
        ProbeSample(_arch(3, "k3e3", "k5e6"), [0.8, 0.6], 0.9, {(0, 1): 2.0}),
        ProbeSample(_arch(3, "k5e6", "k3e3"), [0.4, 0.6], 0.7, {(0, 1): 4.0}),
        ProbeSample(_arch(3, "k3e6", "skip"), [0.5, 0.3], 0.5, {(0, 1): 1.0}),
    ]
    stats = layer_statistics(tiny, samples, beta, gamma)[3]  # layer L4
    i = {str(o): n for n, o in enumerate(stats.ops)}
    # S: mean of exp(-beta d) over the observed pairs; symmetric; unit diagonal
    s_a = (math.exp(-beta * 2.0) + math.exp(-beta * 4.0)) / 2
    s_b = math.exp(-beta * 1.0)
    assert stats.S[i["k3e3"], i["k5e6"]] == pytest.approx(s_a) == stats.S[i["k5e6"], i["k3e3"]]
    assert stats.S[i["k3e6"], i["skip"]] == pytest.approx(s_b)
    assert np.allclose(stats.S, stats.S.T)
    assert np.allclose(np.diag(stats.S), 1.0)
    # never-observed pairs take the mean of the observed entries of the layer
    assert stats.S[i["k3e3"], i["k5e3"]] == pytest.approx((s_a + s_b) / 2)
    # r: exp(gamma * mean accuracy of the paths using the op); unobserved -> layer mean
    assert stats.r[i["k3e3"]] == pytest.approx(math.exp(gamma * (0.8 + 0.6) / 2))
    assert stats.r[i["k5e6"]] == pytest.approx(math.exp(gamma * (0.6 + 0.4) / 2))
    assert stats.r[i["k5e3"]] == pytest.approx(math.exp(gamma * (0.8 + 0.6 + 0.4 + 0.6 + 0.5 + 0.3) / 6))
    # score: det of the 2x2 sub-kernel of L = diag(r) S diag(r)
    combos = [(ops[0], ops[3]), (ops[1], ops[4])]
    scores = diversity_scores(stats, combos)
    ra, rb = stats.r[i["k3e3"]], stats.r[i["k5e6"]]
    assert scores[0] == pytest.approx(ra**2 * rb**2 * (1 - s_a**2))
    sub = np.diag(stats.r) @ stats.S @ np.diag(stats.r)
    idx = [i["k3e6"], i["skip"]]
    assert scores[1] == pytest.approx(np.linalg.det(sub[np.ix_(idx, idx)]))


def test_diversity_prefers_dissimilar_and_accurate(tiny):
    # paper Eq. 9: lower similarity and higher quality give a higher score
    samples = [
        ProbeSample(_arch(3, "k3e3", "k5e6"), [0.9, 0.9], 0.9, {(0, 1): 5.0}),  # diverse, accurate
        ProbeSample(_arch(3, "k3e3", "k5e3"), [0.9, 0.9], 0.9, {(0, 1): 0.1}),  # similar
    ]
    stats = layer_statistics(tiny, samples, 1.0, 1.0)[3]
    diverse, similar = diversity_scores(stats, [(ops[0], ops[3]), (ops[0], ops[2])])
    assert diverse > similar


def test_accuracy_baseline(tiny):
    samples = [
        ProbeSample(_arch(3, "k3e3", "k5e6"), [0.5, 0.5], 0.9, {(0, 1): 1.0}),
        ProbeSample(_arch(3, "k5e6", "k3e3"), [0.5, 0.5], 0.7, {(0, 1): 1.0}),
        ProbeSample(_arch(3, "k3e6", "skip"), [0.5, 0.5], 0.2, {(0, 1): 1.0}),
    ]
    scores = accuracy_scores(4, samples, [(ops[0], ops[3]), (ops[1], ops[4]), (ops[2], ops[4])])
    assert scores == pytest.approx([0.8, 0.2, 0.5])


def test_select_drops_takes_the_k_lowest_and_keeps_one_per_layer():
    scored = {
        1: [("a", 0.1), ("b", 0.2)],
        2: [("c", 0.05)],  # the only combination of its layer: never dropped
        3: [("d", 0.3), ("e", 0.15), ("f", 0.9)],
    }
    assert select_drops(scored, 2) == {1: ["a"], 3: ["e"]}
    assert select_drops(scored, 10) == {1: ["a"], 3: ["e", "d"]}
    assert select_drops(scored, 0) == {}


def test_shrink_round_on_a_real_supernet(tiny):
    from neas.supernet import Supernet

    torch.manual_seed(0)
    supernet = Supernet(tiny, 10)
    x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))
    full = ShrunkSpace.full(tiny)
    new, record = shrink_round(
        supernet, full, ShrinkSettings(drop=5, samples=6, beta=0.1), [(x, y)], [(x, y)], random.Random(0)
    )
    assert new.num_combinations == full.num_combinations - 5
    assert record["combinations_after"] == new.num_combinations
    assert len(record["dropped"]) == 5
    for layer in record["layers"]:
        S = np.array(layer["S"])
        assert np.allclose(S, S.T)
        assert np.allclose(np.diag(S), 1.0)
        assert all(len(c["ops"]) == 2 for c in layer["scores"])
    dropped = {(d["layer"], tuple(d["ops"])) for d in record["dropped"]}
    for index in range(1, tiny.num_layers + 1):
        survivors = {tuple(map(str, c)) for c in new.layer_combinations(index)}
        assert not survivors & {ops for layer, ops in dropped if layer == f"L{index}"}
    # the dropped ones have the lowest scores over all layers
    all_scores = sorted(c["score"] for layer in record["layers"] for c in layer["scores"])
    assert max(d["score"] for d in record["dropped"]) <= all_scores[5]
    # every arch sampled from the shrunk space uses surviving combinations; shared ops survive
    rng = random.Random(1)
    for _ in range(50):
        arch = EnsembleArch.sample(tiny, rng, new).validate(tiny, new)
        for index in range(1, arch.split + 1):
            assert arch.paths[0][index - 1] in new.shared_ops(index)


def test_the_indefinite_similarity_of_the_issue_scores_positive():
    from neas.shrink.statistics import LayerStats

    S = np.array([[1.0, 0.95, 0.95], [0.95, 1.0, 0.80], [0.95, 0.80, 1.0]])
    assert np.linalg.det(S) < 0  # as estimated: not a similarity kernel
    stats = LayerStats(1, tuple(ops[:3]), S, np.array([1.2, 1.1, 1.3]), np.ones((3, 3)), np.ones(3))
    assert diversity_scores(stats, [tuple(ops[:3])])[0] > 0


def test_a_psd_similarity_is_left_as_it_is():
    from neas.shrink.statistics import nearest_psd

    rng = np.random.default_rng(0)
    v = rng.normal(size=(5, 8))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    S = v @ v.T  # a Gram matrix: PSD, unit diagonal
    assert np.array_equal(nearest_psd(S), S)


@pytest.mark.parametrize("k", [3, 5])
def test_random_statistics_give_non_negative_scores_for_k(imagenet, k):
    import dataclasses

    space = dataclasses.replace(imagenet, num_paths=k, split=(0, imagenet.num_layers))
    lowest, layers = [], []
    for seed in range(12):
        rng = random.Random(seed)
        shrunk = ShrunkSpace.full(space)
        samples = []
        for _ in range(rng.randrange(2, 8)):
            arch = EnsembleArch.sample(space, rng, shrunk)
            distances = {pq: rng.uniform(0.0, 10.0) for pq in itertools.combinations(range(k), 2)}
            samples.append(ProbeSample(arch, [rng.random() for _ in range(k)], rng.random(), distances))
        for layer in layer_statistics(space, samples, beta=0.3, gamma=2.0):
            lowest.append(min(diversity_scores(layer, list(shrunk.layer_combinations(layer.index)))))
            layers.append(layer)
    assert min(lowest) >= 0, sorted(lowest)[:5]
    assert all(np.linalg.eigvalsh(layer.S).min() > 0 for layer in layers)  # the S recorded is the S scored
    assert sum(layer.S_min_eigenvalue < 0 for layer in layers) > 0  # estimates were indefinite: the projection ran


@pytest.mark.parametrize("mode", ["accuracy", "diversity"])
def test_layers_shared_in_every_ensemble_are_never_dropped(tiny, mode):
    import dataclasses

    from neas.supernet import Supernet

    space = dataclasses.replace(tiny, split=(2, 4))  # L1 and L2 are always shared
    torch.manual_seed(0)
    supernet = Supernet(space, 10)
    x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))
    full = ShrunkSpace.full(space)
    new, record = shrink_round(
        supernet, full, ShrinkSettings(mode=mode, drop=6, samples=6, beta=0.1), [(x, y)], [(x, y)], random.Random(0)
    )
    assert len(record["dropped"]) == 6
    assert {d["layer"] for d in record["dropped"]} <= {"L3", "L4"}
    for index in (1, 2):
        assert new.layer_combinations(index) == full.layer_combinations(index)
    assert [layer["always_shared"] for layer in record["layers"]] == [True, True, False, False]
    assert record["layers"][0]["scores"] == []
    assert record["layers"][2]["scores"]
