"""Search spaces, ops and ensemble architectures (plain Python, no ``torch.nn``)."""

from neas.space.arch import EnsembleArch, resolve_arch_and_space
from neas.space.layout import FIRST, HEAD, LAYER, STEM, Piece, arch_pieces, path_pieces, space_pieces, trunk_pieces
from neas.space.ops import SKIP, Op, parse_op
from neas.space.shrunk import ShrunkSpace
from neas.space.space import LayerSpec, SearchSpace, Stage, make_divisible

__all__ = [
    "FIRST",
    "HEAD",
    "LAYER",
    "SKIP",
    "STEM",
    "EnsembleArch",
    "LayerSpec",
    "Op",
    "Piece",
    "SearchSpace",
    "ShrunkSpace",
    "Stage",
    "arch_pieces",
    "make_divisible",
    "parse_op",
    "path_pieces",
    "resolve_arch_and_space",
    "space_pieces",
    "trunk_pieces",
]
