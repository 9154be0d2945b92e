"""Cost model: MACs, paper-convention FLOPs and params from a per-(layer, op) table (§5).

The table is built once per (space, input size, classes) by running each piece of the space
(``neas.space.layout``) once on a dummy input with forward hooks; an ensemble's cost is then the
sum of the entries of the pieces it runs: stem + L0 + shared layers once, private layers + head
per path.

Conventions:
    macs: multiply-accumulates of convolutions and linear layers (no bias), which is what
        ``torch.utils.flop_counter.FlopCounterMode`` reports divided by 2.
    paper_flops: the paper's tables (ptflops): conv/linear MACs plus bias, 2 per BN output
        element, 1 per ReLU output element, 1 per pooled input element (SE squeeze and the
        head's global pool); Swish, sigmoid gates, SE product and residual adds are free.
    params: trainable parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn as nn
from timm.models._efficientnet_blocks import SqueezeExcite

from neas.nn import GlobalAvgPool, measure_pieces
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
    trunk_pieces,
)

__all__ = ["Cost", "CostTable", "cost_table", "count_cost"]


@dataclass(frozen=True)
class Cost:
    """The cost of a network or of a part of one; costs add (``a + b``) and scale (``3 * a``).

    Args:
        macs: multiply-accumulates of one image's forward (convolutions and linear layers).
        paper_flops: FLOPs as the paper counts them: MACs plus one per output of a layer with a bias.
        params: parameters (BN's affine ones included).

    Example:
        >>> from neas import Cost
        >>> Cost(macs=10, params=2) + 2 * Cost(macs=1)
        Cost(macs=12, paper_flops=0, params=2)
    """

    macs: int = 0
    paper_flops: int = 0
    params: int = 0

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.macs + other.macs, self.paper_flops + other.paper_flops, self.params + other.params)

    def __mul__(self, n: int) -> Cost:
        return Cost(self.macs * n, self.paper_flops * n, self.params * n)

    __rmul__ = __mul__

    def to_json(self) -> dict:
        return {"macs": self.macs, "paper_flops": self.paper_flops, "params": self.params}


def _measure(piece: Piece, module: nn.Module, x: torch.Tensor) -> tuple[Cost, torch.Tensor]:
    """Runs ``module`` (eval mode) on ``x`` (batch 1) and counts its cost with hooks."""
    counts = {"macs": 0, "paper": 0}

    def hook(module, inputs, output):
        n = output.numel() if isinstance(output, torch.Tensor) else 0  # a head returns (logits, features)
        if isinstance(module, nn.Conv2d):
            macs = n * (module.in_channels // module.groups) * module.kernel_size[0] * module.kernel_size[1]
            counts["macs"] += macs
            counts["paper"] += macs + (n if module.bias is not None else 0)
        elif isinstance(module, nn.Linear):
            macs = n * module.in_features
            counts["macs"] += macs
            counts["paper"] += macs + (n if module.bias is not None else 0)
        elif isinstance(module, nn.BatchNorm2d):
            counts["paper"] += 2 * n
        elif isinstance(module, nn.ReLU):
            counts["paper"] += n
        elif isinstance(module, (SqueezeExcite, GlobalAvgPool)):
            counts["paper"] += inputs[0].numel()  # a global average pool (the SE's squeeze, the head's pool)

    handles = [m.register_forward_hook(hook) for m in module.modules()]
    try:
        with torch.no_grad():
            out = module.eval()(x)
    finally:
        for h in handles:
            h.remove()
    params = sum(p.numel() for p in module.parameters())
    return Cost(counts["macs"], counts["paper"], params), out


@dataclass(frozen=True)
class CostTable:
    """Costs of every piece of a space: the stem, L0, each (layer, op), one head."""

    stem: Cost
    first: Cost  # L0
    layers: tuple[dict, ...]  # layers[i][op] for layer L{i+1}; skip costs nothing
    head: Cost  # one path's head (last block, pool, conv head, classifier)

    @property
    def fixed(self) -> Cost:
        """The stem and L0, which every network runs once."""
        return self.stem + self.first

    def piece_cost(self, piece: Piece) -> Cost:
        if piece.kind == LAYER:
            return self.layers[piece.index - 1][piece.op]
        return {STEM: self.stem, FIRST: self.first, HEAD: self.head}[piece.kind]

    def cost(self, arch: EnsembleArch) -> Cost:
        """The sum over the pieces ``arch`` runs (a shared layer once)."""
        return sum((self.piece_cost(piece) for piece in arch_pieces(arch)), Cost())

    def step_costs(self, arch: EnsembleArch, order, metric: str = "macs") -> list[float]:
        """``metric`` of running the first j paths of ``order`` (j = 1..K): the trunk (stem, L0, the
        shared layers) once, plus each path's private layers and head: a cascade's step costs. The
        last equals :meth:`cost` of the whole ensemble."""
        running = getattr(sum((self.piece_cost(p) for p in trunk_pieces(arch)), Cost()), metric)
        steps = []
        for k in order:
            running += getattr(sum((self.piece_cost(p) for p in path_pieces(arch, k)), Cost()), metric)
            steps.append(float(running))
        return steps

    def first_step_floor(self, arch: EnsembleArch, metric: str = "macs") -> float:
        """The least a cascade of ``arch`` can cost per image: its cheapest path with the trunk."""
        return min(self.step_costs(arch, [k], metric)[0] for k in range(arch.num_paths))

    def extremes(self, shrunk, metric: str) -> tuple[EnsembleArch, EnsembleArch]:
        """The cheapest and the most expensive ensemble of ``metric`` in a shrunk space (their
        costs are :meth:`range`): per split point, every layer's cheapest (dearest) choice."""
        space = shrunk.space
        found = {}
        for s in space.split_points:
            for pick in (min, max):
                columns = []
                for spec in space.layers:
                    entry = self.layers[spec.index - 1]
                    if spec.index <= s:
                        op = pick(shrunk.shared_ops(spec.index), key=lambda o: getattr(entry[o], metric))
                        columns.append((op,) * space.num_paths)
                    else:
                        columns.append(
                            pick(
                                shrunk.layer_combinations(spec.index),
                                key=lambda c: sum(getattr(entry[o], metric) for o in c),
                            )
                        )
                arch = EnsembleArch(s, tuple(zip(*columns)))
                value = getattr(self.cost(arch), metric)
                if pick not in found or (value < found[pick][0] if pick is min else value > found[pick][0]):
                    found[pick] = (value, arch)
        return found[min][1], found[max][1]

    def range(self, shrunk, metric: str) -> tuple[int, int]:
        """Exact min and max of ``metric`` (macs, paper_flops or params) over a shrunk space:
        costs are additive and, for a given split point, every layer is chosen independently."""
        space = shrunk.space
        lows, highs = [], []
        for s in space.split_points:
            lo = hi = getattr(self.fixed, metric) + getattr(self.head, metric) * space.num_paths
            for spec in space.layers:
                entry = self.layers[spec.index - 1]
                if spec.index <= s:
                    values = [getattr(entry[op], metric) for op in shrunk.shared_ops(spec.index)]
                else:
                    values = [
                        sum(getattr(entry[op], metric) for op in combo)
                        for combo in shrunk.layer_combinations(spec.index)
                    ]
                lo, hi = lo + min(values), hi + max(values)
            lows.append(lo)
            highs.append(hi)
        return min(lows), max(highs)


@lru_cache(maxsize=32)
def cost_table(space: SearchSpace, num_classes: int = 1000, input_size: int | None = None) -> CostTable:
    """Builds (once, cached) the cost table of ``space`` at ``input_size`` (default: the space's)."""
    size = input_size or space.input_size
    costs = measure_pieces(space, torch.zeros(1, space.in_channels, size, size), _measure, num_classes)
    # a skip layer runs no piece: it costs nothing
    layers = tuple(
        {op: costs.get(Piece(LAYER, None, spec.index, op), Cost()) for op in spec.ops} for spec in space.layers
    )
    return CostTable(costs[Piece(STEM)], costs[Piece(FIRST)], layers, costs[Piece(HEAD, 0)])


def count_cost(space: SearchSpace, arch: EnsembleArch, num_classes: int = 1000, input_size: int | None = None) -> Cost:
    """MACs, paper FLOPs and params of ensemble ``arch`` in ``space``, its shared layers counted once.

    Args:
        space: the search space of ``arch``.
        arch: the ensemble.
        num_classes: outputs of every classifier.
        input_size: the square input resolution; the space's by default.

    Returns:
        The :class:`Cost` of one image's forward through the whole ensemble.

    Example:
        >>> from neas import EnsembleArch, SearchSpace, count_cost
        >>> space = SearchSpace.preset("tiny")
        >>> arch = EnsembleArch(2, (("k3e3", "k5e6", "k3e6", "k5e3"), ("k3e3", "k5e6", "k5e3", "k3e6")))
        >>> count_cost(space, arch, num_classes=10).macs
        1073408
    """
    arch.validate(space)
    return cost_table(space, num_classes, input_size).cost(arch)
