import copy
import random

import pytest
import torch
import torch.nn as nn
from timm.layers import FrozenBatchNormAct2d, freeze_batch_norm_2d
from torchvision.ops import FrozenBatchNorm2d

from neas.ensemble import EnsembleNet, build_ensemble
from neas.errors import NeasError
from neas.space import HEAD, EnsembleArch, Piece, SearchSpace, arch_pieces
from neas.supernet import Supernet

from ..supernet.test_supernet import _randomize_bn


@pytest.mark.parametrize("name,size", [("tiny", 32), ("cifar", 32), ("imagenet", 64)])
def test_inherited_ensemble_equals_supernet(name, size):
    space = SearchSpace.preset(name)
    torch.manual_seed(0)
    supernet = Supernet(space, num_classes=10)
    _randomize_bn(supernet)
    supernet.eval()
    rng = random.Random(0)
    x = torch.randn(2, 3, size, size)
    for _ in range(3):
        arch = EnsembleArch.sample(space, rng)
        net = supernet.extract(arch).eval()
        with torch.no_grad():
            expected = supernet(x, arch)
            got = net.path_logits(x)
            mean = net(x)
        for e, g in zip(expected, got):
            torch.testing.assert_close(g, e, rtol=0, atol=0)
        torch.testing.assert_close(mean, torch.stack(expected).mean(0))


def test_released_key_layout():
    space, arch = SearchSpace.preset("imagenet"), EnsembleArch.preset("neas-m")
    keys = build_ensemble(space, arch, 1000).state_dict().keys()
    shared_nonskip = sum(not op.is_skip for op in arch.shared)  # 15 (L7 is skip)
    shared_ids = {int(k.split(".")[2]) for k in keys if k.startswith("sharing_blocks.0.")}
    assert shared_ids == set(range(1 + shared_nonskip))
    assert "sharing_blocks.0.0.conv_dw.weight" in keys
    assert "sharing_blocks.0.0.conv_pw.weight" in keys
    for k in range(2):
        ids = {int(key.split(".")[3]) for key in keys if key.startswith(f"blocks.{k}.0.")}
        assert ids == set(range(5))  # 4 private MBConvs + the 960 conv
        assert f"blocks.{k}.0.4.conv.weight" in keys
        assert f"blocks.{k}.0.4.bn1.running_var" in keys
        assert f"blocks.{k}.0.0.se.conv_reduce.weight" in keys
        assert f"blocks.{k}.0.0.conv_pwl.weight" in keys
        assert f"conv_heads.{k}.bias" in keys
        assert f"classifiers.{k}.weight" in keys
    assert {k.split(".")[0] for k in keys} == {
        "conv_stem",
        "bn1",
        "sharing_blocks",
        "blocks",
        "conv_heads",
        "classifiers",
    }


@pytest.mark.parametrize("paths", [None, [1, 0], [1]])
def test_the_pieces_hold_every_weight_and_statistic_of_the_network_once(tiny, paths):
    net = build_ensemble(tiny, EnsembleArch.sample(tiny, 3, split=2), 10)
    net = net if paths is None else net.select(paths)
    tensors = [t for p in arch_pieces(net.arch) for t in net.piece_module(p).state_dict(keep_vars=True).values()]
    assert len({id(t) for t in tensors}) == len(tensors)
    assert {id(t) for t in tensors} == {id(t) for t in net.state_dict(keep_vars=True).values()}


def test_a_sub_ensemble_runs_the_chosen_paths_in_the_chosen_order(tiny):
    net = build_ensemble(tiny, EnsembleArch.sample(tiny, 3, split=2), 10).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        full = net.path_logits(x)
        for paths in ([1, 0], [1]):
            for got, k in zip(net.select(paths).path_logits(x), paths, strict=True):
                torch.testing.assert_close(got, full[k], rtol=0, atol=0)


@pytest.mark.parametrize("paths", [[1, 0], [1], [0]])
def test_a_sub_ensemble_wraps_this_networks_modules(tiny, paths):
    net = build_ensemble(tiny, EnsembleArch.sample(tiny, 3, split=2), 10)
    rng = torch.get_rng_state()
    sub = net.select(paths)
    assert torch.equal(torch.get_rng_state(), rng)  # no module built and initialised, then thrown away
    assert list(sub.state_dict()) == list(build_ensemble(sub.space, sub.arch, 10).state_dict())
    if len(paths) > 1:  # the trunk and the chosen paths' blocks
        expected = [*net.sharing_blocks[0], *(m for k in paths for m in net.blocks[k][0])]
    else:  # a single network: L0 alone is "shared", its path starts with the shared layers
        expected = [*net.sharing_blocks[0], *net.blocks[paths[0]][0]]
    assert [*sub.sharing_blocks[0], *(m for b in sub.blocks for m in b[0])] == expected
    for name in ("conv_stem", "bn1"):
        assert getattr(sub, name) is getattr(net, name)
    assert list(sub.conv_heads) == [net.conv_heads[k] for k in paths]
    assert list(sub.classifiers) == [net.classifiers[k] for k in paths]


def test_given_modules_are_one_per_piece(tiny):
    net = build_ensemble(tiny, EnsembleArch.sample(tiny, 3, split=2), 10)
    modules = {piece: net.piece_module(piece) for piece in arch_pieces(net.arch)}
    assert EnsembleNet(tiny, net.arch, 10, modules=modules).state_dict().keys() == net.state_dict().keys()
    del modules[Piece(HEAD, 1)]
    with pytest.raises(NeasError, match="modules: expected one module for each piece of the arch"):
        EnsembleNet(tiny, net.arch, 10, modules=modules)


class Scaled(nn.Module):
    """``module`` with its output times ``factor``: a stand-in for module surgery."""

    def __init__(self, module: nn.Module, factor: float):
        super().__init__()
        self.module, self.factor = module, factor

    def forward(self, x):
        return self.module(x) * self.factor


def test_a_module_replaced_in_the_tree_is_the_one_that_runs(tiny):
    net = build_ensemble(tiny, EnsembleArch.sample(tiny, 3, split=2), 10).eval()
    _randomize_bn(net)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before = net.path_logits(x)
        net.blocks[1][0][0] = Scaled(net.blocks[1][0][0], 0.0)  # path 1's first private block (a layer)
        got = net.path_logits(x)
        torch.testing.assert_close(got[0], before[0], rtol=0, atol=0)
        assert not torch.allclose(got[1], before[1])
        net.classifiers[0] = Scaled(net.classifiers[0], 0.0)  # path 0's head
        got = net.path_logits(x)
        assert torch.equal(got[0], torch.zeros_like(got[0]))
        for paths in ([1, 0], [1], [0]):  # a sub-ensemble wraps the modules in the tree now
            for k, logits in zip(paths, net.select(paths).path_logits(x), strict=True):
                torch.testing.assert_close(logits, got[k], rtol=0, atol=0)


def test_frozen_batch_norms_are_the_ones_that_run(tiny):
    net = build_ensemble(tiny, EnsembleArch.sample(tiny, 3, split=2), 10)  # train mode, as a detector's body
    _randomize_bn(net)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = [features for _, features in copy.deepcopy(net).eval().path_outputs(x)]  # before dropout
        freeze_batch_norm_2d(net)  # timm's surgery: the stem's bn1 and every block's BNs replaced in the tree
        assert isinstance(net.bn1, FrozenBatchNormAct2d)
        assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
        frozen = [m for m in net.modules() if isinstance(m, (FrozenBatchNorm2d, FrozenBatchNormAct2d))]
        ran = []
        for m in frozen:
            m.register_forward_hook(lambda m, i, o: ran.append(m))
        got = [features for _, features in net.path_outputs(x)]  # a BatchNorm in train mode would differ
    torch.testing.assert_close(got, expected)
    assert {id(m) for m in ran} == {id(m) for m in frozen}


def test_torch_fx_traces_the_network_over_its_registered_modules(tiny):
    net = build_ensemble(tiny, EnsembleArch.sample(tiny, 3, split=2), 10).eval()
    graph = torch.fx.symbolic_trace(net)
    called = {node.target for node in graph.graph.nodes if node.op == "call_module"}
    for prefix in ("conv_stem", "bn1.", "blocks.1.0.0.", "blocks.0.0.", "conv_heads.1", "classifiers.0"):
        assert any(str(target).startswith(prefix) for target in called), prefix
    x = torch.randn(2, 3, 32, 32)
    grads = []
    for model in (net, graph):  # the graph shares the network's parameters
        net.zero_grad()
        model(x).sum().backward()
        grads.append([p.grad.clone() for p in net.parameters()])
    torch.testing.assert_close(graph(x), net(x), rtol=0, atol=0)
    torch.testing.assert_close(grads[1], grads[0], rtol=0, atol=0)  # scale_grad runs in the graph


def test_a_heads_dropout_follows_the_networks_mode(tiny):
    net = build_ensemble(tiny, EnsembleArch.sample(tiny, 3), 10)
    head = net.piece_module(Piece(HEAD, 1))  # built now over blocks.1.0.<last>, conv_heads.1, classifiers.1
    x = torch.randn(4, tiny.last_channels, 4, 4)
    net.train()
    assert not torch.equal(head(x)[0], head(x)[0])
    net.eval()
    assert torch.equal(head(x)[0], head(x)[0])


def test_se_matches_design():
    space = SearchSpace.preset("imagenet")
    net = build_ensemble(space, EnsembleArch.preset("neas-m"), 1000)
    block = net.sharing_blocks[0][1]  # L1: k5e6, 16 -> 24, mid 96
    assert block.conv_dw.kernel_size == (5, 5)
    assert block.conv_pw.out_channels == 96
    assert block.se.conv_reduce.out_channels == 24  # make_divisible(0.25 * 96, 8)
    assert isinstance(block.se.act1, torch.nn.ReLU)
    assert isinstance(block.se.gate, torch.nn.Hardsigmoid)
    assert net.sharing_blocks[0][0].has_skip  # L0: 16 -> 16, stride 1: residual


def test_inherit_checks_space_and_classes(tiny):
    arch = EnsembleArch.sample(tiny, 0)
    with pytest.raises(NeasError, match="classes"):
        Supernet(tiny, 10).copy_into(build_ensemble(tiny, arch, 5))
    other = SearchSpace.from_dict({**tiny.to_dict(), "name": "other", "head_channels": 32})
    with pytest.raises(NeasError, match="space"):
        Supernet(other, 10).copy_into(build_ensemble(tiny, arch, 10))


def test_bad_arch_is_rejected(tiny):
    with pytest.raises(NeasError, match="20 layers per path but space 'tiny' has 4"):
        build_ensemble(tiny, EnsembleArch.preset("neas-s"), 10)
