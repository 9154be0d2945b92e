"""Budget constraints on an ensemble: MACs, paper FLOPs, params and latency, each min/max."""

from __future__ import annotations

from dataclasses import dataclass, fields

from neas.config import option, validate_fields
from neas.cost import Amount, CostTable
from neas.cost.latency import LatencyTable
from neas.errors import NeasError
from neas.space import EnsembleArch

__all__ = ["Constraints"]

_METRICS = ("macs", "paper_flops", "params", "latency_ms")


@dataclass(frozen=True)
class Constraints:
    """Inclusive bounds; ``None`` means unbounded."""

    min_macs: "Amount | None" = option(None, "lower bound on MACs (K/M/G suffixes: 300M)")
    max_macs: "Amount | None" = option(None, "upper bound on MACs (K/M/G suffixes: 300M)")
    min_paper_flops: "Amount | None" = option(None, "lower bound on FLOPs, the paper's convention")
    max_paper_flops: "Amount | None" = option(None, "upper bound on FLOPs, the paper's convention")
    min_params: "Amount | None" = option(None, "lower bound on parameters")
    max_params: "Amount | None" = option(None, "upper bound on parameters")
    min_latency_ms: "float | None" = option(
        None, "lower bound on latency, from a table measured on this machine", valid=">= 0"
    )
    max_latency_ms: "float | None" = option(
        None, "upper bound on latency, from a table measured on this machine", valid=">= 0"
    )
    latency_mode: str = option("sequential", "how the K paths' latencies combine", valid=("sequential", "parallel"))

    def __post_init__(self):
        validate_fields(self)
        for metric in _METRICS:
            for bound in ("min", "max"):
                value = getattr(self, f"{bound}_{metric}")
                if value is not None and not value >= 0:  # also refuses nan
                    raise NeasError(f"{bound}_{metric}: a budget must be >= 0, got {value}")
            lo, hi = getattr(self, f"min_{metric}"), getattr(self, f"max_{metric}")
            if lo is not None and hi is not None and lo > hi:
                raise NeasError(f"contradictory constraints: min_{metric}={lo} is larger than max_{metric}={hi}")

    @property
    def needs_latency(self) -> bool:
        return self.min_latency_ms is not None or self.max_latency_ms is not None

    def active(self) -> dict:
        """The bounds that are set (and the latency mode when latency is bounded)."""
        out = {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name != "latency_mode" and getattr(self, f.name) is not None
        }
        if self.needs_latency:
            out["latency_mode"] = self.latency_mode
        return out

    def measure(self, arch: EnsembleArch, table: CostTable, latency: "LatencyTable | None") -> dict:
        cost = table.cost(arch)
        out = cost.to_json()
        if latency is not None:
            out["latency_ms"] = latency.latency_ms(arch, self.latency_mode)
        return out

    def satisfied(self, costs: dict) -> bool:
        for metric in _METRICS:
            lo, hi = getattr(self, f"min_{metric}"), getattr(self, f"max_{metric}")
            value = costs.get(metric)
            if value is None:
                continue
            if (lo is not None and value < lo) or (hi is not None and value > hi):
                return False
        return True
