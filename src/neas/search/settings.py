"""The settings of the search, below the command line: its budget (:class:`Constraints`), the
evolution's (:class:`EvolutionSettings`), what candidates are ranked by (:data:`OBJECTIVES`) and
the costs a budget or a Pareto front can bound (:data:`COST_METRICS`).

``neas search`` nests the two dataclasses in its schema, spelled flat outside Python
(``max_macs``, ``population``, ...). Standard library only: the CLI imports this without torch.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from neas.errors import NeasError
from neas.records import CASCADE_EXITS, COSTS
from neas.settings import Amount, setting, validate_fields

__all__ = ["COST_METRICS", "OBJECTIVES", "Constraints", "EvolutionSettings"]

OBJECTIVES = ("top1", "nll", "aurc")  # what search candidates are ranked by (neas.search.fitness)
# budgets and Pareto fronts: the static costs, the measured latency, and a cascade's mean MACs per image
# (neas.ensemble.cascade.cross_fit on the search's held-out images: the cost users pay when the later
# paths run only on the images the first ones do not settle)
COST_METRICS = (*COSTS, "latency_ms", "mean_macs")


@dataclass(frozen=True)
class Constraints:
    """Inclusive bounds; ``None`` means unbounded."""

    min_macs: Amount | None = setting(None, "lower bound on MACs (K/M/G suffixes: 300M)")
    max_macs: Amount | None = setting(None, "upper bound on MACs (K/M/G suffixes: 300M)")
    min_paper_flops: Amount | None = setting(None, "lower bound on FLOPs, the paper's convention")
    max_paper_flops: Amount | None = setting(None, "upper bound on FLOPs, the paper's convention")
    min_params: Amount | None = setting(None, "lower bound on parameters")
    max_params: Amount | None = setting(None, "upper bound on parameters")
    min_latency_ms: float | None = setting(
        None, "lower bound on latency, from a table measured on this machine", valid=">= 0"
    )
    max_latency_ms: float | None = setting(
        None, "upper bound on latency, from a table measured on this machine", valid=">= 0"
    )
    latency_mode: str = setting("sequential", "how the K paths' latencies combine", valid=("sequential", "parallel"))
    min_mean_macs: Amount | None = setting(None, "lower bound on the cascade's mean MACs per image")
    max_mean_macs: Amount | None = setting(
        None,
        "upper bound on the cascade's mean MACs per image (its exit rule: cascade_tolerance), cross-fitted "
        "on the held-out images each candidate is scored on (K/M/G suffixes: 1.5M)",
    )
    cascade_tolerance: float = setting(
        0.5,
        "the priced cascade's exit rule: top-1 (or with cascade_exit risk, the coverage at 5 % selective risk) at "
        "most this many points below the full ensemble's",
        valid=">= 0",
    )
    cascade_exit: str = setting(
        "accuracy",
        "what the priced cascade's thresholds keep within cascade_tolerance of the full ensemble: accuracy "
        "(top-1) or risk (coverage at 5 % selective risk, Xia & Bouganis 2023)",
        valid=CASCADE_EXITS,
    )

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

    @property
    def needs_cascade(self) -> bool:
        """Whether a bound is on the cascade's mean MACs (every candidate is then priced as a cascade)."""
        return self.min_mean_macs is not None or self.max_mean_macs is not None

    def check_cascade_rule(self, priced: bool) -> None:
        """Refuses an exit rule nothing reads: ``cascade_exit`` and ``cascade_tolerance`` shape only the cascade
        the search prices (``priced``: a Pareto front on mean MACs; or a min/max_mean_macs bound), and would
        otherwise be silently ignored."""
        if priced or self.needs_cascade:
            return
        defaults = {f.name: f.default for f in fields(self)}
        for name in ("cascade_exit", "cascade_tolerance"):
            value = getattr(self, name)
            if value != defaults[name]:
                flag = "--" + name.replace("_", "-")
                raise NeasError(
                    f"{name} ({flag}): {value!r} is read only when the search prices cascades, and nothing bounds "
                    "the cascade's mean MACs: give max_mean_macs (--max-mean-macs) or min_mean_macs, or pareto "
                    f"mean_macs (in `neas run`: budgets: with budget_metric: mean_macs); or drop {name}"
                )

    def active(self) -> dict:
        """The bounds that are set (and the latency mode / the cascade's exit rule when they matter)."""
        out = {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name not in ("latency_mode", "cascade_tolerance", "cascade_exit") and getattr(self, f.name) is not None
        }
        if self.needs_latency:
            out["latency_mode"] = self.latency_mode
        if self.needs_cascade:
            out["cascade_tolerance"] = self.cascade_tolerance
            if self.cascade_exit != "accuracy":  # records of the rule's default stay as they were
                out["cascade_exit"] = self.cascade_exit
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
    population: int = setting(50, "P: members per generation", valid=">= 1")
    parents: int = setting(10, "top-k of everything evaluated kept as parents", valid=">= 1")
    generations: int = setting(20, "generations", valid=">= 1")
    mutations: int = setting(25, "mutated children per generation", valid=">= 0")
    crossovers: int = setting(25, "crossover children per generation", valid=">= 0")
    p_split: float = setting(0.1, "P_s: probability of moving the split point", valid="[0, 1]")
    p_layer: float = setting(0.1, "P_m: probability of re-drawing each layer", valid="[0, 1]")

    def __post_init__(self):
        validate_fields(self)
        if self.population < self.parents:
            raise NeasError(
                f"population ({self.population}) must not be smaller than the number of parents ({self.parents})"
            )
