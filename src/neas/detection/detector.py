"""A trained detector as a file: its weights and the record that rebuilds it (``neas detect``'s output).

A detection run directory holds ``model.safetensors`` (the RetinaNet's state dict) and
``detector.json`` beside it, the one record (format ``neas.detector/1``): the backbone (``neas`` with
its arch and space, or ``timm:<name>``), the feature mode, the classes and their COCO category ids,
the resizing, the anchors and FPN width, the post-processing, and the data it was scored on. From it
:func:`build_detector` makes the same module with fresh weights and :func:`load_detector` the trained
one, so ``neas evaluate`` and ``neas export`` need nothing but the run directory.

A record is read as untrusted input: every value is checked for its type and range
(:meth:`DetectorSpec.from_json`; a ``score_thresh`` of NaN silently gave AP 0, a
``detections_per_img`` of -1 dropped a detection), and ``model.safetensors`` carries a copy of the
record in its metadata, which ``detector.json`` must equal (``data.data_dir`` aside, where the data
moved to): a hand-edited record is refused before anything is built.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch.nn as nn
from torchvision.models.detection.retinanet import RetinaNetHead

from neas.detection.coco_format import check_categories, is_int, is_number
from neas.detection.model import ASPECT_RATIOS, SCALES_PER_OCTAVE, build_retinanet, ensemble_body, timm_body
from neas.ensemble import build_ensemble
from neas.ensemble.settings import parse_feature_mode
from neas.errors import NeasError, show
from neas.io import load_matching, load_weights, read_json, read_metadata, save_tensors, write_json
from neas.runfiles import DETECTOR, MODEL
from neas.space import EnsembleArch, SearchSpace

__all__ = ["FORMAT", "DetectorSpec", "build_detector", "load_detector", "save_detector"]

FORMAT = "neas.detector/1"
RECORD_KEY = "detector"  # model.safetensors' metadata: a copy of detector.json (JSON, sorted keys)
_ABSENT = "(absent)"


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
    last_conv: bool  # timm: C5 after the network's final 1x1 conv (records before issue 40; neas detect writes false)
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
        """The spec of a detector record, every value checked (type and range, as ``neas detect``'s
        schema checks the values it writes); a NeasError starting with ``where`` names the field."""
        if record.get("format") != FORMAT:
            raise NeasError(f"{where}: not a {FORMAT} detector record (format {show(record.get('format'))})")
        names = [f.name for f in dataclasses.fields(cls) if f.name in record or f.default is dataclasses.MISSING]
        missing = [n for n in names if n not in record and n != "last_conv"]
        if missing:
            raise NeasError(f"{where}: detector record lacks {', '.join(repr(n) for n in missing)}")
        # records written before issue 40 lack last_conv: their timm bodies ended at the final 1x1 conv
        record = {"last_conv": record.get("backbone") != "neas", **record}
        _check_values(record, where)
        return cls(**{n: record[n] for n in names})


def _is_int(low: int, high: int):
    return lambda v: is_int(v) and low <= v <= high


def _is_ints(low: int, high: int, count: int | None = None):
    def check(v) -> bool:
        return (
            isinstance(v, list)
            and bool(v)
            and len(v) == (count or len(v))
            and all(is_int(x) and low <= x <= high for x in v)
        )

    return check


MAX_SIDE = 10_000  # pixels of a resized image's side (COCO trains at 800 / 1333)
MAX_CLASSES = 100_000  # a backbone classifier's outputs (ImageNet-21k: 21,843)
_NAME = (lambda v: isinstance(v, str) and bool(v), "a non-empty string")
# {field: (check, what it must be)}: the ranges of neas detect's schema (schemas/detect.py), with upper
# bounds where a value sizes an allocation
_VALUES = {
    "backbone": (
        lambda v: v == "neas" or (isinstance(v, str) and v.startswith("timm:") and len(v) > 5),
        "'neas' or 'timm:<model name>'",
    ),
    "feature_mode": (lambda v: isinstance(v, str), "mean, concat or path:J"),
    "min_size": (_is_int(16, MAX_SIDE), f"an integer in 16..{MAX_SIDE}"),
    "max_size": (_is_int(16, MAX_SIDE), f"an integer in 16..{MAX_SIDE}"),
    "train_min_sizes": (
        lambda v: v is None or _is_ints(16, MAX_SIDE)(v),
        f"null or a list of integers in 16..{MAX_SIDE}",
    ),
    "anchor_sizes": (_is_ints(1, 100 * MAX_SIDE, 5), "5 integers >= 1 (P3-P7)"),
    "fpn_channels": (_is_int(8, 4096), "an integer in 8..4096"),
    "head_norm": (lambda v: v in ("none", "group"), "'none' or 'group'"),
    "frozen_bn": (lambda v: isinstance(v, bool), "true or false"),
    "last_conv": (lambda v: isinstance(v, bool), "true or false"),
    "score_thresh": (lambda v: is_number(v) and 0 <= v < 1, "a finite number in [0, 1)"),
    "detections_per_img": (_is_int(1, 100_000), "an integer in 1..100000"),
    "categories": (lambda v: isinstance(v, list), "a list of {id, name}"),
    "data": (lambda v: isinstance(v, dict), "an object"),
}
_DATA = {
    "data_dir": _NAME,
    "train_split": _NAME,
    "val_split": _NAME,
    "max_val_images": (lambda v: v is None or (is_int(v) and v >= 1), "null or an integer >= 1"),
    "eval_batch_size": (_is_int(1, 100_000), "an integer >= 1"),
}


def _check_fields(values: dict, fields: dict, where: str, required: tuple = ()) -> None:
    missing = [k for k in required if k not in values]
    if missing:
        raise NeasError(f"{where}: lacks {', '.join(repr(k) for k in missing)}")
    for key, (check, what) in fields.items():
        if key in values and not check(values[key]):
            raise NeasError(f"{where}: {key}: expected {what}, got {show(values[key])}")


def _check_values(record: dict, where: str) -> None:
    """Every value of a detector record in its type and range, and the fields consistent with each other."""
    _check_fields(record, _VALUES, where)
    _check_fields(record["data"], _DATA, f"{where}: data", required=("data_dir", "train_split", "val_split"))
    if record["min_size"] > record["max_size"]:
        raise NeasError(f"{where}: min_size ({record['min_size']}) must not exceed max_size ({record['max_size']})")
    categories = check_categories(record["categories"], f"{where}")
    if categories != record["categories"] or len(categories) > MAX_CLASSES:
        raise NeasError(
            f"{where}: categories: expected at most {MAX_CLASSES} {{id, name}} sorted by id (label i is "
            f"categories[i]), got {show(record['categories'])}"
        )
    if record.get("num_classes", len(categories)) != len(categories):
        raise NeasError(f"{where}: num_classes: {show(record['num_classes'])} for {len(categories)} categories")
    try:
        if record["backbone"] == "neas":
            _check_neas_backbone(record)
        elif any(record.get(k) is not None for k in ("arch", "space", "backbone_classes")):
            raise NeasError("arch, space and backbone_classes: expected null for a timm backbone")
        elif record["feature_mode"] != "mean":
            raise NeasError(f"feature_mode: expected 'mean' for a timm backbone, got {show(record['feature_mode'])}")
    except NeasError as exc:
        raise NeasError(f"{where}: {exc}") from None


def _check_neas_backbone(record: dict) -> None:
    if not (isinstance(record["arch"], dict) and isinstance(record["space"], dict)):
        raise NeasError("a neas backbone needs 'arch' and 'space' objects")
    if record["last_conv"]:
        raise NeasError("last_conv: expected false for a neas backbone (its C5 is the last stage's output)")
    classes = record["backbone_classes"]
    if not (is_int(classes) and 1 <= classes <= MAX_CLASSES):
        raise NeasError(f"backbone_classes: expected an integer in 1..{MAX_CLASSES}, got {show(classes)}")
    arch = EnsembleArch.from_json(record["arch"])
    SearchSpace.from_dict(record["space"])
    parse_feature_mode(record["feature_mode"], arch.num_paths)


def build_detector(spec: DetectorSpec, body: tuple[nn.Module, list[int]] | None = None) -> nn.Module:
    """The RetinaNet of ``spec``; ``body``: the backbone body and its channels when already built (with
    its starting weights), else one is built from the spec with fresh weights."""
    if body is None:
        if spec.backbone == "neas":
            arch, space = EnsembleArch.from_json(spec.arch), SearchSpace.from_dict(spec.space)
            body = ensemble_body(build_ensemble(space, arch, spec.backbone_classes), spec.feature_mode)
        else:
            body = timm_body(spec.backbone[len("timm:") :], last_conv=spec.last_conv)
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
    """Writes ``run/model.safetensors``, with a copy of the record in its metadata, and, beside it, the
    record that rebuilds it: ``run/detector.json``."""
    record = spec.to_json()
    metadata = {"format": FORMAT, RECORD_KEY: json.dumps(record, sort_keys=True)}
    path = save_tensors(run / MODEL, dict(model.state_dict()), metadata)
    write_json(run / DETECTOR, record)
    return path


def _check_same_record(record: dict, weights: Path, where: str) -> None:
    """``record`` (detector.json) equals the copy ``weights`` was saved with (files saved before the copy was
    kept pass); only ``data.data_dir`` may differ, the place the data moved to. NeasError otherwise."""
    saved = read_metadata(weights).get(RECORD_KEY)
    if saved is None:
        return
    try:
        saved = json.loads(saved)
    except ValueError:
        raise NeasError(f"{weights}: its metadata's copy of the detector record is not JSON (a damaged file)") from None

    def comparable(r: dict) -> dict:
        data = r.get("data")
        return {**r, "data": {k: v for k, v in data.items() if k != "data_dir"}} if isinstance(data, dict) else r

    mine, theirs = comparable(record), comparable(saved)
    differ = sorted(k for k in mine.keys() | theirs.keys() if mine.get(k, _ABSENT) != theirs.get(k, _ABSENT))
    if differ:
        key = differ[0]
        raise NeasError(
            f"{where}: differs from the record {weights.name} was saved with ({', '.join(differ)}; {key}: "
            f"{show(mine.get(key, _ABSENT), 60)} here, {show(theirs.get(key, _ABSENT), 60)} saved): neas detect "
            f"writes it, it is not to be edited (only data.data_dir may change); restore it from a copy of the run"
        )


def load_detector(path: str | Path) -> tuple[nn.Module, DetectorSpec]:
    """The trained detector of a detection run directory (or of its ``model.safetensors``), in eval mode.
    The record is checked (:meth:`DetectorSpec.from_json`) and compared with the copy the weights carry
    before anything is built."""
    path = Path(path)
    run = path if path.is_dir() else path.parent
    where = str(run / DETECTOR)
    record = read_json(run / DETECTOR, "detector record")
    spec = DetectorSpec.from_json(record, where)
    if (run / MODEL).is_file():
        _check_same_record(record, run / MODEL, where)
    model = build_detector(spec)
    tensors, _ = load_weights(run / MODEL)
    load_matching(model, tensors, f"{run / MODEL}: the weights do not fit the detector of {where}")
    return model.eval(), spec
