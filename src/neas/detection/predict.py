"""A trained detector's predictions, COCO scores, evaluation and ONNX export: what ``neas detect``,
``neas evaluate`` and ``neas export`` do with a detection run's ``model.safetensors`` + ``detector.json``."""

from __future__ import annotations

import dataclasses
import logging

import torch
import torch.nn as nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from neas import dist
from neas.detection.coco import STAT_NAMES, coco_ap
from neas.detection.data import CocoSplit, DetectionDataset, collate, load_coco
from neas.detection.detector import DetectorSpec, load_detector
from neas.detection.export import CHECK_IMAGES, export_detector_onnx, random_images
from neas.errors import NeasError
from neas.io import check_output, read_json
from neas.nn.precision import full_precision
from neas.runfiles import EVAL, MODEL
from neas.space import EnsembleArch

__all__ = [
    "describe",
    "evaluate_detector",
    "export_detector",
    "format_eval",
    "predict",
    "print_eval",
    "score",
    "subset",
]

log = logging.getLogger(__name__)


def subset(data: CocoSplit, count: int | None) -> CocoSplit:
    """The first ``count`` images of ``data`` (by id) with their targets and ground truth; all when None."""
    if count is None or count >= len(data.images):
        return data
    images = data.images[:count]
    ids = {img["id"] for img in images}
    truth = data.ground_truth
    return dataclasses.replace(
        data,
        images=images,
        targets={i: t for i, t in data.targets.items() if i in ids},
        ground_truth={
            **truth,
            "images": [img for img in truth["images"] if img["id"] in ids],
            "annotations": [a for a in truth["annotations"] if a["image_id"] in ids],
        },
    )


@torch.no_grad()
def predict(model: nn.Module, data: CocoSplit, device, batch_size: int, workers: int = 0, desc: str = "") -> list:
    """The detections of ``model`` on ``data`` in COCO results format (``bbox`` = [x, y, w, h] in the
    original image's pixels: torchvision's RetinaNet maps its boxes back; ``category_id``: the COCO id)."""
    model.eval()
    dataset = DetectionDataset(data, train=False)
    loader = DataLoader(dataset, batch_size, shuffle=False, num_workers=workers, collate_fn=collate)
    ids = [c["id"] for c in data.categories]
    results = []
    for images, targets in tqdm(loader, desc=desc, leave=False, disable=None):
        outputs = model([image.to(device) for image in images])
        for out, target in zip(outputs, targets):
            for box, score, label in zip(
                full_precision(out["boxes"]).cpu().tolist(), out["scores"].tolist(), out["labels"]
            ):
                x1, y1, x2, y2 = box
                results.append(
                    {
                        "image_id": target["image_id"],
                        "category_id": ids[int(label)],
                        "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
                        "score": round(float(score), 5),
                    }
                )
    return results


def score(data: CocoSplit, detections: list) -> dict:
    """COCO box AP of ``detections`` on ``data``'s ground truth, with the image count."""
    return {"split": data.split, "images": len(data.images), **coco_ap(data.ground_truth, detections)}


def format_eval(result: dict) -> str:
    """The AP table of an ``eval.json``."""

    def pct(value) -> str:
        return "  n/a" if value is None else f"{100 * value:5.1f}"

    lines = [f"{result['split']}: {result['images']} images, COCO box AP (%)"]
    lines.append("  ".join(f"{name:>5}" for name in STAT_NAMES))
    lines.append("  ".join(pct(result[name]) for name in STAT_NAMES))
    per_class = result.get("per_class") or {}
    if per_class:
        lines.append("per class: " + ", ".join(f"{name} {pct(ap).strip()}" for name, ap in per_class.items()))
    return "\n".join(lines)


def evaluate_detector(checkpoint, device: str = "auto", split: str | None = None, data_dir=None, workers: int = 0):
    """``neas evaluate --checkpoint RUN`` for a detection run: its detector scored on ``split`` (default: the
    split its eval.json scored, with the same image subset and batch size, so it reproduces eval.json)."""
    model, spec = load_detector(checkpoint)
    data = spec.data
    device = dist.local_device(device)
    categories = spec.categories
    split = split or data["val_split"]
    images = load_coco(data_dir or data["data_dir"], split, categories=categories)
    images = subset(images, data.get("max_val_images") if split == data["val_split"] else None)
    detections = predict(model.to(device), images, device, data.get("eval_batch_size", 1), workers, f"evaluate {split}")
    return {**score(images, detections), **describe(spec)}


def describe(spec: DetectorSpec) -> dict:
    """The backbone fields of an eval.json."""
    arch = None if spec.arch is None else str(EnsembleArch.from_json(spec.arch))
    return {"backbone": spec.backbone, "arch": arch, "feature_mode": spec.feature_mode}


def _by_size(images: list[dict], count: int) -> list[int]:
    """Indices of up to ``count`` of ``images``: the first of each size first, then the others, in order."""
    seen, first, rest = set(), [], []
    for i, img in enumerate(images):
        size = (img["width"], img["height"])
        (rest if size in seen else first).append(i)
        seen.add(size)
    return (first + rest)[:count]


def _verification_images(spec: DetectorSpec) -> tuple[list[torch.Tensor], str]:
    """The images an export is checked on: up to ``CHECK_IMAGES - 4`` val images (one of each size
    first), then seeded random images of several shapes up to ``CHECK_IMAGES``; and how to say so."""
    images, which = [], []
    try:
        val = load_coco(spec.data["data_dir"], spec.data["val_split"], categories=spec.categories)
        dataset = DetectionDataset(val, train=False)
        images = [dataset[i][0] for i in _by_size(val.images, CHECK_IMAGES - 4)]
        which.append(f"{len(images)} {spec.data['val_split']} images")
    except NeasError as exc:
        log.warning("the val split cannot be read (%s): verifying on random images only", exc)
    extra = random_images(spec.min_size, CHECK_IMAGES - len(images))
    which.append(f"{len(extra)} random images")
    return images + extra, " and ".join(which)


def export_detector(cfg) -> str:
    """``neas export --format onnx --checkpoint RUN`` for a detection run (``cfg``: an ``ExportCommand``):
    the detector as ONNX, checked against PyTorch on ``CHECK_IMAGES`` images of several sizes (val images,
    then random ones)."""
    if cfg.format != "onnx":
        raise NeasError(
            f"a detection run exports as --format onnx (its model.safetensors already is the weights), got {cfg.format}"
        )
    ignored = {
        "--paths": cfg.paths is not None,
        "--cascade": cfg.cascade,
        "--official-checkpoint": cfg.official_checkpoint is not None,
        "--arch": cfg.arch is not None,
    }
    if any(ignored.values()):
        given = ", ".join(flag for flag, set_ in ignored.items() if set_)
        raise NeasError(f"{given}: for classification ensembles, not a detection run ({cfg.checkpoint})")
    check_output(cfg.out, (cfg.checkpoint,), cfg.force, inside=(MODEL,))
    model, spec = load_detector(cfg.checkpoint)
    images, which = _verification_images(spec)
    check = export_detector_onnx(model, cfg.out, images, opset=cfg.opset)
    return (
        f"exported the detector as onnx to {cfg.out}; verified on {which} ({check['sizes']} sizes), detections "
        f"matched by label, IoU and score: max |difference| from PyTorch {check['max_abs_diff_boxes']:.2e} px "
        f"(boxes), {check['max_abs_diff_scores']:.2e} (scores)"
    )


def print_eval(run) -> str:
    """The lines ``neas detect`` prints: eval.json's path and its AP table."""
    return f"eval: {run / EVAL}\n" + format_eval(read_json(run / EVAL, "detection evaluation"))
