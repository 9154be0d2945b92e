"""The schema of ``neas detect`` and its recipe presets (issue 27): a RetinaNet with a neas ensemble
(or a timm network) as the backbone, trained and scored on a COCO-format dataset.

The ``coco`` recipe is the paper's detection-transfer protocol (NEAS §4.4 and Table 6, the settings of FairNAS):
RetinaNet, COCO train2017 -> val2017, 12 epochs, 32 images per step (4 per GPU on 8 GPUs), SGD with
momentum 0.9 and weight decay 1e-4, learning rate 0.04 for those 32 images with a 500-iteration
linear warm-up, x0.1 after epochs 8 and 11, images resized to a shorter side of 800 (longer <= 1333).
The ``small`` recipe trains on CPU-size data (e.g. ``neas synth-detection``'s 128-pixel images).
"""

from __future__ import annotations

from dataclasses import dataclass

from neas.config import option
from neas.ensemble.settings import FEATURE_MODES, parse_feature_mode
from neas.errors import NeasError
from neas.options import TrainOptions
from neas.outputs import check_run_dir, resumes
from neas.settings import check_valid, validate_fields

__all__ = ["DETECT_PRESETS", "FEATURE_MODES", "DetectConfig"]

DETECT_PRESETS: dict[str, dict] = {
    # The paper's protocol (§4.4): batch 32 in all (4 per process on 8 GPUs), lr 0.04 per 32 images.
    "coco": {
        "epochs": 12,
        "batch_size": 4,
        "lr_per_32": 0.04,
        "warmup_iters": 500,
        "lr_steps": [8, 11],
        "lr_gamma": 0.1,
        "momentum": 0.9,
        "weight_decay": 1e-4,
        "min_size": 800,
        "max_size": 1333,
        "anchor_sizes": [32, 64, 128, 256, 512],
        "fpn_channels": 256,
        "grad_clip": 0.0,
        "head_norm": "none",
        "optimizer": "sgd",
    },
    # CPU-size images (~128 px): anchors one octave smaller, a narrow FPN, more epochs over few images.
    "small": {
        "epochs": 24,
        "batch_size": 16,
        "lr_per_32": 0.04,
        "warmup_iters": 100,
        "lr_steps": [16, 22],
        "lr_gamma": 0.1,
        "momentum": 0.9,
        "weight_decay": 1e-4,
        "min_size": 128,
        "max_size": 256,
        "anchor_sizes": [16, 32, 64, 128, 256],
        "fpn_channels": 64,
        "grad_clip": 10.0,
        "head_norm": "group",
        "optimizer": "sgd",
    },
}

_FROM_RECIPE = "the recipe's"


@dataclass
class DetectConfig(TrainOptions):
    """The schema of ``neas detect``: every field is a YAML key and a flag. Fields left ``None`` take
    the value of the chosen ``recipe`` (:data:`DETECT_PRESETS`) when the config is built."""

    data_dir: str | None = option(
        None, "COCO-format root: annotations/instances_<split>.json and <split>/ images (required)"
    )
    train_split: str = option("train2017", "the training split")
    val_split: str = option("val2017", "the split scored with COCO AP")
    backbone: str = option("neas", "neas (an ensemble: --arch) or timm:<model name>")
    arch: str = option("neas-s", "with --backbone neas: neas-s, neas-m, neas-l or an arch JSON file")
    space: str | None = option(None, "search space of --arch", default_help="the arch file's, else imagenet")
    backbone_weights: str | None = option(
        None, "backbone weights: a `neas retrain` model.safetensors; with timm:<name>, a timm checkpoint of <name>"
    )
    official_checkpoint: str | None = option(None, "backbone weights: a released NEAS .pth.tar (e.g. neas_s)")
    feature_mode: str = option("mean", "after the split, the FPN sees the paths' mean map, their concat, or path:J")
    out: str = option("runs/detect", "run directory")
    recipe: str = option("coco", "defaults for the options below", valid=tuple(DETECT_PRESETS))
    epochs: int | None = option(None, "training epochs", default_help=_FROM_RECIPE, valid=">= 1")
    batch_size: int | None = option(None, "images per process and step", default_help=_FROM_RECIPE, valid=">= 1")
    lr_per_32: float | None = option(
        None,
        "learning rate per 32 images; lr = lr_per_32 * batch_size * processes / 32 (linear scaling)",
        default_help=_FROM_RECIPE,
        valid="(0, 100]",
    )
    lr: float | None = option(None, "the learning rate itself (overrides --lr-per-32)", valid="(0, 100]")
    warmup_iters: int | None = option(
        None, "linear warm-up iterations (from lr/1000)", default_help=_FROM_RECIPE, valid=">= 0"
    )
    lr_steps: list[int] | None = option(
        None, "epochs after which the lr is multiplied by --lr-gamma", default_help=_FROM_RECIPE
    )
    lr_gamma: float | None = option(None, "lr factor at each step", default_help=_FROM_RECIPE, valid="(0, 1]")
    optimizer: str | None = option(
        None, "sgd (with --momentum) or adamw", default_help=_FROM_RECIPE, valid=("sgd", "adamw")
    )
    momentum: float | None = option(None, "SGD momentum", default_help=_FROM_RECIPE, valid="[0, 1)")
    weight_decay: float | None = option(
        None,
        "SGD weight decay (on every parameter, as torchvision's reference)",
        default_help=_FROM_RECIPE,
        valid=">= 0",
    )
    min_size: int | None = option(
        None, "shorter image side after resizing", default_help=_FROM_RECIPE, valid="16..10000"
    )
    max_size: int | None = option(None, "longer image side at most", default_help=_FROM_RECIPE, valid="16..10000")
    train_min_sizes: list[int] | None = option(
        None,
        "multi-scale training: each training image's shorter side drawn from these and --min-size",
        default_help="off",
    )
    anchor_sizes: list[int] | None = option(
        None, "anchor size of each FPN level P3-P7 (5 values)", default_help=_FROM_RECIPE
    )
    fpn_channels: int | None = option(None, "FPN channels", default_help=_FROM_RECIPE, valid="8..4096")
    head_norm: str | None = option(
        None,
        "the heads' convs: plain (RetinaNet's) or with GroupNorm (RetinaNet v2's; trains faster from scratch)",
        default_help=_FROM_RECIPE,
        valid=("none", "group"),
    )
    grad_clip: float | None = option(
        None, "clip the gradients' global L2 norm to this (0: off)", default_help=_FROM_RECIPE, valid=">= 0"
    )
    frozen_bn: bool | None = option(
        None, "freeze the backbone's BatchNorm", default_help="on with backbone weights, else off"
    )
    flip: bool = option(
        True, "random horizontal flips of the training images (off for mirror-sensitive classes, e.g. digits)"
    )
    max_train_images: int | None = option(None, "train on the first N images only", default_help="all", valid=">= 1")
    max_val_images: int | None = option(None, "score the first N images only", default_help="all", valid=">= 1")
    score_thresh: float = option(0.05, "keep detections scoring at least this", valid="[0, 1)")
    detections_per_img: int = option(100, "detections kept per image (COCO AP counts 100)", valid=">= 1")
    eval_every: int = option(0, "also score the val split every N epochs (0: at the end only)", valid=">= 0")
    channels_last: bool = option(True, "channels-last memory format on CUDA")

    @staticmethod
    def check_outputs(values: dict) -> None:
        """An existing --out is refused before torch is imported (neas.config.check_outputs); --resume of a
        directory not there yet starts it."""
        check_run_dir(values["out"], resumes(values["out"], bool(values["resume"])), "detect")

    def __post_init__(self):
        check_valid(tuple(DETECT_PRESETS), self.recipe, "recipe")
        for key, value in DETECT_PRESETS[self.recipe].items():
            if getattr(self, key) is None:
                setattr(self, key, list(value) if isinstance(value, list) else value)
        validate_fields(self)  # the preset's values too
        if self.data_dir is None:
            raise NeasError("data_dir: required (a COCO-format root; `neas synth-detection --out DIR` writes one)")
        self._check_backbone()
        parse_feature_mode(self.feature_mode)
        if len(self.anchor_sizes) != 5 or any(s < 1 for s in self.anchor_sizes):
            raise NeasError(f"anchor_sizes: expected 5 sizes >= 1 (P3-P7), got {self.anchor_sizes}")
        if self.lr_steps != sorted(set(self.lr_steps)) or any(s < 1 for s in self.lr_steps):
            raise NeasError(
                f"lr_steps: expected increasing epochs >= 1 (steps past --epochs never apply), got {self.lr_steps}"
            )
        if self.train_min_sizes is not None and any(size < 16 for size in self.train_min_sizes):
            raise NeasError(f"train_min_sizes: expected sizes >= 16, got {self.train_min_sizes}")
        if self.min_size > self.max_size:
            raise NeasError(f"min_size ({self.min_size}) must not exceed max_size ({self.max_size})")
        if self.frozen_bn is None:
            self.frozen_bn = self.backbone_weights is not None or self.official_checkpoint is not None

    @property
    def timm_name(self) -> str | None:
        """The timm model of ``--backbone timm:<name>``; None for a neas backbone."""
        return self.backbone[len("timm:") :] if self.backbone.startswith("timm:") else None

    def _check_backbone(self) -> None:
        if self.backbone_weights is not None and self.official_checkpoint is not None:
            raise NeasError("give --backbone-weights or --official-checkpoint, not both")
        if self.backbone == "neas":
            return
        if not self.timm_name:
            raise NeasError(
                f"backbone: unknown {self.backbone!r}; choose neas or timm:<model name>, e.g. timm:resnet18"
            )
        if self.official_checkpoint is not None or self.feature_mode != "mean":
            raise NeasError(
                f"--official-checkpoint and --feature-mode are for --backbone neas, not {self.backbone} "
                "(its pretrained weights: --backbone-weights FILE, a timm checkpoint)"
            )
        import timm  # imports torch: only when a timm backbone is checked

        from neas.errors import suggest

        if not timm.is_model(self.timm_name):
            raise NeasError(
                f"backbone: {self.timm_name!r} is not a timm {timm.__version__} model"
                f"{suggest(self.timm_name, timm.list_models())}; see timm.list_models()"
            )

    def scaled_lr(self, world: int) -> float:
        """The learning rate of ``world`` processes: ``lr`` when given, else ``lr_per_32`` scaled linearly
        by the global batch (``batch_size * world`` images per step)."""
        return self.lr if self.lr is not None else self.lr_per_32 * self.batch_size * world / 32
