"""The schema of ``neas rank``."""

from __future__ import annotations

from dataclasses import dataclass

from neas.config import option
from neas.options import DecodeOptions, DeviceOptions, ExecutorOptions, ScoringOptions
from neas.outputs import check_claim_dir
from neas.settings import validate_fields

__all__ = ["RankConfig"]


@dataclass
class RankConfig(DeviceOptions, ScoringOptions, DecodeOptions, ExecutorOptions):
    """The schema of ``neas rank``: the from-scratch trainings are jobs of its executor."""

    supernet: list[str] = option(default_factory=list, help="supernet run directories to compare")
    out: str = option("runs/rank", "output directory")
    num_archs: int = option(30, "ensembles sampled and trained from scratch", valid=">= 3")
    from_space: str = option("full", "'full' or a supernet run directory whose shrunk space to sample")
    scratch_epochs: int = option(10, "from-scratch training epochs per ensemble", valid=">= 1")
    scratch_batch_size: int = option(64, "from-scratch batch size", valid=">= 1")
    bootstrap: int = option(10_000, "bootstrap resamples for the confidence intervals", valid=">= 1")
    scratch: str | None = option(
        None, "a scratch.json of an earlier rank (same recipe): its from-scratch scores are reused"
    )

    @staticmethod
    def check_outputs(values: dict) -> None:
        """An --out this command did not make is refused before torch is imported (neas.config.check_outputs)."""
        check_claim_dir(values["out"], "rank")

    def __post_init__(self):
        validate_fields(self)
        self.check_executor_options()
