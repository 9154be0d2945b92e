"""The schema of ``neas evaluate``."""

from __future__ import annotations

from dataclasses import dataclass

from neas.config import option
from neas.errors import NeasError
from neas.options import DEVICE_HELP, DecodeOptions, QualityOptions
from neas.settings import validate_fields

__all__ = ["EvaluateConfig"]


@dataclass
class EvaluateConfig(QualityOptions, DecodeOptions):
    """The schema of ``neas evaluate``."""

    checkpoint: str | None = option(None, "a neas weights file or retrain run directory")
    official_checkpoint: str | None = option(None, "a released NEAS .pth.tar file")
    arch: str | None = option(None, "with --official-checkpoint: neas-s, neas-m or neas-l")
    data: str | None = option(None, "dataset", default_help="the dataset the weights were trained on")
    data_dir: str | None = option(None, "dataset root")
    split: str = option("test", "the split to evaluate")
    batch_size: int = option(128, "images per batch", valid=">= 1")
    workers: int = option(2, "loader processes for on-disk or corrupted images", valid=">= 0")
    device: str = option("auto", DEVICE_HELP)
    latency: bool = option(True, "measure the latency")
    save_scores: str | None = option(
        None, "write every per-image number (labels, predictions, confidences, OOD scores) to this .npz"
    )

    def __post_init__(self):
        validate_fields(self)
        self.check_quality()
        if self.save_scores is not None and not str(self.save_scores).endswith(".npz"):
            raise NeasError(f"save_scores: {self.save_scores!r} must end in .npz")
