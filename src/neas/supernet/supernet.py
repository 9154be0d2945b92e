"""The K-path supernet: one module per (layer, op), K heads (docs/DESIGN.md §4).

The supernet is stateless with respect to the architecture: ``supernet(x, arch)`` walks the layout
of ``arch`` (:func:`neas.space.layout.arch_pieces`): the stem, L0 and the shared layers L1..Ls
**once**, then each path's private layers and head, and returns the K path logits.
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn as nn
from timm.models._efficientnet_builder import efficientnet_init_weights

from neas.ensemble import EnsembleNet, build_ensemble
from neas.errors import NeasError
from neas.nn import PieceSite, make_piece, run_layout, run_pieces
from neas.space import (
    FIRST,
    HEAD,
    LAYER,
    STEM,
    EnsembleArch,
    Piece,
    SearchSpace,
    arch_pieces,
    path_pieces,
    space_pieces,
    trunk_pieces,
)

__all__ = ["Supernet"]


def _site(piece: Piece, dropout: float) -> PieceSite:
    """Where :class:`Supernet` registers the modules of ``piece``."""
    if piece.kind == STEM:
        return PieceSite(STEM, ("conv_stem", "bn1"))
    if piece.kind == HEAD:
        k = piece.path
        return PieceSite(HEAD, (f"last_blocks.{k}", f"conv_heads.{k}", f"classifiers.{k}"), dropout)
    return PieceSite(piece.kind, ("first_block",) if piece.kind == FIRST else (f"layers.{piece.index - 1}.{piece.op}",))


@lru_cache(maxsize=8192)
def _validated(space: SearchSpace, arch: EnsembleArch) -> EnsembleArch:
    return arch.validate(space)


class Supernet(nn.Module):
    """Weight-sharing supernet of an ensemble search space: one module per (layer, op) and K heads.

    Args:
        space: the search space.
        num_classes: classifier outputs of every head.
        scale_shared_grad: divide the gradient entering the shared part by K.

    It holds no "active" subnet: ``supernet(x, arch)`` runs ensemble ``arch`` on ``x`` (B, 3, S, S) and
    returns its K logits, each (B, num_classes), the shared part run once; :meth:`extract` gives the
    plain :class:`~neas.ensemble.model.EnsembleNet` of an arch with the supernet's weights.

    Example:
        >>> import torch
        >>> from neas import EnsembleArch, SearchSpace, Supernet
        >>> space = SearchSpace.preset("tiny")
        >>> supernet = Supernet(space, num_classes=10)
        >>> logits = supernet(torch.zeros(2, 3, 32, 32), EnsembleArch.sample(space, 0))
        >>> len(logits), logits[0].shape
        (2, torch.Size([2, 10]))
    """

    def __init__(self, space: SearchSpace, num_classes: int, scale_shared_grad: bool = True):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.space = space
        self.num_classes = num_classes
        self.scale_shared_grad = scale_shared_grad
        modules = {piece: make_piece(space, piece, num_classes) for piece in space_pieces(space)}
        self.conv_stem, self.bn1 = modules[Piece(STEM)]
        self.first_block = modules[Piece(FIRST)]
        # layers[i][str(op)]: the block of op at layer L{i+1}; skip runs nothing and has no module.
        self.layers = nn.ModuleList(nn.ModuleDict() for _ in space.layers)
        for piece, module in modules.items():
            if piece.kind == LAYER:
                self.layers[piece.index - 1][str(piece.op)] = module
        heads = [modules[Piece(HEAD, k)] for k in range(space.num_paths)]
        self.last_blocks = nn.ModuleList(head.last_block for head in heads)
        self.conv_heads = nn.ModuleList(head.conv_head for head in heads)
        self.classifiers = nn.ModuleList(head.classifier for head in heads)
        efficientnet_init_weights(self)  # timm's (TensorFlow) init: fan-out normal convs, unit BN
        # by piece.weights: paths, not modules, so nothing is held outside the tree
        self._sites = {piece.weights: _site(piece, space.dropout) for piece in modules}

    def piece_module(self, piece: Piece) -> nn.Module:
        """The module that runs ``piece`` (any path's op of a layer is the same module): a registered
        module, or for the stem and a head one built now over the registered ones."""
        return self._sites[piece.weights].module(self)

    def run_piece(self, piece: Piece, x: torch.Tensor):
        """Runs ``piece`` on its input with the modules registered now (a head: logits and features)."""
        return self._sites[piece.weights].run(self, x)

    def forward_shared(self, x: torch.Tensor, arch: EnsembleArch) -> torch.Tensor:
        """Stem, L0 and L1..L{split}: (B, 3, H, W) -> the shared feature map."""
        _validated(self.space, arch)
        return run_pieces(trunk_pieces(arch), self.run_piece, x)

    def forward_path(self, x: torch.Tensor, arch: EnsembleArch, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Path ``k`` from the shared feature map: its private layers and head.

        Returns:
            logits (B, num_classes) and pooled penultimate features (B, feature_channels).
        """
        return run_pieces(path_pieces(arch, k), self.run_piece, x)

    def forward(self, x: torch.Tensor, arch: EnsembleArch, return_features: bool = False):
        """Runs ensemble ``arch``: (B, 3, H, W) -> K logits (B, num_classes).

        With ``return_features`` also returns the K pooled penultimate features.
        """
        _validated(self.space, arch)
        outs = run_layout(arch, self.run_piece, x, self.scale_shared_grad)
        logits = [o[0] for o in outs]
        return (logits, [o[1] for o in outs]) if return_features else logits

    def compile_blocks(self, **options) -> None:
        """``torch.compile`` (in place, so weights and keys are unchanged) every weighted module a
        sampled ensemble is built from — the stem's conv and BN, L0, each (layer, op) block, each
        head's last block, conv head and classifier — once; every ensemble then reuses the compiled
        modules, whatever its shape. The head's pooling and dropout stay eager."""
        blocks = [block for layer in self.layers for block in layer.values()]
        for module in [
            self.conv_stem,
            self.bn1,
            self.first_block,
            *blocks,
            *self.last_blocks,
            *self.conv_heads,
            *self.classifiers,
        ]:
            module.compile(**options)

    def used_modules(self, arch: EnsembleArch) -> list[nn.Module]:
        """Every registered module that ``arch`` runs, in forward order: the stem's conv and BN, L0,
        its blocks, each head's last block, conv head and classifier."""
        _validated(self.space, arch)
        return list(dict.fromkeys(m for piece in arch_pieces(arch) for m in self._sites[piece.weights].parts(self)))

    @torch.no_grad()
    def copy_into(self, net: EnsembleNet) -> EnsembleNet:
        """Copies the weights and BN statistics of ``net``'s arch into the plain ensemble ``net``."""
        if net.space != self.space:
            raise NeasError(f"cannot inherit: the supernet's space {self.space.name!r} differs from {net.space.name!r}")
        if net.num_classes != self.num_classes:
            raise NeasError(
                f"cannot inherit: the supernet has {self.num_classes} classes, this ensemble {net.num_classes}"
            )
        for piece in arch_pieces(net.arch):
            net.piece_module(piece).load_state_dict(self.piece_module(piece).state_dict())
        return net

    def extract(self, arch: EnsembleArch) -> EnsembleNet:
        """The plain ensemble network of ``arch`` with this supernet's weights and BN statistics."""
        return self.copy_into(build_ensemble(self.space, arch, self.num_classes, self.scale_shared_grad))
