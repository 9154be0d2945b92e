"""Building blocks (thin wrappers over timm), the per-path head, the module of each layout piece and
where a network registers it, BN recalibration, gradient scaling."""

from neas.nn.blocks import (
    make_block,
    make_classifier,
    make_conv_head,
    make_first_block,
    make_head,
    make_last_block,
    make_stem,
)
from neas.nn.bn import batch_norms, recalibrate_bn, recalibrating
from neas.nn.grad import scale_grad
from neas.nn.heads import GlobalAvgPool, PathHead, run_head
from neas.nn.layout import PieceSite, make_piece, measure_pieces, run_layout, run_pieces, submodule

__all__ = [
    "GlobalAvgPool",
    "PathHead",
    "PieceSite",
    "batch_norms",
    "make_block",
    "make_classifier",
    "make_conv_head",
    "make_first_block",
    "make_head",
    "make_last_block",
    "make_piece",
    "make_stem",
    "measure_pieces",
    "recalibrate_bn",
    "recalibrating",
    "run_head",
    "run_layout",
    "run_pieces",
    "scale_grad",
    "submodule",
]
