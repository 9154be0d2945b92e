"""The schema of ``neas search`` (its budget constraints and evolution settings: :mod:`neas.search.settings`)."""

from __future__ import annotations

from dataclasses import dataclass

from neas.config import nested, option
from neas.errors import NeasError
from neas.options import STRATEGIES, DecodeOptions, RunOptions, ScoringOptions
from neas.outputs import check_run_dir
from neas.search.settings import COST_METRICS, OBJECTIVES, Constraints, EvolutionSettings
from neas.settings import validate_fields

__all__ = ["SearchConfig"]


@dataclass
class SearchConfig(RunOptions, ScoringOptions, DecodeOptions):
    """The schema of ``neas search``: every field is a YAML key and a flag."""

    supernet: str = option("runs/supernet", "the supernet-training run directory")
    out: str = option("runs/search", "search directory")
    strategy: str = option("evolution", "evolution, or random search at equal evaluations", valid=STRATEGIES)
    objective: str = option(
        "top1",
        "what candidates are ranked by on the held-out part: top1 (the paper's) | nll (ensemble NLL) | aurc "
        "(area under the ensemble's risk-coverage curve: selective prediction)",
        valid=OBJECTIVES,
    )
    pareto: str | None = option(
        None,
        "evolve the whole front of the objective vs this cost (NSGA-II), written to pareto.json",
        default_help="one budget, one best ensemble",
        valid=COST_METRICS,
    )
    constraints: Constraints = nested(Constraints)
    split: list[int] | None = option(
        None, "search only split points LO [HI] (0: no shared layers)", default_help="the space's range"
    )
    evolution: EvolutionSettings = nested(EvolutionSettings)
    evaluations: int | None = option(
        None, "random search: candidates", default_help="population x generations", valid=">= 1"
    )
    val_images: int | None = option(
        None, "held-out images per candidate (a stratified subset)", default_help="all", valid=">= 1"
    )
    latency_table: str | None = option(
        None,
        "a `neas latency-table` file for the latency budget (e.g. measured in onnxruntime on the target)",
        default_help="measured here in torch",
    )
    data_dir: str | None = option(None, "where the supernet's dataset lives now", default_help="as trained")

    @staticmethod
    def check_outputs(values: dict) -> None:
        """An existing --out is refused before torch is imported (neas.config.check_outputs)."""
        check_run_dir(values["out"], bool(values["resume"]), "search")

    def __post_init__(self):
        if self.split is not None and len(self.split) == 1:
            self.split = [self.split[0], self.split[0]]
        if self.split is not None and (len(self.split) != 2 or not 0 <= self.split[0] <= self.split[1]):
            raise NeasError(f"split must be [lo, hi] with 0 <= lo <= hi, got {self.split}")
        validate_fields(self)
        self.constraints.check_cascade_rule(priced=self.pareto == "mean_macs")
