"""Thin builders over timm's EfficientNet blocks (docs/DESIGN.md §2).

Every network of the project (supernet, plain ensemble, released checkpoints) gets its
modules from these functions, so a block's parameters have the same names and shapes
everywhere and weights move between them by ``load_state_dict``.
"""

from __future__ import annotations

from functools import partial

import torch.nn as nn
from timm.layers import BatchNormAct2d, make_divisible
from timm.models._efficientnet_blocks import ConvBnAct, DepthwiseSeparableConv, InvertedResidual, SqueezeExcite

from neas.nn.heads import PathHead
from neas.space.ops import Op
from neas.space.space import LayerSpec, SearchSpace

__all__ = [
    "SE_LAYER",
    "make_block",
    "make_classifier",
    "make_conv_head",
    "make_first_block",
    "make_head",
    "make_last_block",
    "make_stem",
]

# SE of the released models: reduce to make_divisible(0.25 * mid, 8) with ReLU, hard-sigmoid gate.
SE_LAYER = partial(SqueezeExcite, rd_round_fn=make_divisible, force_act_layer=nn.ReLU, gate_layer="hard_sigmoid")
ACT_LAYER = nn.SiLU  # Swish


def make_stem(space: SearchSpace) -> tuple[nn.Conv2d, nn.Module]:
    """3x3 conv (no bias) and BN + Swish: ``conv_stem`` and ``bn1``."""
    out = space.channels(space.stem_channels)
    conv = nn.Conv2d(space.in_channels, out, 3, stride=space.stem_stride, padding=1, bias=False)
    return conv, BatchNormAct2d(out, act_layer=ACT_LAYER, inplace=True)


def make_first_block(space: SearchSpace) -> DepthwiseSeparableConv:
    """L0: dw3x3 + BN + Swish, SE, pw1x1 + BN, residual when widths match."""
    return DepthwiseSeparableConv(
        space.channels(space.stem_channels),
        space.channels(space.first_block_channels),
        dw_kernel_size=3,
        stride=1,
        act_layer=ACT_LAYER,
        se_layer=SE_LAYER,
    )


def make_block(spec: LayerSpec, op: Op) -> InvertedResidual | nn.Identity:
    """The MBConv of ``op`` at layer ``spec``; an identity for skip."""
    if op.is_skip:
        return nn.Identity()
    return InvertedResidual(
        spec.in_channels,
        spec.out_channels,
        dw_kernel_size=op.kernel,
        stride=spec.stride,
        exp_ratio=float(op.expansion),
        act_layer=ACT_LAYER,
        se_layer=SE_LAYER,
    )


def make_last_block(space: SearchSpace) -> ConvBnAct:
    """Per-path last block before pooling: 1x1 conv + BN + Swish to ``head_channels`` (the
    released '960 conv', stored as the last block of each path)."""
    return ConvBnAct(space.last_channels, space.channels(space.head_channels), 1, act_layer=ACT_LAYER)


def make_conv_head(space: SearchSpace) -> nn.Conv2d:
    """Per-path 1x1 conv with bias after global pooling (Swish follows, no BN): timm's ``conv_head``."""
    return nn.Conv2d(space.channels(space.head_channels), space.channels(space.feature_channels), 1, bias=True)


def make_classifier(space: SearchSpace, num_classes: int) -> nn.Linear:
    return nn.Linear(space.channels(space.feature_channels), num_classes)


def make_head(space: SearchSpace, num_classes: int) -> PathHead:
    """A path's head: :func:`make_last_block`, pool, :func:`make_conv_head`, :func:`make_classifier`."""
    return PathHead(make_last_block(space), make_conv_head(space), make_classifier(space, num_classes), space.dropout)
