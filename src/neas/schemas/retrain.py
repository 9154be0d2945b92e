"""The schema of ``neas retrain`` and its recipe presets (docs/DESIGN.md §9): the released models'
ImageNet recipe, one for small data (CIFAR-size images, digits) that finishes in minutes on a CPU, and
one for fine-tuning trained weights (``--init``)."""

from __future__ import annotations

from dataclasses import dataclass

from neas.config import option
from neas.errors import NeasError
from neas.options import DataOptions, QualityOptions, TrainOptions
from neas.outputs import check_run_dir
from neas.settings import check_valid, validate_fields

__all__ = ["RETRAIN_PRESETS", "RetrainConfig"]

RETRAIN_PRESETS: dict[str, dict] = {
    # The released models: RMSpropTF(decay .9, momentum .9, eps 1e-3), lr 0.064 per 2048
    # images, wd 1e-5 (not biases/BN), cosine with warm-up, label smoothing 0.1, dropout 0.2,
    # RandAugment rand-m9-mstd0.5, random erasing 0.2, EMA 0.9999.
    "imagenet": {
        "epochs": 350,
        "batch_size": 128,
        "lr_per_2048": 0.064,
        "warmup_epochs": 3,
        "weight_decay": 1e-5,
        "label_smoothing": 0.1,
        "dropout": 0.2,
        "randaugment": "rand-m9-mstd0.5",
        "erase_prob": 0.2,
        "ema_decay": 0.9999,
    },
    # Same parts, scaled for a few hundred steps: a larger learning rate per image, a short
    # warm-up and an EMA that forgets within an epoch or two.
    "small": {
        "epochs": 30,
        "batch_size": 64,
        "lr_per_2048": 0.5,
        "warmup_epochs": 1,
        "weight_decay": 1e-5,
        "label_smoothing": 0.1,
        "dropout": 0.2,
        "randaugment": "rand-m9-mstd0.5",
        "erase_prob": 0.2,
        "ema_decay": 0.998,
    },
}
# Fine-tuning a trained ensemble (--init): the small recipe with a third of its epochs (still one warm-up
# epoch) and an EMA that forgets within a few hundred steps; --frozen-bn is optional. Its learning rate
# stays the small recipe's: measured on CIFAR-10 (docs/RESULTS.md §9), 10x lower fine-tuned 5.3 points
# worse and 3x lower 1.7 points worse (weights trained with a lower rate, e.g. the released ImageNet
# ones at 0.064, may want theirs: --lr-per-2048).
RETRAIN_PRESETS["finetune"] = RETRAIN_PRESETS["small"] | {"epochs": 10, "ema_decay": 0.995}


_FROM_RECIPE = "the recipe's"


@dataclass
class RetrainConfig(DataOptions, TrainOptions, QualityOptions):
    """The schema of ``neas retrain``: every field is a YAML key and a flag. Fields left ``None``
    take the value of the chosen ``recipe`` (:data:`RETRAIN_PRESETS`) when the config is built."""

    arch: str = option("neas-s", "neas-s, neas-m, neas-l or an arch JSON file (e.g. a search's arch.json)")
    space: str | None = option(None, "search space", default_help="the arch file's, else imagenet")
    out: str = option("runs/retrain", "run directory")
    recipe: str = option("small", "defaults for the options below", valid=tuple(RETRAIN_PRESETS))
    epochs: int | None = option(None, "training epochs", default_help=_FROM_RECIPE, valid=">= 1")
    batch_size: int | None = option(None, "images per process and step", default_help=_FROM_RECIPE, valid=">= 1")
    lr_per_2048: float | None = option(
        None, "learning rate per 2048 images (scaled by the global batch)", default_help=_FROM_RECIPE, valid="(0, 100]"
    )
    warmup_epochs: int | None = option(None, "warm-up epochs", default_help=_FROM_RECIPE, valid=">= 0")
    weight_decay: float | None = option(
        None, "weight decay (not on biases and BN)", default_help=_FROM_RECIPE, valid=">= 0"
    )
    label_smoothing: float | None = option(None, "label smoothing", default_help=_FROM_RECIPE, valid="[0, 1)")
    dropout: float | None = option(None, "dropout before each classifier", default_help=_FROM_RECIPE, valid="[0, 1)")
    randaugment: str | None = option(None, "timm RandAugment policy, or none", default_help=_FROM_RECIPE)
    erase_prob: float | None = option(None, "random erasing probability", default_help=_FROM_RECIPE, valid="[0, 1]")
    ema_decay: float | None = option(None, "EMA decay; 0 disables the EMA", default_help=_FROM_RECIPE, valid="[0, 1)")
    init: str | None = option(
        None,
        "start from these weights (fine-tuning): a neas model.safetensors or run directory, a timm folder "
        "(config.json + model.safetensors) or a released .pth.tar; the classifiers are re-initialised when "
        "the classes differ",
        default_help="from scratch",
    )
    frozen_bn: bool = option(False, "freeze every BatchNorm (statistics and affine) while training, e.g. to fine-tune")
    holdout: float = option(
        0.0, "leave out this held-out fraction of the training split (to mirror a search's)", valid="[0, 1)"
    )
    eval_split: str = option("test", "score on the test split or on the held-out part", valid=("test", "holdout"))
    eval_every: int = option(1, "epochs between evaluations", valid=">= 1")
    compile: str = option(
        "auto", "torch.compile the training forward (auto: runs of >= 5000 steps)", valid=("auto", "on", "off")
    )

    @staticmethod
    def check_outputs(values: dict) -> None:
        """An existing --out is refused before torch is imported (neas.config.check_outputs)."""
        check_run_dir(values["out"], bool(values["resume"]), "retrain")

    def __post_init__(self):
        check_valid(tuple(RETRAIN_PRESETS), self.recipe, "recipe")
        preset_warmup = RETRAIN_PRESETS[self.recipe].get("warmup_epochs")
        given_warmup = (
            self.warmup_epochs is not None and self.warmup_epochs != preset_warmup
        )  # the preset's runs any length
        if given_warmup and self.epochs is not None and self.warmup_epochs >= self.epochs > 0:
            raise NeasError(f"warmup_epochs ({self.warmup_epochs}) must be less than epochs ({self.epochs})")
        if self.recipe == "finetune" and not self.init:
            raise NeasError("recipe finetune starts from trained weights: give --init FILE (or another --recipe)")
        if 0 < self.holdout < 0.01:
            raise NeasError(f"holdout must be 0 or at least 0.01, got {self.holdout!r}")
        for key, value in RETRAIN_PRESETS[self.recipe].items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        if self.randaugment in ("none", ""):
            self.randaugment = "none"
        validate_fields(self)  # the preset's values too
        if self.eval_split == "holdout" and not self.holdout:
            raise NeasError("eval_split holdout needs a holdout fraction > 0")
        self.check_quality()
        if self.temperature == "fit" and (not self.holdout or self.eval_split == "holdout"):
            raise NeasError(
                "temperature fit needs a held-out part that is not the evaluated split: set --holdout 0.1 "
                "with --eval-split test (or --temperature none)"
            )
        if self.cascade and (not self.holdout or self.eval_split == "holdout"):
            raise NeasError(
                "cascade fits its thresholds on a held-out part that is not the evaluated split: set --holdout 0.1 "
                "with --eval-split test"
            )
        if self.randaugment != "none":
            from timm.data.auto_augment import rand_augment_transform  # timm imports torch: only when checked

            try:
                rand_augment_transform(self.randaugment, {})
            except Exception:
                raise NeasError(
                    f"randaugment: {self.randaugment!r} is not a timm RandAugment policy (e.g. rand-m9-mstd0.5), "
                    f"or none"
                ) from None
