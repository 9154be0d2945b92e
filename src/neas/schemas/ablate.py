"""The schemas of ``neas ablate``'s five ablations (run by :mod:`neas.recipes.ablate`).

``homo-hetero``, ``split`` and ``deep-ensemble`` retrain ensembles: their schema is the retrain
recipe (:class:`~neas.schemas.retrain.RetrainConfig`, nested and spelled flat, so its flags and a
``neas retrain`` YAML given as ``--config`` are theirs) and the executor of those retrainings
(:class:`~neas.options.ExecutorOptions`: ``--executor``, ``--max-parallel``, ``slurm.KEY=VALUE``).
``paths`` runs a ``neas run`` config per K, ``search`` reads finished runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from neas.config import nested, option
from neas.errors import NeasError, show
from neas.options import ExecutorOptions
from neas.outputs import check_claim_dir
from neas.schemas.retrain import RetrainConfig
from neas.settings import validate_fields

__all__ = [
    "AblateDeepEnsembleConfig",
    "AblateHomoHeteroConfig",
    "AblatePathsConfig",
    "AblateSearchConfig",
    "AblateSplitConfig",
    "RetrainAblation",
]


@dataclass
class _RetrainRecipe:
    retrain: RetrainConfig = nested(RetrainConfig)  # its arch: the ensemble ablated; its out: the ablation's


@dataclass
class RetrainAblation(ExecutorOptions, _RetrainRecipe):  # this order: the retrain keys first in --help
    """An ablation whose trainings are ``neas retrain`` jobs of its executor (default ``debug``: in
    this process, one after another), each with the recipe ``retrain`` (the ``neas retrain`` keys,
    spelled flat)."""

    KIND: ClassVar[str] = ""  # the kind of output directory it accumulates in (neas.rundir.claim_dir)

    @classmethod
    def check_outputs(cls, values: dict) -> None:
        """An --out this ablation did not make is refused before torch is imported (neas.config.check_outputs)."""
        check_claim_dir(values["out"], cls.KIND)

    def __post_init__(self):
        validate_fields(self)
        self.check_executor_options()


@dataclass
class AblateHomoHeteroConfig(RetrainAblation):
    """Table 3: the searched ensemble against its mirrored (homogeneous) ones."""

    KIND: ClassVar[str] = "ablate homo-hetero"


@dataclass
class AblateSplitConfig(RetrainAblation):
    """Table 4: the ensemble with and without shared layers."""

    KIND: ClassVar[str] = "ablate split"

    equal_budget: bool = option(True, "also search the best unshared ensemble under the search's budget")


@dataclass
class AblateDeepEnsembleConfig(RetrainAblation):
    """One arch retrained from independent initialisations, the average of their logits scored."""

    KIND: ClassVar[str] = "ablate deep-ensemble"

    copies: int = option(2, "independently trained copies (seeds seed, seed+1, ...)", valid=">= 2")


@dataclass
class AblatePathsConfig:
    """Table 5: one ``neas run`` config (its budget and stages) for each K."""

    config: str = option(None, "a `neas run` YAML config (its budget and stages are used for every K)", required=True)
    paths: list[int] = option(default_factory=lambda: [2, 3, 5], help="values of K (1: a single network)")
    reuse: list[str] = option(
        default_factory=list, help="K=RUN: a finished `neas run` of the same config to use for K, e.g. 2=runs/cifar10"
    )
    out: str = option(None, "output directory: one run per K, ablate.json, ablate.md", required=True)

    @staticmethod
    def check_outputs(values: dict) -> None:
        """An --out this command did not make is refused before torch is imported (neas.config.check_outputs)."""
        check_claim_dir(values["out"], "ablate paths")

    def __post_init__(self):
        for k in self.paths:
            if k < 1:
                raise NeasError(f"paths: K must be at least 1 (1: a single network), got {k}")
        _runs_by_k(self.reuse)  # a malformed --reuse is refused before anything runs

    @property
    def reuse_runs(self) -> dict[int, str]:
        """``--reuse`` as ``K -> run directory``."""
        return _runs_by_k(self.reuse)


def _runs_by_k(items: list[str]) -> dict[int, str]:
    runs = {}
    for item in items:
        k, sep, run = str(item).partition("=")
        if not sep or not k.isdigit() or not run:
            raise NeasError(f"reuse: {show(item)}: expected K=RUN_DIR, e.g. 2=runs/cifar10")
        runs[int(k)] = run
    return runs


@dataclass
class AblateSearchConfig:
    """Figure 5: evolution against random search at equal evaluations."""

    run: list[str] = option(
        default_factory=list, help="`neas run` directories with search/ and search_random/", required=True
    )
    top: int = option(10, "also track the mean of the top-N ensembles found", valid=">= 1")
    out: str = option(None, "output directory: ablate.json, ablate.md, search_curve.png", required=True)

    @staticmethod
    def check_outputs(values: dict) -> None:
        """An --out this command did not make is refused before torch is imported (neas.config.check_outputs)."""
        check_claim_dir(values["out"], "ablate search")

    def __post_init__(self):
        validate_fields(self)
        if not self.run:
            raise NeasError("run: give at least one `neas run` directory")
