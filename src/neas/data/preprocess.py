"""How an image file becomes the tensor a model sees: the one owner (issue 38, item 3).

A :class:`Preprocessing` is timm's evaluation transform with its numbers: resize the short side to
``floor(input_size / crop_pct)`` (``interpolation``), centre-crop ``input_size`` x ``input_size``, scale
to [0, 1] and normalise with ``mean`` / ``std``. Every image file is seen through it, whatever its size:
there is no exception for images that are already ``input_size`` x ``input_size`` (at ``crop_pct`` 1.0
such an image passes through unchanged because the resize and the crop are identities, not because of
a rule of its own). The training part of a split is seen at ``crop_pct`` 1.0 (the whole short side) and
augmented from there (:data:`TRAIN_CROP_PCT`).

Which ``crop_pct`` a model is evaluated at follows how its training part was augmented
(:func:`evaluation_crop_pct`): images held in memory are augmented with padded random crops of the
whole image, so the model is evaluated on the whole image too (1.0); streamed images are augmented with
timm's ``RandomResizedCrop``, so the model is evaluated as timm evaluates such models, at timm's
``DEFAULT_CROP_PCT`` (0.875). The released NEAS-S/M/L checkpoints were evaluated at 224 px and 0.875
(:data:`RELEASED`).

A retraining stores its model's :class:`Preprocessing` in ``model.safetensors``; ``neas evaluate``, the
held-out fits, OOD images, the ONNX metadata, the timm ``pretrained_cfg``, the model card and the
report all read it from there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from neas.errors import NeasError, show

__all__ = [
    "DEFAULT_CROP_PCT",
    "INTERPOLATIONS",
    "MEAN",
    "STD",
    "TRAIN_CROP_PCT",
    "Preprocessing",
    "evaluation_crop_pct",
]

MEAN = (0.485, 0.456, 0.406)  # ImageNet's, as timm's IMAGENET_DEFAULT_MEAN
STD = (0.229, 0.224, 0.225)
DEFAULT_CROP_PCT = 0.875  # timm's DEFAULT_CROP_PCT: the evaluation crop of models trained with RandomResizedCrop
TRAIN_CROP_PCT = 1.0  # the training view: the whole short side, augmented from there
INTERPOLATIONS = ("bicubic", "bilinear", "nearest")
_MAX_INPUT_SIZE = 4096


def evaluation_crop_pct(streamed: bool) -> float:
    """The evaluation crop of a model whose training part was ``streamed`` (timm's RandomResizedCrop:
    0.875) or held in memory (padded random crops of the whole image: 1.0). See the module docstring."""
    return DEFAULT_CROP_PCT if streamed else TRAIN_CROP_PCT


def _fraction(value, where: str) -> float:
    if not (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)):
        raise NeasError(f"{where} must be a number, got {show(value, 40)}")
    return float(value)


def _triple(value, where: str, positive: bool) -> tuple[float, float, float]:
    if not (isinstance(value, (list, tuple)) and len(value) == 3):
        raise NeasError(f"{where} must be 3 numbers (R, G, B), got {show(value, 60)}")
    out = tuple(_fraction(v, where) for v in value)
    if any(v <= 0 if positive else not 0 <= v <= 1 for v in out):
        raise NeasError(f"{where} must be 3 numbers in {'(0, 1]' if positive else '[0, 1]'}, got {show(value, 60)}")
    return out


@dataclass(frozen=True)
class Preprocessing:
    """timm's evaluation transform at these numbers (see the module docstring); checked when built."""

    input_size: int
    crop_pct: float
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = MEAN
    std: tuple[float, float, float] = STD

    def __post_init__(self):
        size = self.input_size
        if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= _MAX_INPUT_SIZE:
            raise NeasError(f"preprocessing: 'input_size' must be an integer in 1..{_MAX_INPUT_SIZE}, got {show(size)}")
        crop = _fraction(self.crop_pct, "preprocessing: 'crop_pct'")
        if not 0.1 <= crop <= 1.0:
            raise NeasError(f"preprocessing: 'crop_pct' must be in [0.1, 1], got {show(self.crop_pct)}")
        if self.interpolation not in INTERPOLATIONS:
            raise NeasError(
                f"preprocessing: 'interpolation' must be one of {', '.join(INTERPOLATIONS)}, "
                f"got {show(self.interpolation, 40)}"
            )
        object.__setattr__(self, "crop_pct", crop)
        object.__setattr__(self, "mean", _triple(self.mean, "preprocessing: 'mean'", positive=False))
        object.__setattr__(self, "std", _triple(self.std, "preprocessing: 'std'", positive=True))

    @classmethod
    def for_training(cls, input_size: int, streamed: bool) -> Preprocessing:
        """The evaluation transform of a model trained at ``input_size`` on ``streamed`` (or in-memory) images."""
        return cls(input_size, evaluation_crop_pct(streamed))

    @property
    def resize_size(self) -> int:
        """The short side an image is resized to before the centre crop (timm's ``floor(S / crop_pct)``)."""
        return math.floor(self.input_size / self.crop_pct)

    def data_config(self) -> dict:
        """timm's data config (what ``timm.data.resolve_data_config`` returns and ``create_transform`` takes)."""
        return {
            "input_size": (3, self.input_size, self.input_size),
            "interpolation": self.interpolation,
            "mean": self.mean,
            "std": self.std,
            "crop_pct": self.crop_pct,
            "crop_mode": "center",
        }

    def to_json(self) -> dict:
        return {
            "input_size": self.input_size,
            "crop_pct": self.crop_pct,
            "crop_mode": "center",
            "interpolation": self.interpolation,
            "mean": list(self.mean),
            "std": list(self.std),
        }

    @classmethod
    def from_json(cls, record, where: str) -> Preprocessing:
        """The record :meth:`to_json` wrote, every field checked; errors name ``where`` and the field."""
        if not isinstance(record, dict):
            raise NeasError(f"{where}: 'preprocessing' must be a JSON object, got {type(record).__name__}")
        if record.get("crop_mode", "center") != "center":
            got = show(record["crop_mode"], 40)
            raise NeasError(f"{where}: preprocessing: 'crop_mode' must be 'center', got {got}")
        unknown = sorted(set(record) - {"input_size", "crop_pct", "crop_mode", "interpolation", "mean", "std"})
        if unknown:
            raise NeasError(f"{where}: preprocessing: unknown field(s) {', '.join(map(repr, unknown))}")
        try:
            return cls(
                record.get("input_size"),
                record.get("crop_pct"),
                record.get("interpolation", "bicubic"),
                record.get("mean", MEAN),
                record.get("std", STD),
            )
        except NeasError as exc:
            raise NeasError(f"{where}: {exc}") from None

    def describe(self) -> str:
        """The transform in one sentence (the README's, the model card's and the report's wording)."""
        mean = ", ".join(f"{v:g}" for v in self.mean)
        std = ", ".join(f"{v:g}" for v in self.std)
        s = self.input_size
        return (
            f"resize the short side to {self.resize_size} px ({self.interpolation}; {s} / crop_pct "
            f"{self.crop_pct:g}, rounded down), centre-crop {s} x {s}, scale to [0, 1], normalise with mean "
            f"({mean}) and std ({std}); every image, whatever its size"
        )

    def transform(self, normalized: bool = True):
        """timm's evaluation transform: a PIL image to a float tensor (3, S, S), normalised; with
        ``normalized=False`` to a uint8 tensor (neas normalises on the device)."""
        from timm.data import create_transform

        return create_transform(**self.data_config(), is_training=False, use_prefetcher=not normalized)
