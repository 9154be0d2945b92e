import random

import pytest
import torch

from neas.errors import NeasError
from neas.ensemble import build_ensemble
from neas.space import EnsembleArch, SearchSpace
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
    assert "sharing_blocks.0.0.conv_dw.weight" in keys and "sharing_blocks.0.0.conv_pw.weight" in keys
    for k in range(2):
        ids = {int(key.split(".")[3]) for key in keys if key.startswith(f"blocks.{k}.0.")}
        assert ids == set(range(5))  # 4 private MBConvs + the 960 conv
        assert f"blocks.{k}.0.4.conv.weight" in keys and f"blocks.{k}.0.4.bn1.running_var" in keys
        assert f"blocks.{k}.0.0.se.conv_reduce.weight" in keys and f"blocks.{k}.0.0.conv_pwl.weight" in keys
        assert f"conv_heads.{k}.bias" in keys and f"classifiers.{k}.weight" in keys
    assert {k.split(".")[0] for k in keys} == {"conv_stem", "bn1", "sharing_blocks", "blocks", "conv_heads", "classifiers"}


def test_se_matches_design():
    space = SearchSpace.preset("imagenet")
    net = build_ensemble(space, EnsembleArch.preset("neas-m"), 1000)
    block = net.sharing_blocks[0][1]  # L1: k5e6, 16 -> 24, mid 96
    assert block.conv_dw.kernel_size == (5, 5) and block.conv_pw.out_channels == 96
    assert block.se.conv_reduce.out_channels == 24  # make_divisible(0.25 * 96, 8)
    assert isinstance(block.se.act1, torch.nn.ReLU) and isinstance(block.se.gate, torch.nn.Hardsigmoid)
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
