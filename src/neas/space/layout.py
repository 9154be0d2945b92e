"""The network layout, described once: the pieces a network runs, in order (docs/DESIGN.md, "One layout").

Every network of the project has one layout: the stem (3x3 conv + BN + Swish), the fixed block L0
and the shared layers L1..Ls, run once; then, for each path k, its private layers L{s+1}..Ln and its
head (last block, global pool, conv head, classifier). :func:`arch_pieces` walks it for one ensemble:
the supernet's forward, the plain ensemble's modules, the cost and latency of an ensemble and the
candidate evaluator's prefixes all follow it. :func:`space_pieces` lists every piece a space can run:
the modules the supernet holds, the entries the cost and latency tables measure.

A skip layer is an identity: it runs nothing and holds no weights. The walkers leave it out unless
asked (``skips=True``), so no network or table tests for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from neas.space.arch import EnsembleArch
from neas.space.ops import Op
from neas.space.space import SearchSpace

__all__ = ["FIRST", "HEAD", "LAYER", "STEM", "Piece", "arch_pieces", "path_pieces", "space_pieces", "trunk_pieces"]

STEM, FIRST, LAYER, HEAD = "stem", "L0", "layer", "head"


@dataclass(frozen=True)
class Piece:
    """One piece of a network: what runs, and where."""

    kind: str  # STEM, FIRST (the fixed block L0), LAYER (a searchable layer) or HEAD
    path: int | None = None  # None: run once for every path (stem, L0, shared layers); k: path k's own
    index: int = 0  # LAYER: the searchable layer L{index}, 1-based
    op: Op | None = None  # LAYER: the op it runs there

    @property
    def runs(self) -> bool:
        """False for a skip layer, which passes its input on unchanged."""
        return self.op is None or not self.op.is_skip

    @property
    def weights(self) -> tuple:
        """What selects the piece's weights: an op of a layer is one module whether it is shared or
        private and whichever path runs it; each path has its own head."""
        return (HEAD, self.path) if self.kind == HEAD else (self.kind, self.index, self.op)

    def __str__(self) -> str:
        name = f"L{self.index}:{self.op}" if self.kind == LAYER else self.kind
        return name if self.path is None else f"{name}@path{self.path}"


@lru_cache(maxsize=8192)
def arch_pieces(arch: EnsembleArch, skips: bool = False) -> tuple[Piece, ...]:
    """The pieces ensemble ``arch`` runs, in forward order: the stem, L0 and the shared layers
    (``path`` None), then each path's private layers and head (``path`` k). Skip layers only with
    ``skips``. The arch is not validated against a space here."""
    pieces = [Piece(STEM), Piece(FIRST)]
    pieces += [Piece(LAYER, None, index, op) for index, op in enumerate(arch.shared, start=1)]
    for k in range(arch.num_paths):
        pieces += [Piece(LAYER, k, index, op) for index, op in enumerate(arch.private(k), start=arch.split + 1)]
        pieces.append(Piece(HEAD, k))
    return tuple(p for p in pieces if skips or p.runs)


def trunk_pieces(arch: EnsembleArch, skips: bool = False) -> tuple[Piece, ...]:
    """The pieces run once for every path: stem, L0, the shared layers."""
    return tuple(p for p in arch_pieces(arch, skips) if p.path is None)


def path_pieces(arch: EnsembleArch, k: int, skips: bool = False) -> tuple[Piece, ...]:
    """Path ``k``'s own pieces, run on the trunk's output: its private layers, then its head."""
    return tuple(p for p in arch_pieces(arch, skips) if p.path == k)


def space_pieces(space: SearchSpace, skips: bool = False) -> tuple[Piece, ...]:
    """Every piece ``space`` can run, in forward order: the stem, L0, every op of L1..Ln (``path``
    None: whichever paths run it, it is one module), then each path's head."""
    pieces = [Piece(STEM), Piece(FIRST)]
    pieces += [Piece(LAYER, None, spec.index, op) for spec in space.layers for op in spec.ops]
    pieces += [Piece(HEAD, k) for k in range(space.num_paths)]
    return tuple(p for p in pieces if skips or p.runs)
