"""neas.detection.model: a RetinaNet over a small two-path ensemble (a split inside the network, so
the maps at strides 16 and 32 are per path and the mode matters) and over a timm body."""

import copy
import math

import pytest
import torch
import torch.nn as nn
from timm.layers import FrozenBatchNormAct2d
from torchvision.ops import FrozenBatchNorm2d

from neas.cost import cost_table
from neas.detection.model import (
    build_retinanet,
    describe_backbone,
    ensemble_body,
    load_backbone_net,
    timm_body,
)
from neas.ensemble import build_ensemble
from neas.ensemble.io import save_ensemble
from neas.errors import NeasError
from neas.space import EnsembleArch, SearchSpace, parse_op
from neas.space.presets import SPACE_PRESETS

from ..supernet.test_supernet import _randomize_bn

# the tiny preset with two more stride-2 stages: L0 at stride 2, L1 4, L2-L3 8, L4-L5 16, L6-L7 32
SPACE = SearchSpace.from_dict(
    {
        **SPACE_PRESETS["tiny"],
        "name": "tiny-det",
        "stages": [
            {"channels": 16, "layers": 1, "stride": 2},
            {"channels": 24, "layers": 2, "stride": 2},
            {"channels": 32, "layers": 2, "stride": 2},
            {"channels": 40, "layers": 2, "stride": 2},
        ],
        "split": [1, 6],
    }
)
# split 3: the stride-8 map is the trunk's, the stride-16 and 32 ones are each path's
ARCH = EnsembleArch(
    3,
    tuple(
        tuple(map(parse_op, ops.split()))
        for ops in ("k3e3 k3e6 k3e3 k5e3 k3e3 k3e6 k5e3", "k3e3 k3e6 k3e3 k3e6 k5e3 k5e6 k3e3")
    ),
)
SIZE = 64


def _net(seed: int = 0, arch: EnsembleArch = ARCH):
    torch.manual_seed(seed)
    net = build_ensemble(SPACE, arch, num_classes=10)
    _randomize_bn(net, seed)
    return net


def _detector(mode: str = "mean", **kwargs):
    body, channels = ensemble_body(_net(), mode)
    return build_retinanet(body, channels, 3, min_size=SIZE, max_size=SIZE, fpn_channels=32, **kwargs), channels


def _batch(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    images = [torch.rand(3, SIZE, SIZE, generator=gen) for _ in range(2)]
    targets = [
        {"boxes": torch.tensor([[4.0, 6.0, 30.0, 40.0], [20.0, 10.0, 60.0, 50.0]]), "labels": torch.tensor([0, 2])},
        {"boxes": torch.tensor([[10.0, 10.0, 26.0, 22.0]]), "labels": torch.tensor([1])},
    ]
    return images, targets


@pytest.mark.parametrize("mode,channels", [("mean", [24, 32, 40]), ("concat", [24, 64, 80]), ("path:1", [24, 32, 40])])
def test_every_parameter_of_the_detector_gets_a_gradient(mode, channels):
    model, got = _detector(mode)
    assert got == channels
    images, targets = _batch()
    losses = model.train()(images, targets)
    assert set(losses) == {"classification", "bbox_regression"}
    assert all(math.isfinite(v.item()) for v in losses.values())
    sum(losses.values()).backward()
    # what DDP's find_unused_parameters=False needs: the classifier heads and, for path:1, path 0's
    # layers are gone, everything left is trained
    unused = [name for name, p in model.named_parameters() if p.grad is None]
    assert unused == []
    net = model.backbone.body.net
    assert sum(p.numel() for m in (net.classifiers, net.conv_heads) for p in m.parameters()) == 0
    assert (sum(p.numel() for p in net.blocks[0].parameters()) == 0) == (mode == "path:1")
    detections = model.eval()(images)
    assert len(detections) == 2
    for d in detections:
        assert d["boxes"].shape[1:] == (4,) and d["scores"].shape == d["labels"].shape == d["boxes"].shape[:1]


def test_the_maps_are_the_plain_networks_own_stage_outputs_combined_as_the_mode_says():
    """An independent reference (the audit's): forward hooks on the plain EnsembleNet's modules. The trunk
    is L0-L3 (stride 8 after L3); each path's L4-L5 end stride 16, L6-L7 stride 32, then its head conv."""
    x = torch.rand(1, 3, SIZE, SIZE)
    plain, seen = _net().eval(), {}
    modules = {"8": plain.sharing_blocks[0][3]}
    for k in range(2):
        modules |= {f"16/{k}": plain.blocks[k][0][1], f"32/{k}": plain.blocks[k][0][3]}
    for key, module in modules.items():
        module.register_forward_hook(lambda m, i, out, key=key: seen.__setitem__(key, out))
    with torch.no_grad():
        plain(x)
        maps = {mode: ensemble_body(_net(), mode)[0].eval()(x) for mode in ("mean", "concat", "path:0", "path:1")}
    for mode, got in maps.items():
        assert list(got) == ["8", "16", "32"]
        torch.testing.assert_close(got["8"], seen["8"], rtol=0, atol=0)
        for stride in ("16", "32"):
            paths = [seen[f"{stride}/{k}"] for k in range(2)]
            expected = {
                "mean": (paths[0] + paths[1]) / 2,
                "concat": torch.cat(paths, 1),
                "path:0": paths[0],
                "path:1": paths[1],
            }[mode]
            torch.testing.assert_close(got[stride], expected, rtol=1e-6, atol=1e-6, msg=f"{mode} {stride}")


def _bodies():
    return {"ensemble": lambda: ensemble_body(_net(), "mean"), "timm": lambda: timm_body("mobilenetv3_large_100")}


@pytest.mark.parametrize("kind", ["ensemble", "timm"])
def test_frozen_bn_keeps_the_statistics_and_never_updates_them(kind):
    torch.manual_seed(0)
    body, channels = _bodies()[kind]()
    _randomize_bn(body, 1)
    bns = {name: m for name, m in body.named_modules() if isinstance(m, nn.BatchNorm2d)}
    stats = {k: v.clone() for k, v in body.state_dict().items() if "num_batches_tracked" not in k}
    x = torch.rand(2, 3, SIZE, SIZE)
    with torch.no_grad():  # on a copy: the body's BatchNorm stays in training mode, as in a new detector
        expected = copy.deepcopy(body).eval()(x)
    model = build_retinanet(body, channels, 3, min_size=SIZE, max_size=SIZE, fpn_channels=32, frozen_bn=True)
    frozen = model.backbone.body
    assert len(bns) > 5 and not any(isinstance(m, nn.BatchNorm2d) for m in frozen.modules())
    after = {k: v for k, v in frozen.state_dict().items() if "num_batches_tracked" not in k}
    assert after.keys() == stats.keys()
    for key, value in stats.items():
        torch.testing.assert_close(after[key], value, rtol=0, atol=0, msg=key)
    copies = [m for m in frozen.modules() if isinstance(m, (FrozenBatchNorm2d, FrozenBatchNormAct2d))]
    ran = []
    for m in copies:
        m.register_forward_hook(lambda m, i, o: ran.append(m))
    with torch.no_grad():
        got = frozen.train()(x)  # training mode: batch statistics would change the maps and the buffers
    assert len(copies) == len(bns) and {id(m) for m in ran} == {id(m) for m in copies}  # the copies run
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=1e-4, atol=1e-4, msg=key)  # a rounding apart
    for key, value in frozen.state_dict().items():
        torch.testing.assert_close(value, stats[key], rtol=0, atol=0, msg=key)


def test_the_timm_body_ends_at_its_last_stage_output_as_the_neas_body_does():
    """The audit: MobileNetV3's C5 was its 960-channel final 1x1 conv while NEAS's is its 160-channel
    stage output; both bodies now end at the last stage's output (neither runs its '960 conv')."""
    import timm

    body, channels = timm_body("mobilenetv3_large_100")
    assert channels == [40, 112, 160]
    assert not any(k.startswith("net.blocks.6.") for k in body.state_dict())  # gone, not unused (DDP)
    full = timm.create_model("mobilenetv3_large_100", pretrained=False).eval()
    body.net.load_state_dict(full.state_dict(), strict=False)  # the classification network's weights
    x = torch.rand(1, 3, SIZE, SIZE)
    with torch.no_grad():
        maps = body.eval()(x)
        # timm's own walk: the output of blocks.5 (the last stage of inverted residuals, 160 channels)
        (stage_out,) = full.forward_intermediates(x, indices=[6], extra_blocks=True, intermediates_only=True)
    assert list(maps) == ["0", "1", "2"]
    assert [tuple(m.shape[1:]) for m in maps.values()] == [(40, 8, 8), (112, 4, 4), (160, 2, 2)]
    torch.testing.assert_close(maps["2"], stage_out, rtol=0, atol=0)
    assert timm_body("efficientnet_b0")[1] == [40, 112, 320]  # a last stage of blocks is kept as it is
    _, neas_channels = ensemble_body(_net(), "mean")
    assert neas_channels[-1] == SPACE.stages[-1].channels  # NEAS's C5: its last stage's output, not its head


def test_unknown_timm_model_is_refused_with_a_suggestion():
    with pytest.raises(NeasError, match=r"mobilenetv3_large_10'.*did you mean 'mobilenetv3_large_100'"):
        timm_body("mobilenetv3_large_10")


def test_anchors_follow_torchvision_retinanet():
    model, _ = _detector()
    sizes = model.anchor_generator.sizes
    assert sizes[0] == (32, 40, 50) and sizes[-1] == (512, 645, 812)
    assert model.anchor_generator.num_anchors_per_location() == [9] * 5
    with pytest.raises(NeasError, match="anchor_sizes: 3 levels given, the FPN has 5"):
        _detector(anchor_sizes=((32,), (64,), (128,)))


def test_backbone_macs_agree_with_the_cost_model():
    body, _ = ensemble_body(_net(), "mean")
    table = cost_table(SPACE, 10, SIZE)
    expected = table.cost(ARCH).macs - ARCH.num_paths * table.head.macs  # the heads never run
    assert describe_backbone(body, SIZE)["macs"] == expected


def test_load_backbone_net_round_trips_a_retrain_file_and_refuses_another_arch(tmp_path):
    arch_file = tmp_path / "arch.json"
    ARCH.save(arch_file, space=SPACE.to_dict())
    saved = _net(seed=3)
    run = tmp_path / "run"
    run.mkdir()
    save_ensemble(saved, run / "model.safetensors")
    for weights in (run, run / "model.safetensors"):
        net = load_backbone_net(str(arch_file), backbone_weights=weights)
        assert net.training and net.arch == ARCH
        for key, value in saved.state_dict().items():
            torch.testing.assert_close(net.state_dict()[key], value, rtol=0, atol=0, msg=key)
    fresh = load_backbone_net(str(arch_file), num_classes_hint=4)
    assert fresh.num_classes == 4 and not torch.equal(fresh.conv_stem.weight, saved.conv_stem.weight)
    other = EnsembleArch(3, (ARCH.paths[1], ARCH.paths[0]))
    other.save(tmp_path / "other.json", space=SPACE.to_dict())
    with pytest.raises(
        NeasError, match=r"backbone_weights .*run: they are of arch split=3 .* but arch .*other.json. is arch split=3"
    ):
        load_backbone_net(str(tmp_path / "other.json"), backbone_weights=run)
    with pytest.raises(NeasError, match="they are of arch .* in space 'tiny-det', but arch 'neas-s' is NEAS-S"):
        load_backbone_net("neas-s", backbone_weights=run)
    with pytest.raises(NeasError, match="at most one of backbone_weights"):
        load_backbone_net("neas-s", backbone_weights=run, official_checkpoint=run)


def test_benchmark_quick_mode_runs():
    from benchmarks.bench_detection import detection_step

    result = detection_step({"input": 64, "batch": 1, "repeats": 1, "warmup": 0})
    assert result.ours_s > 0 and result.baseline_s > 0
    assert result.extra["neas_macs"] == result.extra["neas_macs_counter"]


def test_a_timm_backbone_starts_from_a_timm_checkpoint_read_without_unpickling(tmp_path):
    """The paper's MobileNetV3 row uses an ImageNet-pretrained backbone: --backbone-weights FILE for timm."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(3)
    classifier = timm.create_model("mobilenetv3_large_100", pretrained=False)
    save_file(classifier.state_dict(), str(tmp_path / "mnv3.safetensors"))
    body, _ = timm_body("mobilenetv3_large_100", tmp_path / "mnv3.safetensors")
    got = dict(body.named_parameters())
    stem = next(k for k in got if k.endswith("conv_stem.weight"))
    assert torch.equal(got[stem], classifier.conv_stem.weight)
    scratch, _ = timm_body("mobilenetv3_large_100")
    assert not torch.equal(dict(scratch.named_parameters())[stem], classifier.conv_stem.weight)
    (tmp_path / "other.safetensors").write_bytes(b"not a checkpoint")
    for bad in ("other.safetensors", "missing.pth"):
        with pytest.raises(NeasError, match=f"--backbone-weights .*{bad}"):
            timm_body("mobilenetv3_large_100", tmp_path / bad)


def test_a_timm_detector_recorded_before_issue_40_is_rebuilt_with_its_last_conv():
    """Its weights were trained with the 960-channel C5: the record without ``last_conv`` rebuilds that body."""
    from neas.detection.detector import DetectorSpec, build_detector

    spec = DetectorSpec(
        backbone="timm:mobilenetv3_large_100",
        arch=None,
        space=None,
        backbone_classes=None,
        feature_mode="mean",
        categories=[{"id": 1, "name": "a"}],
        min_size=SIZE,
        max_size=SIZE,
        anchor_sizes=[16, 32, 64, 128, 256],
        fpn_channels=16,
        frozen_bn=False,
        last_conv=False,
        score_thresh=0.05,
        detections_per_img=10,
        data={"data_dir": "d", "train_split": "train", "val_split": "val"},
    )
    old = {k: v for k, v in spec.to_json().items() if k != "last_conv"}
    for record, channels in ((spec.to_json(), 160), (old, 960)):
        model = build_detector(DetectorSpec.from_json(record, "detector.json"))
        assert model.backbone.fpn.inner_blocks[2][0].in_channels == channels
