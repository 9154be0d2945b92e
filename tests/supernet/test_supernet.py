import random

import pytest
import torch
import torch.nn as nn

from neas.errors import NeasError
from neas.nn import scale_grad
from neas.space import LAYER, EnsembleArch, Piece, SearchSpace, arch_pieces
from neas.supernet import Supernet


def _randomize_bn(module, seed=0):
    gen = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=gen) * 0.1)


@pytest.fixture(scope="module")
def tiny_supernet():
    torch.manual_seed(0)
    net = Supernet(SearchSpace.preset("tiny"), num_classes=10)
    _randomize_bn(net)
    return net


@pytest.mark.parametrize("name,size", [("tiny", 32), ("cifar", 32), ("imagenet", 64)])
def test_every_random_arch_runs_forward_and_backward(name, size):
    space = SearchSpace.preset(name)
    net = Supernet(space, num_classes=7)
    rng = random.Random(1)
    for _ in range(2):
        arch = EnsembleArch.sample(space, rng)
        logits = net(torch.randn(2, 3, size, size), arch)
        assert len(logits) == space.num_paths
        assert all(l.shape == (2, 7) for l in logits)
        sum(l.sum() for l in logits).backward()
        net.zero_grad(set_to_none=True)


def test_one_module_per_layer_and_op(tiny_supernet):
    space = tiny_supernet.space
    for spec, choices in zip(space.layers, tiny_supernet.layers):
        assert sorted(choices.keys()) == sorted(str(op) for op in spec.ops if not op.is_skip)
    assert len(tiny_supernet.classifiers) == space.num_paths


def test_shared_part_is_computed_once(tiny_supernet):
    space = tiny_supernet.space
    arch = EnsembleArch.sample(space, 3, split=3)
    calls = {}
    handles = [
        m.register_forward_hook(lambda mod, i, o, key=key: calls.__setitem__(key, calls.get(key, 0) + 1))
        for key, m in [("stem", tiny_supernet.conv_stem), ("l0", tiny_supernet.first_block)]
        + [
            (f"L{i}", tiny_supernet.piece_module(Piece(LAYER, None, i, arch.paths[0][i - 1])))
            for i in range(1, 4)
            if not arch.paths[0][i - 1].is_skip
        ]
    ]
    tiny_supernet(torch.randn(2, 3, 32, 32), arch)
    for h in handles:
        h.remove()
    assert calls
    assert all(v == 1 for v in calls.values())


def test_forward_runs_the_pieces_of_the_walk_in_order(tiny_supernet):
    arch = EnsembleArch.sample(tiny_supernet.space, 7, split=2)
    ran = []
    # each piece's first registered module (the stem's conv, a head's last block): what a forward runs
    modules = [tiny_supernet.piece_module(p) for p in arch_pieces(arch)]
    modules = [m[0] if isinstance(m, nn.Sequential) else getattr(m, "last_block", m) for m in modules]
    handles = [m.register_forward_hook(lambda mod, i, o: ran.append(mod)) for m in modules]
    try:
        tiny_supernet(torch.randn(2, 3, 32, 32), arch)
    finally:
        for h in handles:
            h.remove()
    assert ran == modules


def test_a_module_replaced_in_the_tree_is_the_one_that_runs():
    space = SearchSpace.preset("tiny")
    net = Supernet(space, num_classes=10).eval()
    _randomize_bn(net)
    arch = EnsembleArch.sample(space, 3, split=1)
    op = str(arch.shared[0])  # the shared L1's op
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before = net(x, arch)
        net.classifiers[1] = nn.Sequential(net.classifiers[1], _Zero())  # path 1's head
        got = net(x, arch)
        assert torch.equal(got[1], torch.zeros_like(got[1]))
        torch.testing.assert_close(got[0], before[0], rtol=0, atol=0)
        net.layers[0][op] = nn.Sequential(net.layers[0][op], _Zero())  # a layer's op, every path runs it
        assert not net.forward_shared(x, arch).any()  # the trunk ends with L1
        assert not torch.allclose(net(x, arch)[0], before[0])


class _Zero(nn.Module):
    def forward(self, x):
        return x * 0.0


def test_unsampled_blocks_get_no_gradient(tiny_supernet):
    arch = EnsembleArch.sample(tiny_supernet.space, 5)
    tiny_supernet.zero_grad(set_to_none=True)
    sum(l.sum() for l in tiny_supernet(torch.randn(2, 3, 32, 32), arch)).backward()
    used = {id(p) for m in tiny_supernet.used_modules(arch) for p in m.parameters()}
    for p in tiny_supernet.parameters():
        assert (p.grad is not None) == (id(p) in used)
    tiny_supernet.zero_grad(set_to_none=True)


def test_shared_gradient_is_divided_by_k():
    space = SearchSpace.preset("tiny")
    torch.manual_seed(0)
    scaled = Supernet(space, 10, scale_shared_grad=True)
    plain = Supernet(space, 10, scale_shared_grad=False)
    plain.load_state_dict(scaled.state_dict())
    arch = EnsembleArch.sample(space, 2, split=2)
    x = torch.randn(4, 3, 32, 32)
    for net in (scaled, plain):
        net.eval()  # no dropout: both nets compute the same function
        sum(l.sum() for l in net(x, arch)).backward()
    k = space.num_paths
    torch.testing.assert_close(scaled.conv_stem.weight.grad * k, plain.conv_stem.weight.grad)
    torch.testing.assert_close(scaled.classifiers[0].weight.grad, plain.classifiers[0].weight.grad)


def test_scale_grad_is_identity_forward():
    x = torch.randn(3, requires_grad=True)
    y = scale_grad(x, 0.25)
    assert torch.equal(y, x)
    y.sum().backward()
    assert torch.allclose(x.grad, torch.full((3,), 0.25))


def test_stateless_with_respect_to_arch(tiny_supernet):
    tiny_supernet.eval()
    x = torch.randn(2, 3, 32, 32)
    a, b = EnsembleArch.sample(tiny_supernet.space, 1), EnsembleArch.sample(tiny_supernet.space, 2)
    with torch.no_grad():
        first = tiny_supernet(x, a)
        tiny_supernet(x, b)
        again = tiny_supernet(x, a)
    assert all(torch.equal(p, q) for p, q in zip(first, again))
    tiny_supernet.train()


def test_features_are_returned(tiny_supernet):
    arch = EnsembleArch.sample(tiny_supernet.space, 1)
    _logits, feats = tiny_supernet(torch.randn(2, 3, 32, 32), arch, return_features=True)
    assert all(f.shape == (2, 128) for f in feats)


def test_arch_of_another_space_is_rejected(tiny_supernet):
    with pytest.raises(NeasError, match="layers per path"):
        tiny_supernet(torch.randn(1, 3, 32, 32), EnsembleArch.preset("neas-s"))
