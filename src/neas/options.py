"""Option groups several commands share, declared once (mixins of the commands' schemas; each
command's ``__post_init__`` checks their declared ranges with :func:`neas.config.validate_fields`)."""

from __future__ import annotations

from dataclasses import dataclass

from neas.config import option
from neas.data.corruptions import parse_corruptions, parse_severities
from neas.data.datasets import DATASETS, DECODE_MODES

__all__ = [
    "DEVICE_HELP",
    "DecodeOptions",
    "DataOptions",
    "DeviceOptions",
    "RunOptions",
    "TrainOptions",
    "ScoringOptions",
    "QualityOptions",
]

DEVICE_HELP = "auto | cpu | cuda | cuda:N"


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
    data_dir: "str | None" = option(None, "dataset root (cifar: a download directory or an ImageFolder copy)")
    download: bool = option(False, "let torchvision download cifar10/cifar100")


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


TEMPERATURE_MODES = ("auto", "fit", "none")


@dataclass
class QualityOptions:
    """What an evaluation reports beyond top-1 (``neas evaluate``, ``neas retrain``'s eval.json)."""

    temperature: str = option(
        "auto",
        "temperature scaling, fitted on the held-out part of the training split (auto: retrain "
        "fits when --holdout > 0, evaluate uses the model's stored one)",
        valid=TEMPERATURE_MODES,
    )
    corruptions: "list[str]" = option(
        default_factory=list,
        help="also score corrupted copies of the split: all, or names (gaussian_noise, motion_blur, fog, ...)",
    )
    severities: str = option("1-5", "corruption severities: 1-5, 3 or 1,3,5")
    corruption_seed: int = option(0, "seed of the corrupted copies", valid="0..2147483647")

    def check_quality(self) -> None:

        self.corruptions = parse_corruptions(self.corruptions)
        parse_severities(self.severities)
