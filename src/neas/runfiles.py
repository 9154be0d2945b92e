"""Every file and folder name of a run directory, and the ``neas run`` layout: spelled here only.

``tests/test_runfiles.py`` fails when one of these names is spelled as a string anywhere else in
``src/`` or ``experiments/`` (or a folder of the layout is joined by hand, ``run / "search"``).
Torch-free and import-free: the run directory (:mod:`neas.rundir`), the model files
(``ensemble/io.py``, ``supernet/io.py``, ``detection/detector.py``), the report and the study's
scripts all take their names from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "ABLATE",
    "ABLATE_TABLE",
    "ARCH",
    "BUDGETS",
    "CASCADE_JSON",
    "CHECKPOINTS",
    "CLASS_LISTING",
    "COMPARE",
    "COMPARE_CONFIGS",
    "COMPARE_TABLE",
    "CONFIG",
    "DETECTOR",
    "EVAL",
    "JOB_LOGS",
    "LATENCY_TABLE",
    "LOCK",
    "MARKER",
    "METRICS",
    "MODEL",
    "PARETO",
    "PREDICTIONS",
    "RANDOM_SEARCH_STAGE",
    "RANK",
    "RANK_ARCHS",
    "RANK_TABLE",
    "REPORT",
    "REPORT_PAGE",
    "RETRAIN_STAGE",
    "SCRATCH",
    "SCRATCH_RUNS",
    "SEARCH_CURVE",
    "SEARCH_STAGE",
    "SHRINK_ROUNDS",
    "SHRUNK_SPACE",
    "SPLIT_LISTING",
    "STATE",
    "SUMMARY",
    "SUPERNET",
    "SUPERNET_STAGE",
    "TENSORBOARD",
    "TIMM_CONFIG",
    "PipelineLayout",
    "figure",
    "generation_file",
    "has_checkpoint",
    "round_file",
]

# every run directory
MARKER = "neas-run.json"  # written first into every run directory: what a run may touch
LOCK = ".neas.lock"
CONFIG = "config.yaml"  # the resolved config the run started with
STATE = "state.json"  # names the last complete checkpoint
METRICS = "metrics.jsonl"
TENSORBOARD = "tb"  # TensorBoard events beside metrics.jsonl
CHECKPOINTS = "checkpoints"
REPORT = "report"  # the report's folder: REPORT_PAGE and its figures
REPORT_PAGE = "index.html"
JOB_LOGS = "jobs"  # submitit's pickles and logs of the jobs a command ran
# train-supernet
SUPERNET = "supernet.safetensors"  # the weights, the shrunk space and the data config
SHRUNK_SPACE = "shrunk_space.json"
SHRINK_ROUNDS = "shrink"  # one round_XX.json per shrinking round
# search
ARCH = "arch.json"  # the best ensemble (and every candidate)
PARETO = "pareto.json"
LATENCY_TABLE = "latency_table.json"
# retrain, detect
MODEL = "model.safetensors"  # the ensemble's (or the detector's) weights and metadata
EVAL = "eval.json"
DETECTOR = "detector.json"  # detect: beside model.safetensors, how to rebuild the detector
PREDICTIONS = "predictions.json"  # detect: the val split's detections in COCO results format
CASCADE_JSON = "cascade.json"  # neas export --cascade: the steps' spec beside their ONNX files
TIMM_CONFIG = "config.json"  # neas export --format timm: timm's config beside model.safetensors
# run, rank, ablate, compare
SUMMARY = "summary.json"  # run: the pipeline's result
RANK = "rank.json"  # rank: the correlations
RANK_TABLE = "rank.md"
RANK_ARCHS = "archs.json"  # rank: the ensembles it ranks
SCRATCH = "scratch.json"  # rank: the from-scratch scores, reusable by a later rank (--scratch)
SCRATCH_RUNS = "scratch"  # rank: one retraining run per ensemble
ABLATE = "ablate.json"  # ablate: the ablation's record
ABLATE_TABLE = "ablate.md"
SEARCH_CURVE = "search_curve.png"  # ablate search: evolution vs random search
COMPARE = "compare.json"  # compare: every row's per-seed numbers, statistics and paired differences
COMPARE_TABLE = "compare.md"
COMPARE_CONFIGS = "configs"  # compare: the `neas run` (and deep-ensemble retrain) config of each job
# neas run's stages (PipelineLayout)
SUPERNET_STAGE = "supernet"
SEARCH_STAGE = "search"
RANDOM_SEARCH_STAGE = "search_random"  # the random search at equal evaluations (compare_random)
RETRAIN_STAGE = "retrain"  # with budgets: a link to the largest budget's
BUDGETS = "budgets"  # one folder per budget: its arch file and its retrain
# data tools
CLASS_LISTING = "classes.json"  # neas subimagenet: the classes and images it took
SPLIT_LISTING = "split.json"  # neas carve: which images went where


def generation_file(generation: int) -> str:
    """A search's record of one generation."""
    return f"generation_{generation:02d}.json"


def round_file(index: int) -> str:
    """A supernet's record of one shrinking round (in SHRINK_ROUNDS)."""
    return f"round_{index:02d}.json"


def has_checkpoint(run: Path) -> bool:
    """Whether ``run`` has something to resume from: ``state.json`` or a kept checkpoint (``state.json``
    may be lost while a checkpoint survives: resuming falls back on it)."""
    return (run / STATE).is_file() or any((run / CHECKPOINTS).glob("*.safetensors"))


def figure(name: str) -> str:
    """The file of the report figure ``name`` (in REPORT)."""
    return f"{name}.png"


@dataclass(frozen=True)
class PipelineLayout:
    """Where ``neas run`` puts its stages inside its run directory ``run``."""

    run: Path

    @property
    def supernet(self) -> Path:
        return self.run / SUPERNET_STAGE

    @property
    def search(self) -> Path:
        return self.run / SEARCH_STAGE

    @property
    def search_random(self) -> Path:
        return self.run / RANDOM_SEARCH_STAGE

    @property
    def retrain(self) -> Path:
        return self.run / RETRAIN_STAGE

    @property
    def budgets(self) -> Path:
        return self.run / BUDGETS

    def budget(self, folder: str) -> PipelineLayout:
        """The layout of one budget's folder (its own arch file and ``retrain``)."""
        return PipelineLayout(self.budgets / folder)

    @property
    def report(self) -> Path:
        return self.run / REPORT
