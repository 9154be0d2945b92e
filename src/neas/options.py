"""Option groups several commands share, declared once (mixins of the commands' schemas)."""

from __future__ import annotations

from dataclasses import dataclass

from neas.config import option
from neas.errors import NeasError

__all__ = ["DEVICE_HELP", "DataOptions", "DeviceOptions", "RunOptions", "TrainOptions", "ScoringOptions"]

DEVICE_HELP = "auto | cpu | cuda | cuda:N"


def _next_post_init(obj, cls) -> None:
    """Runs the next ``__post_init__`` after ``cls``'s in ``obj``'s MRO: every mixin validates its own options."""
    follow = getattr(super(cls, obj), "__post_init__", None)
    if follow is not None:
        follow()


@dataclass
class DataOptions:
    data: str = option("digits", "digits | cifar10 | cifar100 | imagefolder")
    data_dir: "str | None" = option(None, "dataset root (cifar: a download directory or an ImageFolder copy)")
    download: bool = option(False, "let torchvision download cifar10/cifar100")


@dataclass
class DeviceOptions:
    seed: int = option(0, "seed of everything the command draws")
    device: str = option("auto", DEVICE_HELP)


@dataclass
class RunOptions(DeviceOptions):
    """A command that writes a resumable run directory."""

    workers: int = option(4, "loader processes for on-disk datasets")
    resume: bool = option(False, "continue the run in --out from its last checkpoint")

    def __post_init__(self):
        if self.workers < 0:
            raise NeasError(f"workers must not be negative, got {self.workers}")
        _next_post_init(self, RunOptions)


@dataclass
class TrainOptions(RunOptions):
    amp: bool = option(True, "mixed precision on CUDA")


@dataclass
class ScoringOptions:
    """How candidates are scored with supernet weights."""

    bn_batches: int = option(4, "R: BN recalibration batches")
    batch_size: int = option(128, "images per recalibration and scoring batch")

    def __post_init__(self):
        for key in ("bn_batches", "batch_size"):
            if getattr(self, key) < 1:
                raise NeasError(f"{key} must be at least 1, got {getattr(self, key)}")
        _next_post_init(self, ScoringOptions)
