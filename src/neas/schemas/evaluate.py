"""The schema of ``neas evaluate``."""

from __future__ import annotations

from dataclasses import dataclass

from neas.config import option
from neas.errors import NeasError
from neas.options import DEVICE_HELP, DecodeOptions, QualityOptions
from neas.settings import validate_fields

__all__ = ["EvaluateConfig"]

# options that do nothing without another: (option, the option it needs); given with a value other than
# its default without the other, it is refused rather than ignored
TRAINING_SPLIT = "train"  # the split whose held-out part the temperature and the cascade are fitted on


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


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
        self._check_no_ignored_options()

    def _check_no_ignored_options(self) -> None:
        """Refuses what would be silently ignored or contradict itself, before anything is loaded."""
        # an option without the one it refines: QualityOptions.check_quality (shared with neas retrain)
        for data, data_dir in (("data", "data_dir"), ("ood_data", "ood_data_dir")):
            if getattr(self, data) == "digits" and getattr(self, data_dir) is not None:
                raise NeasError(f"{_flag(data_dir)}: digits is built in and reads no folder; drop {_flag(data_dir)}")
        fits = [
            flag for flag, on in (("--cascade", self.cascade), ("--temperature fit", self.temperature == "fit")) if on
        ]
        if self.split == TRAINING_SPLIT and fits:
            raise NeasError(
                f"{fits[0]} fits on the held-out part of the training split, which --split {self.split} reports "
                "on; evaluate another split (the default, test)"
            )
        if self.arch is not None and self.checkpoint is not None:
            raise NeasError("--arch is for --official-checkpoint; a neas weights file (--checkpoint) stores its arch")
