"""The layout in modules (``neas.space.layout``): the module of each piece, where a network registers
it (:class:`PieceSite`), the forward pass of an ensemble given how to run each piece (the supernet's
and the plain ensemble's), and a walk that runs every piece of a space once on the input it sees in
a network (what the cost and latency tables measure)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.nn as nn

from neas.nn.blocks import make_block, make_first_block, make_head, make_stem
from neas.nn.grad import scale_grad
from neas.nn.heads import PathHead, run_head
from neas.space.arch import EnsembleArch
from neas.space.layout import FIRST, HEAD, LAYER, STEM, Piece, path_pieces, space_pieces, trunk_pieces
from neas.space.space import SearchSpace

__all__ = ["PieceSite", "make_piece", "measure_pieces", "run_layout", "run_pieces", "submodule"]

Value = TypeVar("Value")
RunPiece = Callable[[Piece, torch.Tensor], Any]  # runs a piece on its input: a network's ``run_piece``
torch.fx.wrap("scale_grad")  # one call in a torch.fx graph: its branch on requires_grad cannot be traced


def make_piece(space: SearchSpace, piece: Piece, num_classes: int) -> nn.Module:
    """A new module for ``piece``: the stem as ``Sequential(conv_stem, bn1)``, L0, a layer's block
    (an identity for skip), or a :class:`~neas.nn.heads.PathHead`."""
    if piece.kind == STEM:
        return nn.Sequential(*make_stem(space))
    if piece.kind == FIRST:
        return make_first_block(space)
    if piece.kind == LAYER:
        return make_block(space.layer(piece.index), piece.op)
    if piece.kind == HEAD:
        return make_head(space, num_classes)
    raise ValueError(f"unknown piece kind {piece.kind!r}")


def submodule(root: nn.Module, path: str) -> nn.Module:
    """``root.get_submodule(path)`` through the ``_modules`` dicts, without its per-level checks: it
    runs for every piece of every forward, where ``get_submodule`` made a tiny network's forward
    measurably slower (docs/DECISIONS.md, "Modules in the tree")."""
    for name in path.split("."):
        root = root._modules[name]
    return root


@dataclass(frozen=True)
class PieceSite:
    """Where a network registers the modules of one piece: submodule paths (``"blocks.1.0.3"``),
    resolved at each use. Nothing holds a module outside the network's tree, so a module replaced
    in it (BN freezing, fusion, quantization) is the one that runs.

    Attributes:
        kind: the piece's kind (STEM, FIRST, LAYER or HEAD).
        paths: the stem's conv and BN; a head's last block, conv head and classifier; else the module.
        dropout: a head's dropout probability before its classifier while training.
    """

    kind: str
    paths: tuple[str, ...]
    dropout: float = 0.0

    def parts(self, root: nn.Module) -> list[nn.Module]:
        """The modules registered at ``paths`` in ``root``, now."""
        return [submodule(root, path) for path in self.paths]

    def module(self, root: nn.Module) -> nn.Module:
        """One module that runs the piece, over the registered parts: for the stem a new
        ``Sequential(conv_stem, bn1)``, for a head a new :class:`~neas.nn.heads.PathHead`."""
        parts = self.parts(root)
        if self.kind == STEM:
            return nn.Sequential(*parts)
        return PathHead(*parts, self.dropout) if self.kind == HEAD else parts[0]

    def run(self, root: nn.Module, x: torch.Tensor):
        """What :meth:`module` computes on ``x``, building no module (a head: logits and features)."""
        if self.kind == HEAD:
            return run_head(x, *self.parts(root), self.dropout)
        for part in self.parts(root):  # the stem: conv, then BN + Swish
            x = part(x)
        return x


def run_pieces(pieces: tuple[Piece, ...], run_piece: RunPiece, x: torch.Tensor):
    """Runs ``pieces`` in turn on ``x``; what the last one returns (a head: logits and features)."""
    for piece in pieces:
        x = run_piece(piece, x)
    return x


def run_layout(
    arch: EnsembleArch, run_piece: RunPiece, x: torch.Tensor, scale_shared_grad: bool = True
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The forward pass of ensemble ``arch``: the trunk once, then each path from the trunk's output.

    Args:
        run_piece: runs a piece on its input (a network's ``run_piece``).
        x: (B, 3, H, W) images.
        scale_shared_grad: divide the gradient entering the trunk by K (docs/DESIGN.md §4).

    Returns:
        per path: logits (B, num_classes) and pooled penultimate features (B, feature_channels).
    """
    shared = run_pieces(trunk_pieces(arch), run_piece, x)
    if scale_shared_grad:
        shared = scale_grad(shared, 1.0 / arch.num_paths)
    return [run_pieces(path_pieces(arch, k), run_piece, shared) for k in range(arch.num_paths)]


def measure_pieces(
    space: SearchSpace,
    x: torch.Tensor,
    measure: Callable[[Piece, nn.Module, torch.Tensor], tuple[Value, object]],
    num_classes: int,
) -> dict[Piece, Value]:
    """Builds every piece of ``space`` that runs (one head: the paths' heads are alike) and calls
    ``measure(piece, module, input) -> (value, output)`` on the input the piece sees in a network:
    each op of a layer gets the previous layer's output, x is the input of the stem.

    Returns:
        ``{piece: value}`` in forward order.
    """
    values, layer_input, index = {}, x, None
    for piece in space_pieces(space):
        if piece.kind == HEAD and piece.path > 0:
            continue
        if piece.kind != LAYER or piece.index != index:  # a new layer starts from the last output
            layer_input, index = x, piece.index
        values[piece], x = measure(piece, make_piece(space, piece, num_classes), layer_input)
    return values
