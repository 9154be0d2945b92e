"""A torchvision RetinaNet over a found ensemble's multi-scale features (issue 27, item 2).

The detector is torchvision's ``RetinaNet`` with a :class:`FeatureBackbone`: a *body* that returns
the maps at output strides 8, 16 and 32 (C3-C5) as an ordered dict, then torchvision's
``FeaturePyramidNetwork`` with ``LastLevelP6P7`` (P3-P7), as in ``retinanet_resnet50_fpn``
(Lin et al. 2017, §4). Two bodies:

- :func:`ensemble_body`: :class:`~neas.ensemble.features.EnsembleFeatures` of a plain
  ensemble (``mode`` mean / concat / path:J); the modules that never run for that mode (the
  classifier heads, the last 1x1 convs, the private layers of paths ``path:J`` leaves out) are
  dropped, so every parameter gets a gradient (DistributedDataParallel's default requirement).
- :func:`timm_body`: a timm network with ``features_only=True`` at the same strides (the baseline),
  built the same way: stage outputs, the final 1x1 conv (MobileNetV3's 960 conv) left out.

:func:`load_backbone_net` builds the ensemble from an arch and, optionally, the weights of a
``neas retrain`` run or a released checkpoint (nothing unpickled beyond tensors).
"""

from __future__ import annotations

import pickle
from collections import OrderedDict
from pathlib import Path

import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from safetensors import SafetensorError
from timm.layers import freeze_batch_norm_2d
from timm.models._efficientnet_blocks import ConvBnAct
from torchvision.models.detection import RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from neas.ensemble.features import EnsembleFeatures
from neas.ensemble.io import load_ensemble
from neas.ensemble.model import EnsembleNet, build_ensemble
from neas.ensemble.official import arch_name, load_official
from neas.errors import NeasError, show, suggest
from neas.space import SearchSpace, resolve_arch_and_space

__all__ = [
    "DEFAULT_ANCHOR_SIZES",
    "STRIDES",
    "ExportableTransform",
    "FeatureBackbone",
    "build_retinanet",
    "describe_backbone",
    "ensemble_body",
    "load_backbone_net",
    "timm_body",
]

DEFAULT_ANCHOR_SIZES = ((32,), (64,), (128,), (256,), (512,))  # torchvision's, P3..P7
STRIDES = (8, 16, 32)  # the body's maps, C3..C5: RetinaNet skips P2 (too many anchors, §4)
ASPECT_RATIOS = (0.5, 1.0, 2.0)
SCALES_PER_OCTAVE = 3  # anchor sizes x 2 ** (0, 1/3, 2/3), as retinanet_resnet50_fpn


class FeatureBackbone(nn.Module):
    """A body's ordered maps (C3-C5) through a FPN with P6/P7: what torchvision's RetinaNet takes.

    Args:
        body: (B, 3, H, W) -> ordered dict of maps at strides 8, 16, 32.
        in_channels_list: the channel count of each of the body's maps, in order.
        out_channels: the FPN's width (256 in the paper).

    Attributes:
        out_channels: the FPN's width (RetinaNet reads it to build its heads).
    """

    def __init__(self, body: nn.Module, in_channels_list: list[int], out_channels: int = 256):
        super().__init__()
        self.body = body
        self.fpn = FeaturePyramidNetwork(
            list(in_channels_list), out_channels, extra_blocks=LastLevelP6P7(out_channels, out_channels)
        )
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        """(B, 3, H, W) -> P3..P7, each (B, out_channels, H / s, W / s) for s = 8 .. 128."""
        return self.fpn(self.body(x))


def _used_modules(module: nn.Module, x: torch.Tensor) -> set[int]:
    """The ids of the submodules of ``module`` that run in one forward pass on ``x`` (eval, no grad)."""
    ran: set[int] = set()
    handles = [m.register_forward_hook(lambda m, i, o: ran.add(id(m))) for m in module.modules()]
    training = module.training
    try:
        with torch.no_grad():
            module.eval()(x)
    finally:
        module.train(training)
        for h in handles:
            h.remove()
    return ran


def _prune(module: nn.Module, used: set[int]) -> None:
    """Replaces by ``nn.Identity`` every child of ``module`` in which nothing in ``used`` runs."""
    for name, child in list(module.named_children()):
        if id(child) in used:
            continue
        if any(id(m) in used for m in child.modules()):
            _prune(child, used)
        else:
            module._modules[name] = nn.Identity()  # keeps a ModuleList's indices


def ensemble_body(net: EnsembleNet, mode: str = "mean") -> tuple[nn.Module, list[int]]:
    """The maps of ``net`` at strides 8, 16, 32 (keys ``"8"``, ``"16"``, ``"32"``) and their channels.

    ``net``'s modules are reused (not copied); the ones that never run for ``mode`` are removed from
    it: the heads (last block, 1x1 conv, classifier) and, for ``path:J``, the other paths' layers.
    """
    body = EnsembleFeatures(net, strides=STRIDES, mode=mode)
    size = 2 * max(STRIDES)  # any size works; the smallest that reaches every stride is cheapest
    _prune(net, _used_modules(body, torch.zeros(1, net.space.in_channels, size, size)))
    return body, list(body.out_channels)


class _TimmFeatures(nn.Module):
    """A timm ``features_only`` network whose list of maps is returned as ``{"0": .., "1": .., ...}``."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        return OrderedDict((str(i), f) for i, f in enumerate(self.net(x)))


def timm_body(name: str, weights: str | Path | None = None, *, last_conv: bool = False) -> tuple[nn.Module, list[int]]:
    """timm's ``name`` as a body: its stage outputs at strides 8, 16, 32 under the keys ``"0"``, ``"1"``,
    ``"2"``, and their channel counts. ``weights``: a timm checkpoint of the classification network
    (safetensors, or a torch file read with ``weights_only=True``: nothing unpickled beyond tensors),
    loaded by timm's own pretrained loader; random init without (nothing is downloaded).

    Built as :func:`ensemble_body` builds a neas body: the stride-32 map is the last stage's output,
    never the network's final 1x1 conv. timm lists MobileNetV3's 160 -> 960 ``ConvBnAct`` (its "960
    conv", which neas's space counts as the head) as a stage of its own; it is removed
    (:func:`_drop_last_conv`), so the map is the 160-channel stage output, as NEAS's is. ``last_conv``
    keeps it (the bodies of detectors trained before issue 40)."""
    if not isinstance(name, str) or not timm.is_model(name):
        raise NeasError(
            f"timm model {show(name)}: not a model timm {timm.__version__} knows"
            f"{suggest(name, timm.list_models())}; see timm.list_models()"
        )
    try:
        reductions = timm.create_model(name, pretrained=False, features_only=True).feature_info.reduction()
        indices = [reductions.index(s) for s in STRIDES if s in reductions]
        if len(indices) != len(STRIDES):
            raise NeasError(
                f"timm model {name!r}: its feature maps have strides {reductions}; a RetinaNet body needs "
                f"{list(STRIDES)}"
            )
        if weights is None:
            net = timm.create_model(name, pretrained=False, features_only=True, out_indices=indices)
    except (RuntimeError, AttributeError, TypeError) as exc:  # a model without feature extraction
        raise NeasError(f"timm model {name!r}: cannot return feature maps ({exc})") from None
    if weights is not None:  # built once, by timm's pretrained loader (its errors name the file)
        net = _timm_pretrained(name, Path(weights), indices)
    body = _TimmFeatures(net if last_conv else _drop_last_conv(net))
    with torch.no_grad():  # the channels after the drop: one tiny pass (timm's feature_info still lists 960)
        maps = body.eval()(torch.zeros(1, 3, 2 * max(STRIDES), 2 * max(STRIDES)))
    return body.train(), [int(m.shape[1]) for m in maps.values()]


def _drop_last_conv(net: nn.Module) -> nn.Module:
    """``net`` (a timm ``features_only`` network) without its final 1x1 conv where timm lists it as the
    last stage (MobileNetV3, MobileNetV4, FBNetV3, HardCoReNAS: a stage of one stride-1 1x1 ``ConvBnAct``
    without skip): that stage becomes ``nn.Identity``, so the stride-32 map is the stage before it (same
    stride). Networks whose last feature is a stage of blocks (ResNet, EfficientNet, MobileNetV2) are
    returned as they are."""
    last = net.feature_info.module_name()[-1]
    stage = net.get_submodule(last)
    blocks = list(stage) if isinstance(stage, nn.Sequential) else [stage]
    if len(blocks) != 1 or not isinstance(blocks[0], ConvBnAct) or blocks[0].has_skip:
        return net
    conv = blocks[0].conv
    if conv.kernel_size != (1, 1) or conv.stride != (1, 1):
        return net
    parent, _, child = last.rpartition(".")
    setattr(net.get_submodule(parent) if parent else net, child, nn.Identity())
    return net


def _timm_pretrained(name: str, weights: Path, indices: list) -> nn.Module:
    """``name``'s feature network with the classification weights of ``weights`` (timm's loader, strict)."""
    if not weights.is_file():
        raise NeasError(f"--backbone-weights {weights}: no such file (a timm checkpoint of {name})")
    overlay = {"file": str(weights)}
    try:
        return timm.create_model(
            name, pretrained=True, pretrained_cfg_overlay=overlay, features_only=True, out_indices=indices
        )
    except (RuntimeError, KeyError, ValueError, OSError, EOFError, pickle.UnpicklingError, SafetensorError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise NeasError(f"--backbone-weights {weights}: not a checkpoint of timm's {name} ({first[:200]})") from None


class ExportableTransform(GeneralizedRCNNTransform):
    """torchvision's detection transform (resize, normalise, batch), whose resize, when traced for ONNX,
    computes the resized size as eager mode does.

    Eager mode scales by ``min(min_size / shorter side, max_size / longer side)`` in float64 and floors
    ``side x scale``; torchvision's traced graph computes the scale in float32 and lets ``Resize`` floor
    ``side x scale`` again, which is a pixel short for many sizes (COCO's 375x500 becomes 799x1066, not
    800x1066; 26 of 60 random sizes at min/max 128/256), so the exported detector saw another image than
    PyTorch's. Here the traced size is computed in float64 from the traced shape and given to ``Resize``
    as a size. Eager mode and training are torchvision's code, unchanged."""

    def resize(self, image: torch.Tensor, target: dict | None = None) -> tuple[torch.Tensor, dict | None]:
        if not (torchvision._is_tracing() and target is None and self.fixed_size is None and not self.training):
            return super().resize(image, target)
        shape = torch._shape_as_tensor(image)[-2:].to(torch.float64)  # (H, W), dynamic in the graph
        limits = torch.tensor([float(self.min_size[-1]), float(self.max_size)], dtype=torch.float64)
        # 1-d tensors throughout: the exporter casts a 0-d operand of a division to float32
        scale = (limits / torch.stack([shape.min(), shape.max()])).min()
        size = torch.floor(shape * scale).to(torch.int64)
        return F.interpolate(image[None], size=(size[0], size[1]), mode="bilinear", align_corners=False)[0], None


def _exportable(transform: GeneralizedRCNNTransform) -> ExportableTransform:
    return ExportableTransform(
        transform.min_size,
        transform.max_size,
        transform.image_mean,
        transform.image_std,
        size_divisible=transform.size_divisible,
        fixed_size=transform.fixed_size,
        _skip_resize=transform._skip_resize,
    )


def _anchor_generator(anchor_sizes) -> AnchorGenerator:
    """Each level's sizes times 2 ** (0, 1/3, 2/3), 3 aspect ratios: 9 anchors per location."""
    sizes = tuple(
        tuple(int(s * 2 ** (i / SCALES_PER_OCTAVE)) for s in level for i in range(SCALES_PER_OCTAVE))
        for level in anchor_sizes
    )
    return AnchorGenerator(sizes, (ASPECT_RATIOS,) * len(sizes))


def build_retinanet(
    body: nn.Module,
    in_channels: list[int],
    num_classes: int,
    *,
    min_size: int = 800,
    max_size: int = 1333,
    fpn_channels: int = 256,
    anchor_sizes=DEFAULT_ANCHOR_SIZES,
    frozen_bn: bool = False,
    **retinanet_kwargs,
) -> RetinaNet:
    """torchvision's RetinaNet over ``body`` (FPN P3-P7 of width ``fpn_channels``).

    Args:
        body: (B, 3, H, W) -> ordered dict of 3 maps at strides 8, 16, 32 (:func:`ensemble_body`,
            :func:`timm_body`).
        in_channels: their channel counts.
        num_classes: classification outputs; a target's labels index them (torchvision's convention).
        min_size, max_size: RetinaNet's resize of each image (short side, long side cap).
        anchor_sizes: base anchor size per FPN level (5 levels), each times 2 ** (0, 1/3, 2/3).
        frozen_bn: replace, in place, the body's BatchNorm by frozen copies with its statistics and
            affine parameters (timm's ``freeze_batch_norm_2d``: torchvision's ``FrozenBatchNorm2d``,
            ``FrozenBatchNormAct2d`` for a ``BatchNormAct2d``), as torchvision does for a pretrained backbone.
        retinanet_kwargs: passed on (``score_thresh``, ``detections_per_img``, ``image_mean``, ...).

    The FPN and the heads are initialised by their torchvision constructors (the classification
    head's bias at the prior 0.01, §4 "Initialization").
    """
    levels = len(in_channels) + 2  # P6, P7
    if len(anchor_sizes) != levels:
        raise NeasError(
            f"anchor_sizes: {len(anchor_sizes)} levels given, the FPN has {levels} (P3..P7); e.g. "
            f"{DEFAULT_ANCHOR_SIZES}"
        )
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise NeasError(f"num_classes: expected a positive integer, got {show(num_classes)}")
    if frozen_bn:  # an ensemble finds its modules in its tree whenever they run: the frozen copies run
        body = freeze_batch_norm_2d(body)
    backbone = FeatureBackbone(body, in_channels, fpn_channels)
    model = RetinaNet(
        backbone,
        num_classes,
        min_size=min_size,
        max_size=max_size,
        anchor_generator=_anchor_generator(anchor_sizes),
        **retinanet_kwargs,
    )
    model.transform = _exportable(model.transform)  # eager mode unchanged; traced, the sizes of eager mode
    return model


def _same_structure(a: SearchSpace, b: SearchSpace) -> bool:
    """Whether two spaces build the same modules (the name, input size and dropout aside)."""
    ignored = ("name", "input_size", "dropout")
    return {k: v for k, v in a.to_dict().items() if k not in ignored} == {
        k: v for k, v in b.to_dict().items() if k not in ignored
    }


def load_backbone_net(
    arch,
    *,
    num_classes_hint: int | None = None,
    backbone_weights: str | Path | None = None,
    official_checkpoint: str | Path | None = None,
    space=None,
) -> EnsembleNet:
    """The ensemble ``arch`` (``neas-s``/``neas-m``/``neas-l`` or an ``arch.json``) in ``space``
    (default: the arch file's, else imagenet), in train mode.

    Args:
        num_classes_hint: the classifier's size when built from scratch (default 1000); the
            classifier is dropped by :func:`ensemble_body` anyway.
        backbone_weights: a ``neas retrain`` ``model.safetensors`` or its run directory; it must
            hold ``arch`` (and a space of the same structure).
        official_checkpoint: a released ``.pth.tar`` (read without unpickling code); imagenet space.
        space: a preset name, a YAML file or a ``SearchSpace``.
    """
    if backbone_weights is not None and official_checkpoint is not None:
        raise NeasError("give at most one of backbone_weights (a neas model.safetensors) and official_checkpoint")
    arch_obj, space = resolve_arch_and_space(arch, space)
    if official_checkpoint is not None:
        if not _same_structure(space, SearchSpace.preset("imagenet")):
            raise NeasError(
                f"official_checkpoint: the released models are in the imagenet space, arch {show(str(arch))} "
                f"is in space {space.name!r}"
            )
        return load_official(official_checkpoint, arch_obj).train()
    if backbone_weights is None:
        return build_ensemble(space, arch_obj, num_classes_hint or 1000).train()
    net, info = load_ensemble(backbone_weights, calibrated=False)
    if info.arch != arch_obj or not _same_structure(info.space, space):
        raise NeasError(
            f"backbone_weights {backbone_weights}: they are of {arch_name(info.arch)} in space {info.space.name!r}, "
            f"but arch {show(str(arch))} is {arch_name(arch_obj)} in space {space.name!r}; give the arch the "
            f"weights were trained with"
        )
    return net.train()


def describe_backbone(model: nn.Module, input_size: int | None = None) -> dict:
    """The cost of a detector's body (or of a body) on one ``input_size`` x ``input_size`` image
    (default: the detector's ``min_size``): ``{"macs", "params", "input_size", "counter"}``, MACs
    from ``torch.utils.flop_counter`` (FLOPs / 2, the convention of ``neas.cost``)."""
    from torch.utils.flop_counter import FlopCounterMode

    body = model.backbone.body if isinstance(model, RetinaNet) else model
    if input_size is None:
        input_size = int(model.transform.min_size[0]) if isinstance(model, RetinaNet) else 224
    param = next(body.parameters())
    x = torch.zeros(1, 3, input_size, input_size, device=param.device, dtype=param.dtype)
    training = body.training
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            body.eval()(x)
    finally:
        body.train(training)
    return {
        "macs": int(counter.get_total_flops() // 2),
        "params": sum(p.numel() for p in body.parameters()),
        "input_size": input_size,
        "counter": "torch.utils.flop_counter.FlopCounterMode / 2",
    }
