"""Option groups several commands share, declared once (mixins of the commands' schemas; each
command's ``__post_init__`` checks their declared ranges with :func:`neas.settings.validate_fields`),
and the named choices and value parsers of the data, the executor and the commands.

Everything here is plain data and string parsing: with :mod:`neas.config`, :mod:`neas.schemas`
and the algorithm packages' ``settings`` modules it is all ``neas --help`` and option errors
import (no torch). A choice the library implements is owned by its package's ``settings`` module
(shrinking modes: ``neas.shrink.settings``; objectives and cost metrics: ``neas.search.settings``;
runtimes: ``neas.cost.settings``; feature modes: ``neas.ensemble.settings``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from neas.config import option
from neas.errors import NeasError, show, suggest
from neas.records import CASCADE_EXITS

__all__ = [
    "CORRUPTIONS",
    "DATASETS",
    "DECODE_MODES",
    "DEVICE_HELP",
    "EXECUTORS",
    "EXECUTOR_KEYS",
    "JOB_KEYS",
    "MAX_CLASSES",
    "SLURM_OPTIONS",
    "STRATEGIES",
    "TEMPERATURE_MODES",
    "DataOptions",
    "DecodeOptions",
    "DeviceOptions",
    "ExecutorOptions",
    "QualityOptions",
    "RunOptions",
    "ScoringOptions",
    "TrainOptions",
    "parse_corruptions",
    "parse_severities",
]

DEVICE_HELP = "auto | cpu | cuda | cuda:N"
DATASETS = ("digits", "cifar10", "cifar100", "svhn", "imagefolder")
DECODE_MODES = ("auto", "memory", "stream")
STRATEGIES = ("evolution", "random")  # neas search
TEMPERATURE_MODES = ("auto", "fit", "none")
EXECUTORS = ("local", "slurm", "debug")  # where jobs run (neas.executor); torch-free, so --help shows them
EXECUTOR_KEYS = ("executor", "max_parallel", "slurm")  # how jobs run, never what they compute
JOB_KEYS = (*EXECUTOR_KEYS, "threads_per_job")  # every option of how a command runs its jobs (threads: compared)
MAX_CLASSES = 100_000  # classifier outputs (ImageNet-21k has 21,841); more is a typo, and 10^13 an allocation error
# slurm.KEY=VALUE: submitit's names (additional_parameters are extra #SBATCH options) and what each takes
SLURM_OPTIONS = {
    "partition": "a partition name",
    "gpus_per_node": "an integer >= 0",
    "cpus_per_task": "an integer >= 1",
    "mem_gb": "a number > 0",
    "timeout_min": "an integer >= 1",
    "array_parallelism": "an integer >= 1",
    "additional_parameters": "a mapping of #SBATCH option -> value",
    "setup": "a list of shell lines",
}
# The 15 common corruptions of ImageNet-C / CIFAR-10-C (neas.data.corruptions)
CORRUPTIONS = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
)


def parse_corruptions(names: list[str]) -> list[str]:
    """``["all"]`` or corruption names -> the names, validated (one clear error per unknown one)."""
    if not names:
        return []
    if list(names) == ["all"]:
        return list(CORRUPTIONS)
    for name in names:
        if name not in CORRUPTIONS:
            raise NeasError(
                f"corruptions: unknown {name!r}{suggest(name, CORRUPTIONS)}; choose all or some of "
                f"{', '.join(CORRUPTIONS)}"
            )
    return list(dict.fromkeys(names))


def parse_severities(spec: str) -> list[int]:
    """``"1-5"``, ``"3"`` or ``"1,3,5"`` -> sorted severities in 1..5."""
    text = str(spec).replace(" ", "")
    if re.fullmatch(r"[1-5]-[1-5]", text):
        lo, hi = map(int, text.split("-"))
        values = list(range(lo, hi + 1))
    elif re.fullmatch(r"[1-5](,[1-5])*", text):
        values = sorted(set(map(int, text.split(","))))
    else:
        values = []
    if not values:
        raise NeasError(
            f"severities: {spec!r} is not a severity range; use 1-5, 3, or a list like 1,3,5 (severities are 1..5)"
        )
    return values


@dataclass
class DecodeOptions:
    """How a command that reads image folders holds their images (:func:`neas.data.load_dataset`)."""

    decode: str = option(
        "auto",
        "image folders: decode into memory once, stream from disk, or auto (memory when the "
        "decoded images fit in --max-memory-gb)",
        valid=DECODE_MODES,
    )
    max_memory_gb: float = option(8.0, "with --decode auto: the most GiB of decoded images kept in memory", valid="> 0")

    @property
    def decoding(self) -> dict:
        """The keyword arguments of :func:`neas.data.load_dataset` these options set."""
        return {"decode": self.decode, "max_memory_gb": self.max_memory_gb}


@dataclass
class DataOptions(DecodeOptions):
    data: str = option("digits", "the dataset", valid=DATASETS)
    data_dir: str | None = option(None, "dataset root (cifar: a download directory or an ImageFolder copy)")
    download: bool = option(False, "let torchvision download cifar10/cifar100/svhn")

    @property
    def resolved_data_dir(self) -> str | None:
        """``data_dir`` as an absolute path (None when not given): what a run's records store, so a model
        or supernet file names its data from any working directory."""
        return None if self.data_dir is None else str(Path(self.data_dir).expanduser().resolve())


@dataclass
class DeviceOptions:
    seed: int = option(0, "seed of everything the command draws", valid="0..2147483647")
    device: str = option("auto", DEVICE_HELP)


@dataclass
class RunOptions(DeviceOptions):
    """A command that writes a resumable run directory."""

    workers: int = option(4, "loader processes for on-disk datasets", valid=">= 0")
    resume: bool = option(False, "continue the run in --out from its last checkpoint")


@dataclass
class TrainOptions(RunOptions):
    amp: bool = option(True, "mixed precision on CUDA")


@dataclass
class ScoringOptions:
    """How candidates are scored with supernet weights."""

    bn_batches: int = option(4, "R: BN recalibration batches", valid=">= 1")
    batch_size: int = option(128, "images per recalibration and scoring batch", valid=">= 1")


@dataclass
class QualityOptions:
    """What an evaluation reports beyond top-1 (``neas evaluate``, ``neas retrain``'s eval.json)."""

    temperature: str = option(
        "auto",
        "temperature scaling, fitted on the held-out part of the training split (auto: retrain "
        "fits when --holdout > 0, evaluate uses the model's stored one)",
        valid=TEMPERATURE_MODES,
    )
    corruptions: list[str] = option(
        default_factory=list,
        help="also score corrupted copies of the split: all, or names (gaussian_noise, motion_blur, fog, ...)",
    )
    severities: str = option("1-5", "corruption severities: 1-5, 3 or 1,3,5")
    corruption_seed: int = option(0, "seed of the corrupted copies", valid="0..2147483647")
    ood_data: str | None = option(
        None,
        "out-of-distribution images to tell apart from the split (any --data: an image folder with --ood-data-dir, "
        "cifar10, cifar100, svhn, digits), seen with the model's own transform",
        valid=DATASETS,
    )
    ood_data_dir: str | None = option(None, "the OOD dataset's root")
    ood_split: str = option("test", "the OOD dataset's split")
    ood_download: bool = option(False, "let torchvision download the OOD dataset (cifar10, cifar100, svhn)")
    cascade: bool = option(
        False,
        "fit a confidence-gated cascade on the held-out part of the training split (stored with the model) "
        "and report it on the evaluated split",
    )
    cascade_tolerance: float = option(
        0.5,
        "the cascade keeps top-1 (or with --cascade-exit risk, the coverage at 5 % selective risk) within this "
        "many points of the full ensemble's",
        valid="[0, 100]",
    )
    cascade_exit: str = option(
        "accuracy",
        "what the cascade's thresholds keep within --cascade-tolerance of the full ensemble: accuracy (top-1) "
        "or risk (coverage at 5 % selective risk, Xia & Bouganis 2023)",
        valid=CASCADE_EXITS,
    )

    def check_quality(self) -> None:
        """The corruption names and severities, and no option given without the one it refines (it would
        be silently ignored: ``--ood-data-dir`` without ``--ood-data``, fuzz report 2026-12 §10)."""
        self.corruptions = parse_corruptions(self.corruptions)
        parse_severities(self.severities)
        defaults = QualityOptions()
        for flag, needs, given in (
            ("--ood-data-dir", "--ood-data", self.ood_data_dir is not None),
            ("--ood-split", "--ood-data", self.ood_split != defaults.ood_split),
            ("--ood-download", "--ood-data", self.ood_download),
            ("--cascade-tolerance", "--cascade", self.cascade_tolerance != defaults.cascade_tolerance),
            ("--cascade-exit", "--cascade", self.cascade_exit != defaults.cascade_exit),
            ("--severities", "--corruptions", self.severities != defaults.severities),
            ("--corruption-seed", "--corruptions", self.corruption_seed != defaults.corruption_seed),
        ):
            if given and not getattr(self, needs[2:].replace("-", "_")):
                raise NeasError(f"{flag} is read only with {needs}, which is not given; give {needs} or drop {flag}")


@dataclass
class ExecutorOptions:
    """Where a command's independent jobs run (:func:`neas.executor.run_jobs`). The default, ``debug``,
    runs them in this process one after another: what ``rank``, ``run`` and ``ablate`` did before
    they had an executor, with the same results."""

    executor: str = option(
        "debug", "where the jobs run: debug (in this process, one after another) | local | slurm", valid=EXECUTORS
    )
    max_parallel: int = option(1, "jobs at once (local; slurm: the job array's parallelism)", valid=">= 1")
    threads_per_job: int = option(
        1,
        "CPU threads (torch, OpenMP, MKL) of each local or slurm job, whatever --max-parallel (debug jobs run "
        "at this process's): recorded and compared on resume (numbers differ in their last digits between "
        "thread counts)",
        valid=">= 1",
    )
    slurm: dict = option(
        default_factory=dict,
        help="--executor slurm: partition, gpus_per_node, cpus_per_task, mem_gb, timeout_min, additional_parameters",
        cli=False,
    )

    def check_executor_options(self) -> None:
        """The checks a range cannot say (call from ``__post_init__``): the SLURM options' values are
        checked whatever the executor (a typo waits for no submission to show)."""
        if not isinstance(self.slurm, dict):
            raise NeasError(f"slurm: must be a mapping of SLURM options, got {show(self.slurm)}")
        for key, value in self.slurm.items():
            if key in SLURM_OPTIONS and not _slurm_value_ok(key, value):
                raise NeasError(f"slurm.{key}: must be {SLURM_OPTIONS[key]}, got {show(value)}")


def _slurm_value_ok(key: str, value) -> bool:
    """Whether ``value`` is what :data:`SLURM_OPTIONS` says ``key`` takes (unknown keys: the executor's check)."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    integer = isinstance(value, int) and not isinstance(value, bool)
    if key == "partition":
        return isinstance(value, str) and bool(value.strip())
    if key == "mem_gb":
        return number and math.isfinite(value) and value > 0
    if key == "additional_parameters":
        return isinstance(value, dict) and all(isinstance(k, str) for k in value)
    if key == "setup":
        return isinstance(value, list) and all(isinstance(line, str) for line in value)
    return integer and value >= (0 if key == "gpus_per_node" else 1)
