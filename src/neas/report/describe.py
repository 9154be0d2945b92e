"""``neas arch`` and ``neas space``: print an ensemble or a search space with its costs."""

from __future__ import annotations

import contextlib

from neas.cost import count_cost
from neas.space import EnsembleArch, SearchSpace
from neas.space.presets import ARCH_PAPER_RESULTS

__all__ = ["arch_report", "arch_summary", "space_report"]


def _m(value: int) -> str:
    return f"{value / 1e6:.2f}M"


def arch_summary(
    space: SearchSpace, arch: EnsembleArch, num_classes: int = 1000, input_size: int | None = None
) -> dict:
    """The JSON form of ``neas arch --json``: the arch, its costs and official list when defined."""
    cost = count_cost(space, arch, num_classes, input_size)
    out = {**arch.to_json(), "num_paths": arch.num_paths, "space": space.name, **cost.to_json()}
    out["input_size"] = input_size or space.input_size
    out["num_classes"] = num_classes
    with contextlib.suppress(ValueError):  # custom ops have no official ids
        out["arch_list"] = arch.to_official()
    return out


def arch_report(
    space: SearchSpace, arch: EnsembleArch, num_classes: int = 1000, input_size: int | None = None, title: str = ""
) -> str:
    """A per-layer table: stem, L0, the shared layers, then the private layers of each path."""
    cost = count_cost(space, arch, num_classes, input_size)
    k = arch.num_paths
    lines = [
        f"{title or 'ensemble'}: K={k} paths, split point {arch.split}, space {space.name!r}, "
        f"input {input_size or space.input_size}x{input_size or space.input_size}, {num_classes} classes",
        f"{'layer':<6}{'stride':>7}{'out':>6}  shared",
        f"{'stem':<6}{space.stem_stride:>7}{space.channels(space.stem_channels):>6}  conv3x3",
        f"{'L0':<6}{1:>7}{space.channels(space.first_block_channels):>6}  ds3x3",
    ]
    for spec in space.layers[: arch.split]:
        lines.append(f"{spec.name:<6}{spec.stride:>7}{spec.out_channels:>6}  {arch.paths[0][spec.index - 1]}")
    header = "  ".join(f"path{j:<4}" for j in range(k))
    lines.append(f"{'layer':<6}{'stride':>7}{'out':>6}  {header}")
    for spec in space.layers[arch.split :]:
        ops = "  ".join(f"{arch.paths[j][spec.index - 1]!s:<8}" for j in range(k))
        lines.append(f"{spec.name:<6}{spec.stride:>7}{spec.out_channels:>6}  {ops}")
    head = f"{space.channels(space.head_channels)}/{space.channels(space.feature_channels)}"
    lines.append(f"{'head':<6}{'':>7}{head:>9}  x{k} (1x1 conv, pool, 1x1 conv, linear)")
    lines.append(f"MACs {_m(cost.macs)}  paper FLOPs {_m(cost.paper_flops)}  params {_m(cost.params)}")
    paper = ARCH_PAPER_RESULTS.get(title.lower())
    if paper and space.name == "imagenet" and (input_size or space.input_size) == 224 and num_classes == 1000:
        lines.append(
            f"paper (Table 1): {paper['paper_flops'] / 1e6:.0f}M FLOPs, top-1 {paper['top1']}%, top-5 {paper['top5']}%"
        )
    return "\n".join(lines)


def space_report(space: SearchSpace) -> str:
    lines = [
        f"search space {space.name!r}: input {space.input_size}x{space.input_size}, K={space.num_paths} paths, "
        f"split points {space.split[0]}..{space.split[1]}, width x{space.width_mult:g}",
        f"candidate ops: {', '.join(map(str, space.ops))}",
        f"{'layer':<6}{'in':>5}{'out':>6}{'stride':>7}  {'ops':<5}{'combinations':>13}",
        f"{'stem':<6}{space.in_channels:>5}{space.channels(space.stem_channels):>6}{space.stem_stride:>7}  fixed",
        f"{'L0':<6}{space.channels(space.stem_channels):>5}{space.channels(space.first_block_channels):>6}{1:>7}  "
        "fixed",
    ]
    for spec in space.layers:
        note = "  (first of stage: no skip)" if spec.first_of_stage and any(o.is_skip for o in space.ops) else ""
        lines.append(
            f"{spec.name:<6}{spec.in_channels:>5}{spec.out_channels:>6}{spec.stride:>7}  {len(spec.ops):<5}"
            f"{len(space.combinations(spec.index)):>13}{note}"
        )
    size = space.size()
    lines.append(
        f"head: {space.channels(space.head_channels)} -> pool -> {space.channels(space.feature_channels)} -> classes, "
        "per path"
    )
    lines.append(f"size: {size:,} ensembles (~10^{len(str(size)) - 1})")
    return "\n".join(lines)
