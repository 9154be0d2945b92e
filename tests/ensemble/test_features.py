import random
from collections import Counter

import pytest
import torch
import torch.nn as nn
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from neas.ensemble import build_ensemble
from neas.ensemble.features import EnsembleFeatures, stage_ends
from neas.errors import NeasError
from neas.space import HEAD, LAYER, STEM, EnsembleArch, Piece, SearchSpace, arch_pieces, parse_op

from ..supernet.test_supernet import _randomize_bn

MODES = ["mean", "concat", "path:0", "path:1"]


# tiny, split 3: L2 (the stride-4 stage's end) a shared skip, L4 (the stride-8 one's) a skip on path 1 only
TINY_SKIPS = EnsembleArch(
    3, tuple(tuple(map(parse_op, ops.split())) for ops in ("k3e6 skip k3e3 k5e3", "k3e6 skip k3e3 skip"))
)


def _net(name: str, arch: "int | str | EnsembleArch", seed: int = 0):
    """A network of space ``name`` in eval mode, random weights and BN statistics: ``arch`` a
    preset (NEAS-S: split 20, a skip at L8, the stride-8 stage's end; NEAS-M: split 16), an arch,
    or a split point to sample one at."""
    space = SearchSpace.preset(name)
    if isinstance(arch, int):
        arch = EnsembleArch.sample(space, random.Random(seed), split=arch)
    elif isinstance(arch, str):
        arch = EnsembleArch.preset(arch)
    torch.manual_seed(seed)
    net = build_ensemble(space, arch, num_classes=10)
    _randomize_bn(net)
    return net.eval()


def _first_module(net, piece: Piece) -> nn.Module:
    """The first registered module a piece runs (a stem and a head are built on demand over theirs)."""
    module = net.piece_module(piece)
    return module.last_block if piece.kind == HEAD else module[0] if piece.kind == STEM else module


def _manual_outputs(net, x: torch.Tensor) -> list[dict[int, torch.Tensor]]:
    """Per path, the output after L0 (0), every layer L{i} (i, a skip layer's = its input) and the
    head's last block (n + 1), by running the modules one by one: the trunk again for each path."""
    n, outputs = net.space.num_layers, []
    for k in range(net.num_paths):
        h = net.piece_module(Piece("stem"))(x)
        out = {0: net.piece_module(Piece("L0"))(h)}
        h = out[0]
        for i in range(1, n + 1):
            op = net.arch.paths[k][i - 1]
            if not op.is_skip:
                h = net.piece_module(Piece(LAYER, None if i <= net.arch.split else k, i, op))(h)
            out[i] = h
        out[n + 1] = net.piece_module(Piece(HEAD, k)).last_block(h)
        outputs.append(out)
    return outputs


@pytest.mark.parametrize("name,split,size", [("imagenet", "neas-s", 64), ("tiny", 4, 32)])
def test_split_after_every_layer_gives_the_trunk_in_every_mode(name, split, size):
    net, x = _net(name, split), torch.randn(2, 3, size, size)
    strides = (8, 16, 32) if name == "imagenet" else (4, 8)
    ends = stage_ends(net)
    with torch.no_grad():
        manual = _manual_outputs(net, x)[0]
        got = {mode: EnsembleFeatures(net, strides, mode)(x) for mode in MODES}
    for mode, maps in got.items():
        assert list(maps) == [str(s) for s in strides]
        for s in strides:
            torch.testing.assert_close(maps[str(s)], manual[ends[s][0]], rtol=0, atol=0, msg=f"{mode} {s}")
            assert maps[str(s)].shape[-1] == size // s


@pytest.mark.parametrize(
    "name,split,size,strides",
    [("imagenet", "neas-m", 64, (8, 16, 32)), ("tiny", 3, 32, (4, 8)), ("tiny", TINY_SKIPS, 32, (4, 8))],
)
@pytest.mark.parametrize("mode", MODES)
def test_split_inside_the_last_stage_follows_the_mode(name, split, size, strides, mode):
    net, x = _net(name, split, seed=1), torch.randn(2, 3, size, size)
    split = net.arch.split
    assert net.arch.paths[0][split:] != net.arch.paths[1][split:]
    ends, n = stage_ends(net), net.space.num_layers
    feat = EnsembleFeatures(net, strides, mode, last_conv=True)
    with torch.no_grad():
        manual, maps = _manual_outputs(net, x), feat(x)
    assert list(maps) == [*map(str, strides), "head"]
    for s in strides[:-1]:  # shared: the trunk's map, whatever the mode
        torch.testing.assert_close(maps[str(s)], manual[0][ends[s][0]], rtol=0, atol=0)
    for key, pos in ((str(strides[-1]), ends[strides[-1]][0]), ("head", n + 1)):
        paths = [out[pos] for out in manual]
        expected = {
            "mean": torch.stack(paths).mean(0),
            "concat": torch.cat(paths, 1),
            "path:0": paths[0],
            "path:1": paths[1],
        }[mode]
        torch.testing.assert_close(maps[key], expected, rtol=0, atol=0, msg=key)
    assert feat.out_channels == [m.shape[1] for m in maps.values()]
    widen = 2 if mode == "concat" else 1
    assert feat.out_channels[-2:] == [net.space.last_channels * widen, net.space.head_channels * widen]


def test_fpn_with_p6_p7_runs_on_the_features():
    net = _net("imagenet", 16)
    feat = EnsembleFeatures(net)  # strides 8, 16, 32, mode mean
    assert feat.out_channels == [40, 112, 160]
    fpn = FeaturePyramidNetwork(feat.out_channels, 32, extra_blocks=LastLevelP6P7(32, 32)).eval()
    with torch.no_grad():
        out = fpn(feat(torch.randn(1, 3, 128, 128)))
    assert [(key, tuple(v.shape)) for key, v in out.items()] == [
        ("8", (1, 32, 16, 16)),
        ("16", (1, 32, 8, 8)),
        ("32", (1, 32, 4, 4)),
        ("p6", (1, 32, 2, 2)),
        ("p7", (1, 32, 1, 1)),
    ]


@pytest.mark.parametrize("mode", ["mean", "path:1"])
def test_each_shared_layer_runs_once_and_no_classifier_runs(mode):
    net = _net("imagenet", 16)
    calls, hooks = Counter(), []
    for piece in arch_pieces(net.arch):
        hook = _first_module(net, piece).register_forward_hook(lambda m, i, o, piece=piece: calls.update([piece]))
        hooks.append(hook)
    for name in ("conv_heads", "classifiers"):
        for module in getattr(net, name):
            hooks.append(module.register_forward_hook(lambda m, i, o, name=name: calls.update([name])))
    with torch.no_grad():
        EnsembleFeatures(net, mode=mode)(torch.randn(1, 3, 64, 64))
    ran_paths = {0, 1} if mode == "mean" else {1}
    for piece in arch_pieces(net.arch):
        expected = 0 if piece.kind == HEAD or (piece.path is not None and piece.path not in ran_paths) else 1
        assert calls[piece] == expected, piece
    assert calls["conv_heads"] == calls["classifiers"] == 0


def test_shared_strides_alone_run_no_path():
    net = _net("imagenet", 16)
    feat = EnsembleFeatures(net, strides=(4, 8))
    ran = Counter()
    for piece in arch_pieces(net.arch):
        _first_module(net, piece).register_forward_hook(lambda m, i, o, piece=piece: ran.update([piece]))
    with torch.no_grad():
        maps = feat(torch.randn(1, 3, 64, 64))
    assert list(maps) == ["4", "8"] and feat.out_channels == [24, 40]
    assert Piece(STEM) in ran and all(p.path is None and (p.kind != LAYER or p.index <= 8) for p in ran)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"mode": "max"}, "feature_mode: unknown 'max'"),
        ({"mode": "path:2"}, r"feature_mode: path:2 names a path the 2-path ensemble lacks \(paths 0\.\.1\)"),
        ({"mode": "path:x"}, "feature_mode: unknown 'path:x'"),
        ({"strides": (8, 64)}, r"output strides \[1, 2, 4, 8\]"),
        ({"strides": ()}, "output strides"),
    ],
)
def test_bad_mode_or_stride_is_one_error(kwargs, match):
    net = _net("cifar", 12)  # cifar: stem and first stage at stride 1, so strides 1, 2, 4, 8
    with pytest.raises(NeasError, match=match):
        EnsembleFeatures(net, **kwargs)


def test_paths_of_unequal_channels_are_refused_by_mean_and_concat():
    net = _net("tiny", 3)
    last = next(p for p in arch_pieces(net.arch) if p.path == 1 and p.kind == LAYER and p.index == 4)
    assert net.piece_module(last) is net.blocks[1][0][-2]  # path 1's last layer, before its head's last block
    net.blocks[1][0][-2] = nn.Conv2d(24, 8, 1)  # replaced in the tree: path 1 now ends narrower than path 0
    x = torch.randn(1, 3, 32, 32)
    for mode in ("mean", "concat"):
        with pytest.raises(NeasError, match="differ in shape"):
            EnsembleFeatures(net, (4, 8), mode)(x)
    assert EnsembleFeatures(net, (4, 8), "path:1")(x)["8"].shape[1] == 8
