"""What an ensemble costs, in the metrics its budget constraints bound (:class:`neas.search.settings.Constraints`),
and whether a space can meet a budget at all (refused before any training)."""

from __future__ import annotations

import dataclasses

from neas.cost import CostTable, cost_table
from neas.cost.latency import LatencyTable
from neas.errors import NeasError
from neas.records import COSTS
from neas.search.settings import Constraints
from neas.space import EnsembleArch, SearchSpace, ShrunkSpace

__all__ = [
    "Constraints",
    "cheapest_path_macs",
    "check_budget",
    "check_cascade_feasible",
    "check_cascade_paths",
    "check_feasible",
    "check_latency_feasible",
    "describe_range",
    "measure_costs",
    "restrict_split",
]


def measure_costs(constraints: Constraints, arch: EnsembleArch, table: CostTable, latency: LatencyTable | None) -> dict:
    """MACs, paper FLOPs, params (and latency under ``constraints.latency_mode`` when there is a table) of ``arch``."""
    out = table.cost(arch).to_json()
    if latency is not None:
        out["latency_ms"] = latency.latency_ms(arch, constraints.latency_mode)
    return out


def restrict_split(shrunk: ShrunkSpace, split: list[int] | None) -> ShrunkSpace:
    """The shrunk space with its split range narrowed to ``split`` (inside the supernet's range)."""
    if split is None:
        return shrunk
    lo, hi = shrunk.space.split
    if not lo <= split[0] <= split[1] <= hi:
        raise NeasError(f"split {list(split)} is outside the supernet space's split range [{lo}, {hi}]")
    return ShrunkSpace(dataclasses.replace(shrunk.space, split=tuple(split)), shrunk.combinations)


def describe_range(table: CostTable, shrunk: ShrunkSpace) -> str:
    """The MACs and params the ensembles of ``shrunk`` span (for an error naming a budget)."""
    lo, hi = table.range(shrunk, "macs")
    plo, phi = table.range(shrunk, "params")
    return (
        f"the space's ensembles span {lo / 1e6:.3f}M-{hi / 1e6:.3f}M MACs and {plo / 1e6:.3f}M-{phi / 1e6:.3f}M params"
    )


def check_feasible(constraints: Constraints, table: CostTable, shrunk: ShrunkSpace) -> None:
    """Refuses MACs/FLOPs/params bounds that no ensemble of ``shrunk`` meets, naming the range."""
    for metric in COSTS:
        lo_c, hi_c = getattr(constraints, f"min_{metric}"), getattr(constraints, f"max_{metric}")
        lo, hi = table.range(shrunk, metric)
        if (hi_c is not None and hi_c < lo) or (lo_c is not None and lo_c > hi):
            bound = f"max_{metric}={hi_c}" if hi_c is not None and hi_c < lo else f"min_{metric}={lo_c}"
            cheapest, dearest = table.extremes(shrunk, metric)
            raise NeasError(
                f"no ensemble of the space meets {bound}: the cheapest has {metric}={lo} ({cheapest}), the most "
                f"expensive {hi} "
                f"({dearest}); {describe_range(table, shrunk)}"
            )


def check_cascade_feasible(constraints: Constraints, table: CostTable, shrunk: ShrunkSpace) -> None:
    """Refuses a bound on the cascade's mean MACs that no cascade of ``shrunk`` can meet: a space of one
    path has no cascade, and no cascade costs less per image than the cheapest path alone."""
    if not constraints.needs_cascade:
        return
    check_cascade_paths(constraints, shrunk.space)
    floor = cheapest_path_macs(table, shrunk)
    hi_c = constraints.max_mean_macs
    if hi_c is not None and hi_c < floor:
        raise NeasError(
            f"max_mean_macs={hi_c}: below the cheapest path of the space alone ({floor} MACs, the least a cascade "
            f"costs per image); {describe_range(table, shrunk)}"
        )


def check_cascade_paths(constraints: Constraints, space: SearchSpace) -> None:
    """Refuses a bound on the cascade's mean MACs for a space of one path: a single network has no cascade."""
    if constraints.needs_cascade and space.num_paths < 2:
        bound = "max_mean_macs" if constraints.max_mean_macs is not None else "min_mean_macs"
        raise NeasError(
            f"{bound}: the space {space.name!r} has K = 1 path, and a single network has no cascade; "
            "bound its MACs with max_macs"
        )


def cheapest_path_macs(table: CostTable, shrunk: ShrunkSpace) -> int:
    """The MACs of the cheapest single path of ``shrunk`` (stem, L0, the cheapest op any path may run at
    each layer, one head): a lower bound on any of its cascades' mean MACs."""
    total = table.fixed.macs + table.head.macs
    for spec in shrunk.space.layers:
        allowed = set(shrunk.shared_ops(spec.index)) | {op for c in shrunk.layer_combinations(spec.index) for op in c}
        total += min(table.layers[spec.index - 1][op].macs for op in allowed)
    return total


def check_budget(
    constraints: Constraints, space: SearchSpace, num_classes: int, split: list[int] | None = None
) -> None:
    """Refuses a MACs/FLOPs/params budget that no ensemble of ``space`` (with ``num_classes``
    outputs, split points within ``split``) meets: it needs only the space, so `neas run` asks
    before training the supernet. (A latency budget needs the measured table; the search checks it
    when it starts.)"""
    table, shrunk = cost_table(space, num_classes), restrict_split(ShrunkSpace.full(space), split)
    check_feasible(constraints, table, shrunk)
    check_cascade_feasible(constraints, table, shrunk)


def check_latency_feasible(constraints: Constraints, latency: LatencyTable, shrunk: ShrunkSpace) -> None:
    """Refuses latency bounds that no ensemble of ``shrunk`` meets on the table's device."""
    fastest, slowest = latency.bounds(shrunk, constraints.latency_mode)
    lo_c, hi_c = constraints.min_latency_ms, constraints.max_latency_ms
    if (hi_c is not None and hi_c < fastest) or (lo_c is not None and lo_c > slowest):
        quick = latency.fastest(shrunk)
        raise NeasError(
            f"no ensemble of the space meets {constraints.active()}: on {latency.device} "
            f"({latency.runtime}) the fastest takes at least {fastest:.3f} ms (e.g. {quick}: "
            f"{latency.latency_ms(quick, constraints.latency_mode):.3f} ms) and the slowest at most "
            f"{slowest:.3f} ms ({constraints.latency_mode} paths)"
        )
