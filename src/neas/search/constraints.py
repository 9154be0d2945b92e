"""What an ensemble costs, in the metrics its budget constraints bound (:class:`neas.schemas.search.Constraints`)."""

from __future__ import annotations

from neas.cost import CostTable
from neas.cost.latency import LatencyTable
from neas.search.settings import Constraints
from neas.space import EnsembleArch

__all__ = ["Constraints", "measure_costs"]


def measure_costs(constraints: Constraints, arch: EnsembleArch, table: CostTable, latency: LatencyTable | None) -> dict:
    """MACs, paper FLOPs, params (and latency under ``constraints.latency_mode`` when there is a table) of ``arch``."""
    out = table.cost(arch).to_json()
    if latency is not None:
        out["latency_ms"] = latency.latency_ms(arch, constraints.latency_mode)
    return out
