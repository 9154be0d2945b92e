"""The schema of ``neas run``: shared keys, then one section per stage (that stage's own schema's keys)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from neas.config import flat_fields, option
from neas.errors import NeasError, show, suggest
from neas.options import DataOptions, DeviceOptions, ExecutorOptions
from neas.outputs import check_run_dir, resumes
from neas.schemas.retrain import RetrainConfig
from neas.schemas.search import SearchConfig
from neas.schemas.supernet import SupernetConfig
from neas.search.settings import COST_METRICS
from neas.settings import validate_fields

__all__ = ["CONFIGS", "DEMO", "STAGES", "RunConfig", "check_override"]

CONFIGS = Path(__file__).resolve().parent.parent / "configs"  # shipped configs (also ./configs in the repo)
DEMO = CONFIGS / "demo.yaml"  # what `neas run` runs with no arguments


@dataclass
class RunConfig(DataOptions, DeviceOptions, ExecutorOptions):
    """``neas run``'s YAML: shared keys, then one section per stage (the stages' own keys). With
    ``budgets:``, each budget's retraining is a job of the executor (:class:`~neas.options.ExecutorOptions`)."""

    out: str = option("runs/demo", "run directory")
    space: str = option("tiny", "search space preset or YAML file")
    compare_random: bool = option(False, "also run random search with as many evaluations")
    budgets: list[str] = option(
        default_factory=list,
        help="one Pareto search, then retrain the best member within each budget "
        "(e.g. 0.8M 1.2M 1.5M), one sub-directory each",
    )
    budget_metric: str = option("macs", "what the budgets bound", valid=COST_METRICS)
    supernet: dict = option(default_factory=dict, help="keys of `neas train-supernet`", cli=False)
    search: dict = option(default_factory=dict, help="keys of `neas search`", cli=False)
    retrain: dict = option(default_factory=dict, help="keys of `neas retrain`", cli=False)
    resume: bool = option(False, "continue an interrupted run")
    dry_run: bool = option(
        False, "print what would run (config, stages, the space's MACs range and what fits the budget, the data), "
        "and start nothing",
    )  # fmt: skip

    @staticmethod
    def check_outputs(values: dict) -> None:
        """An existing --out is refused before torch is imported (neas.config.check_outputs); --resume of a
        directory not there yet starts it; --dry-run writes nothing."""
        if not values["dry_run"]:
            check_run_dir(values["out"], resumes(values["out"], bool(values["resume"])), "run")

    def __post_init__(self):
        validate_fields(self)
        self.check_executor_options()


STAGES = {"supernet": SupernetConfig, "search": SearchConfig, "retrain": RetrainConfig}  # section -> its schema


def check_override(item: str) -> None:
    """A ``key=value`` override of a `neas run` config names a key it has: a top-level key, or a stage's
    own key under its section (``supernet.epochs=3``). A stage's key given bare (``epochs=3``) is refused
    with the dotted forms; an unknown key of a section, with the nearest one. Other keys are
    :func:`~neas.config.from_dict`'s to check."""
    key, _, value = item.partition("=")
    top, _, rest = key.strip().partition(".")
    stages = {section: {ff.key for ff in flat_fields(cls)} for section, cls in STAGES.items()}
    if top in stages and rest:
        if rest not in stages[top]:
            raise NeasError(f"override {show(item)}: the {top} stage has no key {rest!r}{suggest(rest, stages[top])}")
        return
    if top in {ff.key for ff in flat_fields(RunConfig)}:
        return
    having = [section for section, keys in stages.items() if top in keys]
    if having:
        dotted = " or ".join(f"{section}.{top}={value}" for section in having)
        raise NeasError(f"override {show(item)}: {top} is a key of a stage, not of the pipeline; give it as {dotted}")
