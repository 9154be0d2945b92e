"""The K-path supernet: one module per (layer, op), K heads (docs/DESIGN.md §4).

The supernet is stateless with respect to the architecture: ``supernet(x, arch)`` runs the
stem, L0 and the shared layers L1..Ls **once**, then each path's private layers and head, and
returns the K path logits.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

import torch
import torch.nn as nn
from timm.models._efficientnet_builder import efficientnet_init_weights

from neas.nn import make_block, make_classifier, make_conv_head, make_first_block, make_last_block, make_stem, pool_classify, scale_grad
from neas.space import EnsembleArch, Op, SearchSpace

if TYPE_CHECKING:
    from neas.ensemble import EnsembleNet

__all__ = ["Supernet"]

_LEGACY_PREFIXES = {"head_convs.": "last_blocks."}  # renamed after neas 0.1.0's first supernet files


@lru_cache(maxsize=8192)
def _validated(space: SearchSpace, arch: EnsembleArch) -> EnsembleArch:
    return arch.validate(space)


class Supernet(nn.Module):
    """Weight-sharing supernet of an ensemble search space.

    Args:
        space: the search space.
        num_classes: classifier outputs of every head.
        scale_shared_grad: divide the gradient entering the shared part by K.
    """

    def __init__(self, space: SearchSpace, num_classes: int, scale_shared_grad: bool = True):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.space = space
        self.num_classes = num_classes
        self.scale_shared_grad = scale_shared_grad
        self.conv_stem, self.bn1 = make_stem(space)
        self.first_block = make_first_block(space)
        # layers[i][str(op)]: the block of op at layer L{i+1}; skip has no module.
        self.layers = nn.ModuleList(
            nn.ModuleDict({str(op): make_block(spec, op) for op in spec.ops if not op.is_skip}) for spec in space.layers
        )
        k = space.num_paths
        self.last_blocks = nn.ModuleList(make_last_block(space) for _ in range(k))
        self.conv_heads = nn.ModuleList(make_conv_head(space) for _ in range(k))
        self.classifiers = nn.ModuleList(make_classifier(space, num_classes) for _ in range(k))
        efficientnet_init_weights(self)  # timm's (TensorFlow) init: fan-out normal convs, unit BN

    @staticmethod
    def upgrade_state_dict(tensors: dict) -> dict:
        """A state dict of an older supernet file with today's key names."""
        out = {}
        for key, value in tensors.items():
            for old, new in _LEGACY_PREFIXES.items():
                if key.startswith(old):
                    key = new + key[len(old):]
            out[key] = value
        return out

    def block(self, index: int, op: Op) -> "nn.Module | None":
        """The module of ``op`` at layer ``L{index}``; ``None`` for skip."""
        return None if op.is_skip else self.layers[index - 1][str(op)]

    def forward_shared(self, x: torch.Tensor, arch: EnsembleArch) -> torch.Tensor:
        """Stem, L0 and L1..L{split}: (B, 3, H, W) -> the shared feature map."""
        _validated(self.space, arch)
        x = self.first_block(self.bn1(self.conv_stem(x)))
        for index, op in enumerate(arch.shared, start=1):
            if not op.is_skip:
                x = self.layers[index - 1][str(op)](x)
        return x

    def forward_path(self, x: torch.Tensor, arch: EnsembleArch, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Path ``k`` from the shared feature map: its private layers and head.

        Returns:
            logits (B, num_classes) and pooled penultimate features (B, feature_channels).
        """
        for index, op in enumerate(arch.private(k), start=arch.split + 1):
            if not op.is_skip:
                x = self.layers[index - 1][str(op)](x)
        x = self.last_blocks[k](x)
        return pool_classify(x, self.conv_heads[k], self.classifiers[k], self.space.dropout, self.training)

    def forward(self, x: torch.Tensor, arch: EnsembleArch, return_features: bool = False):
        """Runs ensemble ``arch``: (B, 3, H, W) -> K logits (B, num_classes).

        With ``return_features`` also returns the K pooled penultimate features.
        """
        shared = self.forward_shared(x, arch)
        if self.scale_shared_grad:
            shared = scale_grad(shared, 1.0 / arch.num_paths)
        outs = [self.forward_path(shared, arch, k) for k in range(arch.num_paths)]
        logits = [o[0] for o in outs]
        return (logits, [o[1] for o in outs]) if return_features else logits

    def compile_blocks(self, **options) -> None:
        """``torch.compile`` (in place, so weights and keys are unchanged) every module a sampled
        ensemble is built from — each (layer, op) block, L0, the stem and the heads — once; every
        ensemble then reuses the compiled blocks, whatever its shape."""
        for module in [self.conv_stem, self.bn1, self.first_block, *(m for layer in self.layers for m in layer.values()),
                       *self.last_blocks, *self.conv_heads, *self.classifiers]:
            module.compile(**options)

    def used_modules(self, arch: EnsembleArch) -> list[nn.Module]:
        """Every module that ``arch`` runs (stem, L0, its blocks, its heads)."""
        _validated(self.space, arch)
        mods = [self.conv_stem, self.bn1, self.first_block]
        for index in range(1, self.space.num_layers + 1):
            for op in set(arch.combination(index)):
                if not op.is_skip:
                    mods.append(self.layers[index - 1][str(op)])
        return mods + [*self.last_blocks, *self.conv_heads, *self.classifiers]

    def _ensemble_pairs(self, net: "EnsembleNet"):
        """(the plain ensemble's module, the supernet module that holds its weights) for every module."""
        arch = net.arch
        yield net.conv_stem, self.conv_stem
        yield net.bn1, self.bn1
        trunk = [self.first_block] + [self.block(i, op) for i, op in enumerate(arch.shared, start=1) if not op.is_skip]
        yield from zip(net.sharing_blocks[0], trunk, strict=True)
        for k in range(arch.num_paths):
            private = [self.block(i, op) for i, op in enumerate(arch.private(k), start=arch.split + 1) if not op.is_skip]
            yield from zip(net.blocks[k][0], private + [self.last_blocks[k]], strict=True)
            yield net.conv_heads[k], self.conv_heads[k]
            yield net.classifiers[k], self.classifiers[k]

    @torch.no_grad()
    def copy_into(self, net: "EnsembleNet") -> "EnsembleNet":
        """Copies the weights and BN statistics of ``net``'s arch into the plain ensemble ``net``."""
        from neas.errors import NeasError

        if net.space != self.space:
            raise NeasError(f"cannot inherit: the supernet's space {self.space.name!r} differs from {net.space.name!r}")
        if net.num_classes != self.num_classes:
            raise NeasError(f"cannot inherit: the supernet has {self.num_classes} classes, this ensemble {net.num_classes}")
        for own, theirs in self._ensemble_pairs(net):
            own.load_state_dict(theirs.state_dict())
        return net

    def extract(self, arch: EnsembleArch) -> "EnsembleNet":
        """The plain ensemble network of ``arch`` with this supernet's weights and BN statistics."""
        from neas.ensemble import build_ensemble

        return self.copy_into(build_ensemble(self.space, arch, self.num_classes, self.scale_shared_grad))
