"""Option groups several commands share, declared once (mixins of the commands' schemas; each
command's ``__post_init__`` checks their declared ranges with :func:`neas.config.validate_fields`)."""

from __future__ import annotations

from dataclasses import dataclass

from neas.config import option

__all__ = ["DEVICE_HELP", "DataOptions", "DeviceOptions", "RunOptions", "TrainOptions", "ScoringOptions"]

DEVICE_HELP = "auto | cpu | cuda | cuda:N"


@dataclass
class DataOptions:
    data: str = option("digits", "digits | cifar10 | cifar100 | imagefolder")
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
