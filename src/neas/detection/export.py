"""ONNX export of a whole RetinaNet detector (issue 27, item 5), verified against PyTorch.

The graph takes one image, ``image``: float32 (3, H, W) with H and W dynamic, RGB in [0, 1] (the
detector's own transform normalises and resizes it), and returns ``boxes`` (N, 4) as x1, y1, x2, y2
in the input image's pixels, ``scores`` (N,) and ``labels`` (N,) int64, N varying per image. It is
exported with torch.onnx's TorchScript exporter (``dynamo=False``, opset >= 11), as torchvision's
own ONNX tests do (``test/test_onnx.py``: ``test_retinanet``), traced on the first sample image and
checked on every sample image, the same content through onnxruntime and through PyTorch.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
from torchvision.models.detection import RetinaNet

from neas.errors import NeasError

__all__ = ["BOX_TOLERANCE", "SCORE_TOLERANCE", "export_detector_onnx"]

BOX_TOLERANCE = 1e-3  # of the image's longer side, in pixels
SCORE_TOLERANCE = 1e-3
OUTPUTS = ("boxes", "scores", "labels")


def _check_images(images) -> list[torch.Tensor]:
    images = list(images) if isinstance(images, (list, tuple)) else []
    if not images or not all(isinstance(x, torch.Tensor) and x.dim() == 3 and x.shape[0] == 3 for x in images):
        raise NeasError("images: expected a non-empty list of (3, H, W) float tensors, one per sample image")
    return [x.detach().float().cpu() for x in images]


def _write(model: RetinaNet, path: Path, image: torch.Tensor, opset: int) -> None:
    """The TorchScript export of ``model`` on ``[image]`` (list of one image) to ``path``."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about data-dependent shapes: expected here
        torch.onnx.export(
            model,
            ([image],),
            str(path),
            input_names=["image"],
            output_names=list(OUTPUTS),
            opset_version=opset,
            dynamic_axes={
                "image": {1: "height", 2: "width"},
                "boxes": {0: "n"},
                "scores": {0: "n"},
                "labels": {0: "n"},
            },
            dynamo=False,
        )


def _match(expected: dict, got: dict) -> tuple[float, float]:
    """Max |difference| of the boxes and the scores between two detection lists of one image.

    Detections are paired in PyTorch's (score) order when their labels agree; where two near-equal
    scores came out swapped, each PyTorch detection is paired with the closest unused box of its label.
    """
    if torch.equal(expected["labels"], got["labels"]):
        return _diffs(expected, got, torch.arange(len(got["labels"])))
    order, free = [], set(range(len(got["labels"])))
    for box, label in zip(expected["boxes"], expected["labels"]):
        same = [j for j in free if got["labels"][j] == label]
        if not same:
            return float("inf"), float("inf")
        j = min(same, key=lambda j: (got["boxes"][j] - box).abs().max().item())
        order.append(j)
        free.discard(j)
    return _diffs(expected, got, torch.tensor(order, dtype=torch.long))


def _diffs(expected: dict, got: dict, order: torch.Tensor) -> tuple[float, float]:
    if len(order) == 0:
        return 0.0, 0.0
    boxes = (expected["boxes"] - got["boxes"][order]).abs().max().item()
    return boxes, (expected["scores"] - got["scores"][order]).abs().max().item()


def _compare(model: RetinaNet, session, images: list[torch.Tensor], path: Path) -> tuple[float, float]:
    """Runs every image through PyTorch and onnxruntime; the max box (pixels) and score differences.
    NeasError on a different number of detections or a difference beyond the tolerances."""
    worst_boxes = worst_scores = 0.0
    for i, image in enumerate(images):
        with torch.no_grad():
            expected = model([image])[0]
        got = dict(zip(OUTPUTS, map(torch.from_numpy, session.run(None, {"image": image.numpy()}))))
        if len(got["scores"]) != len(expected["scores"]):
            raise NeasError(
                f"ONNX check failed on image {i}: {len(got['scores'])} detections from onnxruntime, "
                f"{len(expected['scores'])} from PyTorch; {path} was not written"
            )
        boxes, scores = _match(expected, got)
        size = max(image.shape[1:])
        if not (boxes <= BOX_TOLERANCE * size and scores <= SCORE_TOLERANCE):
            raise NeasError(
                f"ONNX check failed on image {i}: onnxruntime's detections differ from PyTorch's by {boxes:.3g} "
                f"pixels in boxes (tolerance {BOX_TOLERANCE} x {size}) and {scores:.3g} in scores (tolerance "
                f"{SCORE_TOLERANCE}); {path} was not written"
            )
        worst_boxes, worst_scores = max(worst_boxes, boxes), max(worst_scores, scores)
    return worst_boxes, worst_scores


def export_detector_onnx(model: RetinaNet, path: str | Path, images: list[torch.Tensor], *, opset: int = 17) -> dict:
    """Writes ``model`` (eval mode, CPU) as ONNX to ``path`` and checks it on ``images``.

    Args:
        model: a torchvision RetinaNet (:func:`neas.detection.model.build_retinanet`).
        path: the ONNX file; written under a temporary name, renamed once verified.
        images: sample images, each (3, H, W) in [0, 1]: the first is traced, all are compared.
        opset: ONNX opset (>= 11, what RetinaNet's export needs).

    Returns:
        ``{"max_abs_diff_boxes"`` (pixels), ``"max_abs_diff_scores"``,
        ``"images"``, ``"opset"}``.

    Raises:
        NeasError: the opset is too old, or onnxruntime's detections differ from PyTorch's (count,
            labels, boxes beyond ``BOX_TOLERANCE`` or scores beyond ``SCORE_TOLERANCE``); nothing is
            left at ``path`` then (an earlier file there is kept).
    """
    try:
        import onnxruntime as ort
    except ImportError:
        raise NeasError("ONNX export needs the packages onnx and onnxruntime (pip install onnx onnxruntime)") from None
    if not isinstance(opset, int) or opset < 11:
        raise NeasError(f"opset: RetinaNet's ONNX export needs opset >= 11, got {opset!r}")
    images = _check_images(images)
    model = model.cpu().eval()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        _write(model, tmp, images[0], opset)
        session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        boxes, scores = _compare(model, session, images, path)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return {"max_abs_diff_boxes": boxes, "max_abs_diff_scores": scores, "images": len(images), "opset": opset}
