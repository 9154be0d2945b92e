"""The schema of ``neas search``, with its budget constraints and evolution settings."""

from __future__ import annotations

from dataclasses import dataclass, fields

from neas.config import option, validate_fields
from neas.errors import NeasError, suggest
from neas.options import COST_METRICS, OBJECTIVES, STRATEGIES, Amount, DecodeOptions, RunOptions, ScoringOptions

__all__ = ["Constraints", "EvolutionSettings", "SearchConfig"]


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
        for metric in COST_METRICS:
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

    def satisfied(self, costs: dict) -> bool:
        for metric in COST_METRICS:
            lo, hi = getattr(self, f"min_{metric}"), getattr(self, f"max_{metric}")
            value = costs.get(metric)
            if value is None:
                continue
            if (lo is not None and value < lo) or (hi is not None and value > hi):
                return False
        return True


@dataclass(frozen=True)
class EvolutionSettings:
    population: int = option(50, "P: members per generation", valid=">= 1")
    parents: int = option(10, "top-k of everything evaluated kept as parents", valid=">= 1")
    generations: int = option(20, "generations", valid=">= 1")
    mutations: int = option(25, "mutated children per generation", valid=">= 0")
    crossovers: int = option(25, "crossover children per generation", valid=">= 0")
    p_split: float = option(0.1, "P_s: probability of moving the split point", valid="[0, 1]")
    p_layer: float = option(0.1, "P_m: probability of re-drawing each layer", valid="[0, 1]")

    def __post_init__(self):
        validate_fields(self)
        if self.population < self.parents:
            raise NeasError(
                f"population ({self.population}) must not be smaller than the number of parents ({self.parents})"
            )


@dataclass
class SearchConfig(RunOptions, ScoringOptions, DecodeOptions):
    """The schema of ``neas search``: every field is a YAML key and a flag."""

    supernet: str = option("runs/supernet", "the supernet-training run directory")
    out: str = option("runs/search", "search directory")
    strategy: str = option("evolution", "evolution | random")
    objective: str = option(
        "top1",
        "what candidates are ranked by on the held-out part: top1 (the paper's) | nll (ensemble NLL) | aurc "
        "(area under the ensemble's risk-coverage curve: selective prediction)",
    )
    pareto: "str | None" = option(
        None,
        "evolve the whole front of the objective vs this cost (NSGA-II), written to pareto.json: "
        "macs | paper_flops | params | latency_ms",
        default_help="one budget, one best ensemble",
    )
    constraints: Constraints = option(default_factory=Constraints, prefix="")
    split: "list[int] | None" = option(
        None, "search only split points LO [HI] (0: no shared layers)", default_help="the space's range"
    )
    evolution: EvolutionSettings = option(default_factory=EvolutionSettings, prefix="")
    evaluations: "int | None" = option(
        None, "random search: candidates", default_help="population x generations", valid=">= 1"
    )
    val_images: "int | None" = option(
        None, "held-out images per candidate (a stratified subset)", default_help="all", valid=">= 1"
    )
    latency_table: "str | None" = option(
        None,
        "a `neas latency-table` file for the latency budget (e.g. measured in onnxruntime on the target)",
        default_help="measured here in torch",
    )
    data_dir: "str | None" = option(None, "where the supernet's dataset lives now", default_help="as trained")

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise NeasError(
                f"strategy: unknown {self.strategy!r}{suggest(self.strategy, STRATEGIES)}; choose "
                f"{' or '.join(STRATEGIES)}"
            )
        if self.pareto is not None and self.pareto not in COST_METRICS:
            raise NeasError(
                f"pareto: unknown cost {self.pareto!r}{suggest(self.pareto, COST_METRICS)}; choose "
                f"{', '.join(COST_METRICS)}"
            )
        if self.objective not in OBJECTIVES:
            raise NeasError(
                f"objective: unknown {self.objective!r}{suggest(self.objective, OBJECTIVES)}; choose "
                f"{', '.join(OBJECTIVES)}"
            )
        if self.split is not None and len(self.split) == 1:
            self.split = [self.split[0], self.split[0]]
        if self.split is not None and (len(self.split) != 2 or not 0 <= self.split[0] <= self.split[1]):
            raise NeasError(f"split must be [lo, hi] with 0 <= lo <= hi, got {self.split}")
        validate_fields(self)
