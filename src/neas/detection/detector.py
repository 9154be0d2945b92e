"""A trained detector as a file: its weights and the record that rebuilds it (``neas detect``'s output).

A detection run directory holds ``model.safetensors`` (the RetinaNet's state dict) and
``detector.json`` beside it, the one record (format ``neas.detector/1``): the backbone (``neas`` with
its arch and space, or ``timm:<name>``), the feature mode, the classes and their COCO category ids,
the resizing, the anchors and FPN width, the post-processing, and the data it was scored on. From it
:func:`build_detector` makes the same module with fresh weights and :func:`load_detector` the trained
one, so ``neas evaluate`` and ``neas export`` need nothing but the run directory.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch.nn as nn
from torchvision.models.detection.retinanet import RetinaNetHead

from neas.detection.model import ASPECT_RATIOS, SCALES_PER_OCTAVE, build_retinanet, ensemble_body, timm_body
from neas.ensemble import build_ensemble
from neas.errors import NeasError
from neas.io import load_matching, load_weights, read_json, save_tensors, write_json
from neas.runfiles import DETECTOR, MODEL
from neas.space import EnsembleArch, SearchSpace

__all__ = ["FORMAT", "DetectorSpec", "build_detector", "load_detector", "save_detector"]

FORMAT = "neas.detector/1"


@dataclass(frozen=True)
class DetectorSpec:
    """Everything that decides the detector's modules and outputs (not its weights)."""

    backbone: str  # "neas" or "timm:<name>"
    arch: dict | None  # neas: EnsembleArch.to_json()
    space: dict | None  # neas: SearchSpace.to_dict()
    backbone_classes: int | None  # neas: the ensemble's classifier outputs (its unused heads' weights are kept)
    feature_mode: str  # mean | concat | path:J
    categories: list  # [{"id", "name"}]: label i is COCO category categories[i]["id"]
    min_size: int
    max_size: int
    anchor_sizes: list  # one size per FPN level P3-P7
    fpn_channels: int
    frozen_bn: bool
    score_thresh: float
    detections_per_img: int
    data: dict  # {"data_dir", "train_split", "val_split", "max_val_images"}: what eval.json scored
    head_norm: str = "none"  # the heads' convs: plain (RetinaNet's) or with GroupNorm ("group")
    train_min_sizes: list | None = None  # multi-scale training: shorter sides drawn per training image

    @property
    def num_classes(self) -> int:
        return len(self.categories)

    def to_json(self) -> dict:
        return {"format": FORMAT, **dataclasses.asdict(self), "num_classes": self.num_classes}

    @classmethod
    def from_json(cls, record: dict, where: str) -> DetectorSpec:
        if record.get("format") != FORMAT:
            raise NeasError(f"{where}: not a {FORMAT} detector record (format {record.get('format')!r})")
        names = [f.name for f in dataclasses.fields(cls) if f.name in record or f.default is dataclasses.MISSING]
        missing = [n for n in names if n not in record]
        if missing:
            raise NeasError(f"{where}: detector record lacks {', '.join(repr(n) for n in missing)}")
        spec = cls(**{n: record[n] for n in names})
        if spec.backbone == "neas" and not (isinstance(spec.arch, dict) and isinstance(spec.space, dict)):
            raise NeasError(f"{where}: a neas backbone needs 'arch' and 'space' objects")
        if not isinstance(spec.categories, list) or not spec.categories:
            raise NeasError(f"{where}: 'categories' must be a non-empty list of {{id, name}}")
        return spec


def build_detector(spec: DetectorSpec, body: tuple[nn.Module, list[int]] | None = None) -> nn.Module:
    """The RetinaNet of ``spec``; ``body``: the backbone body and its channels when already built (with
    its starting weights), else one is built from the spec with fresh weights."""
    if body is None:
        if spec.backbone == "neas":
            arch, space = EnsembleArch.from_json(spec.arch), SearchSpace.from_dict(spec.space)
            body = ensemble_body(build_ensemble(space, arch, spec.backbone_classes), spec.feature_mode)
        else:
            body = timm_body(spec.backbone[len("timm:") :])
    module, channels = body
    head = {}
    if spec.head_norm == "group":  # RetinaNet v2's heads (torchvision's retinanet_resnet50_fpn_v2)
        anchors = len(ASPECT_RATIOS) * SCALES_PER_OCTAVE
        # up to 32 groups of at least 2 channels: a 1x1 map (P7 of a small image) still normalises
        norm = partial(nn.GroupNorm, math.gcd(32, spec.fpn_channels // 2))
        head = {"head": RetinaNetHead(spec.fpn_channels, anchors, spec.num_classes, norm_layer=norm)}
    return build_retinanet(
        module,
        channels,
        spec.num_classes,
        # torchvision draws a training image's size from the tuple and evaluates at its last entry
        min_size=(*spec.train_min_sizes, spec.min_size) if spec.train_min_sizes else spec.min_size,
        max_size=spec.max_size,
        fpn_channels=spec.fpn_channels,
        anchor_sizes=tuple((s,) for s in spec.anchor_sizes),
        frozen_bn=spec.frozen_bn,
        score_thresh=spec.score_thresh,
        detections_per_img=spec.detections_per_img,
        **head,
    )


def save_detector(model: nn.Module, spec: DetectorSpec, run: Path) -> Path:
    """Writes ``run/model.safetensors`` and, beside it, the record that rebuilds it: ``run/detector.json``."""
    path = save_tensors(run / MODEL, dict(model.state_dict()), {"format": FORMAT})
    write_json(run / DETECTOR, spec.to_json())
    return path


def load_detector(path: str | Path) -> tuple[nn.Module, DetectorSpec]:
    """The trained detector of a detection run directory (or of its ``model.safetensors``), in eval mode."""
    path = Path(path)
    run = path if path.is_dir() else path.parent
    where = str(run / DETECTOR)
    spec = DetectorSpec.from_json(read_json(run / DETECTOR, "detector record"), where)
    model = build_detector(spec)
    tensors, _ = load_weights(run / MODEL)
    load_matching(model, tensors, f"{run / MODEL}: the weights do not fit the detector of {where}")
    return model.eval(), spec
