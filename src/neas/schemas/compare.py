"""The schema of ``neas compare``: a ``neas run`` config, the seeds and the rows to compare, and the
executor that runs their jobs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from neas.config import apply_overrides, option
from neas.errors import NeasError, show, suggest
from neas.fields import load_yaml
from neas.options import EXECUTORS, ExecutorOptions
from neas.outputs import check_claim_dir
from neas.schemas.run import check_override
from neas.settings import validate_fields

__all__ = ["DEFAULT_ROWS", "EXECUTORS", "ROWS", "CompareConfig"]

# row -> what it is (the study's rows, docs/RESULTS.md, and the cascade); every row is one `neas run` (deep: two
# steps) per seed
ROWS = {
    "neas": "the NEAS pipeline as configured (K paths from the space)",
    "single": "the best single network (K = 1) at the same budget",
    "deep": "a deep ensemble: K copies of the best single network searched at budget / K",
    "cascade": "the NEAS pipeline searched for its cascade: the budget bounds the cascade's mean MACs per image, "
    "scored as the cascade fitted on a held-out part",
    "none": "the NEAS pipeline with shrink mode none",
    "accuracy": "the NEAS pipeline with shrink mode accuracy",
    "quality": "the NEAS pipeline with shrink mode quality (diversity's score with S = I)",
}
DEFAULT_ROWS = ["neas", "single", "deep"]


@dataclass
class CompareConfig(ExecutorOptions):
    """The schema of ``neas compare``: its jobs run through :class:`~neas.options.ExecutorOptions`,
    by default as local subprocesses (a comparison is many long runs, never in this process)."""

    config: str = option(
        None, "a `neas run` YAML config: the data, space, budget and stages of every row", required=True
    )
    seeds: int = option(3, "pipeline seeds per row (seed s is the config's seed + s)", valid=">= 1")
    retrain_seeds: int = option(
        1,
        "trainings of each searched network: the pipeline's own, then seeds 1000 r + s (deep: 1000 r + s K); "
        "a row's number for a seed is their mean",
        valid=">= 1",
    )
    rows: list[str] = option(
        default_factory=lambda: list(DEFAULT_ROWS), help=f"rows to compare, comma-separated: {', '.join(ROWS)}"
    )
    out: str = option(
        None, "output directory: one run directory per row and seed, compare.json, compare.md", required=True
    )
    executor: str = option("local", "where the jobs run: local | slurm | debug (in this process)", valid=EXECUTORS)
    threads_per_job: int = option(
        1,
        "CPU threads (torch, OpenMP, MKL) of each job, whatever --max-parallel: recorded with the comparison and "
        "compared on a rerun (numbers differ in their last digits between thread counts)",
        valid=">= 1",
    )
    run_overrides: list[str] = option(
        default_factory=list,
        help="KEY=VALUE overrides of the `neas run` config's keys for every row (supernet.epochs=6, seed=1); on "
        "the command line, every KEY=VALUE whose key is not compare's own (slurm.partition=gpu)",
        cli=False,
    )

    @staticmethod
    def check_outputs(values: dict) -> None:
        """An --out this command did not make is refused before torch is imported (neas.config.check_outputs)."""
        check_claim_dir(values["out"], "compare")

    def __post_init__(self):
        validate_fields(self)
        if self.config is not None and not Path(self.config).is_file():  # before anything heavy is imported
            raise NeasError(f"--config {self.config}: no such `neas run` YAML file")
        if self.config is not None:
            load_yaml(self.config)  # its size and syntax too (a 100 MB config: refused before torch, fuzz §9)
        rows = [self.rows] if isinstance(self.rows, str) else list(self.rows)
        self.rows = [r.strip() for item in rows for r in str(item).split(",") if r.strip()]
        for row in self.rows:
            if row not in ROWS:
                raise NeasError(f"--rows: unknown row {row!r}{suggest(row, ROWS)}; valid: {', '.join(ROWS)}")
        if not self.rows or len(set(self.rows)) != len(self.rows):
            raise NeasError(f"--rows: name each row once, at least one, got {show(self.rows)}")
        self.check_executor_options()
        self.run_overrides = [str(item) for item in self.run_overrides or []]
        for item in self.run_overrides:
            check_override(item)
        if self.config is not None:
            self.run_config_data()  # a malformed override is refused now

    def run_config_data(self) -> dict:
        """The `neas run` config of every row: the ``config`` YAML with :attr:`run_overrides` applied."""
        try:
            return apply_overrides(load_yaml(self.config), self.run_overrides)
        except NeasError as exc:
            raise NeasError(f"--config {self.config}: {exc}") from None
