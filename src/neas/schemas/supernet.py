"""The schema of ``neas train-supernet`` (its shrinking settings: :class:`neas.shrink.settings.ShrinkSettings`)."""

from __future__ import annotations

from dataclasses import dataclass

from neas.config import nested, option
from neas.errors import NeasError
from neas.options import DataOptions, TrainOptions
from neas.outputs import check_run_dir
from neas.settings import validate_fields
from neas.shrink.settings import ShrinkSettings

__all__ = ["SupernetConfig"]


@dataclass
class SupernetConfig(DataOptions, TrainOptions):
    """The schema of ``neas train-supernet``: every field is a YAML key and a flag."""

    out: str = option("runs/supernet", "run directory")
    space: str = option("tiny", "search space preset or YAML file")
    holdout: float = option(
        0.1, "fraction of the training split held out to score candidates (never trained on)", valid="(0, 1)"
    )
    epochs: int = option(12, "training epochs", valid=">= 1")
    batch_size: int = option(64, "images per process and step", valid=">= 1")
    lr: float | None = option(
        None, "base learning rate", default_help="0.5 x global batch / 1024, the paper's 0.5 at 1024", valid="(0, 100]"
    )
    momentum: float = option(0.9, "SGD momentum", valid="[0, 1)")
    weight_decay: float = option(4e-5, "SGD weight decay", valid=">= 0")
    warmup_epochs: int = option(0, "linear warm-up epochs", valid=">= 0")
    scale_shared_grad: bool = option(True, "divide the shared part's gradient by K")
    augment: bool = option(True, "random crops (+ flips except on digits)")
    shrink: ShrinkSettings = nested(ShrinkSettings, prefix="shrink_", rename={"mode": "shrink"})
    bn_batches: int = option(4, "R: BN recalibration batches per probed ensemble", valid=">= 1")
    probe_images: int = option(256, "held-out images each probed ensemble is scored on", valid=">= 1")
    compile: str = option(
        "off",
        "blocks: torch.compile every (layer, op) block and head once, reused by every sampled ensemble "
        "(docs/PERFORMANCE.md: when it pays)",
        valid=("off", "blocks"),
    )

    @staticmethod
    def check_outputs(values: dict) -> None:
        """An existing --out is refused before torch is imported (neas.config.check_outputs)."""
        check_run_dir(values["out"], bool(values["resume"]), "train-supernet")

    def __post_init__(self):
        validate_fields(self)
        if self.holdout < 0.01:  # 1% of the training split: a search is never scored on a handful of images
            raise NeasError(
                f"holdout must be at least 0.01 (the search is scored on the held-out images), got {self.holdout!r}"
            )
        if self.warmup_epochs >= self.epochs and self.warmup_epochs:
            raise NeasError(
                f"warmup_epochs ({self.warmup_epochs}) must be less than epochs ({self.epochs}): the learning rate "
                "would never reach its base value"
            )
