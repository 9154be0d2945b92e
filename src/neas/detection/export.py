"""ONNX export of a whole RetinaNet detector (issue 27, item 5), verified against PyTorch.

The graph takes one image, ``image``: float32 (3, H, W) with H and W dynamic, RGB in [0, 1] (the
detector's own transform normalises and resizes it), and returns ``boxes`` (N, 4) as x1, y1, x2, y2
in the input image's pixels, ``scores`` (N,) and ``labels`` (N,) int64, N varying per image. It is
exported with torch.onnx's TorchScript exporter (``dynamo=False``, opset >= 11), as torchvision's
own ONNX tests do (``test/test_onnx.py``: ``test_retinanet``), traced on the first sample image and
checked on every sample image, the same content through onnxruntime and through PyTorch
(``neas export`` gives at least :data:`CHECK_IMAGES` of several sizes: val images and
:func:`random_images`). The two runtimes' detections are matched by content (label, IoU, score;
:func:`_match`), not by position: two detections of one label with near-equal scores may come out
in either order, and one at a cut (``score_thresh``, a full ``detections_per_img`` list) may be
kept by one runtime only. Two overlapping candidates whose scores tie may even survive NMS the other
way round in each runtime: accepted when onnxruntime's is one of PyTorch's own candidates before NMS
(:func:`_nms_ties`).
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import torch
from torchvision.models.detection import RetinaNet
from torchvision.ops import box_iou

from neas.errors import NeasError

__all__ = ["BOX_TOLERANCE", "CHECK_IMAGES", "SCORE_TOLERANCE", "export_detector_onnx", "random_images"]

BOX_TOLERANCE = 1e-3  # of the image's longer side, in pixels
SCORE_TOLERANCE = 1e-3
NMS_TIE = 1e-5  # two overlapping candidates whose scores are this close may survive NMS either way round
MATCH_IOU = 0.5  # a PyTorch detection and its onnxruntime counterpart overlap more than this
OUTPUTS = ("boxes", "scores", "labels")
CHECK_IMAGES = 16  # neas export verifies a detector on at least this many images
_SHAPES = ((1.0, 1.0), (4 / 3, 1.0), (1.0, 4 / 3), (2.0, 1.0), (1.0, 2.0), (5 / 3, 1.0), (1.0, 3.0), (1.25, 1.25))


def random_images(side: int, count: int, seed: int = 0) -> list[torch.Tensor]:
    """``count`` seeded uniform-noise images (3, H, W) of several shapes, their shorter side about
    ``side``: width and height cycle through ``_SHAPES`` (square, 4:3, 3:4, 2:1, 1:2, 5:3, 1:3,
    larger square), so the graph's dynamic height and width are exercised."""
    generator = torch.Generator().manual_seed(seed)
    images = []
    for i in range(count):
        w, h = _SHAPES[i % len(_SHAPES)]
        scale = 1.0 + 0.1 * (i // len(_SHAPES))
        shape = (3, max(16, round(side * h * scale)), max(16, round(side * w * scale)))
        images.append(torch.rand(shape, generator=generator))
    return images


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


def _match(expected: dict, got: dict, close: float) -> tuple[list[tuple[int, int]], list[int], list[int]]:
    """Pairs PyTorch's detections of one image with onnxruntime's by content, never by position: each
    PyTorch detection, in its score order, takes the unused onnxruntime detection of its label whose
    score is within ``SCORE_TOLERANCE`` and whose box overlaps it (IoU > ``MATCH_IOU``, or every
    coordinate within ``close`` pixels: a box clipped to zero area overlaps nothing), the closest
    such box. Two near-equal scores may come out of the two runtimes in either order; they still pair.

    Returns the pairs ``(k, j)`` and the unpaired indices of each side."""
    n, m = len(expected["scores"]), len(got["scores"])
    if n == 0 or m == 0:
        return [], list(range(n)), list(range(m))
    a, b = expected["boxes"].double(), got["boxes"].double()
    distance = (a[:, None, :] - b[None, :, :]).abs().amax(-1)  # (n, m) pixels
    fits = (box_iou(a, b) > MATCH_IOU) | (distance <= close)
    fits &= expected["labels"][:, None] == got["labels"][None, :]
    fits &= (expected["scores"].double()[:, None] - got["scores"].double()[None, :]).abs() <= SCORE_TOLERANCE
    distance = torch.where(fits, distance, torch.full_like(distance, math.inf))
    pairs, lost = [], []
    for k in range(n):
        j = int(distance[k].argmin())
        if math.isinf(distance[k, j]):
            lost.append(k)
            continue
        pairs.append((k, j))
        distance[:, j] = math.inf  # taken
    taken = {j for _, j in pairs}
    return pairs, lost, [j for j in range(m) if j not in taken]


def _at_a_cut(score: float, other: torch.Tensor, model: RetinaNet) -> bool:
    """Whether a detection that one runtime kept and the other did not may have been cut by a rounding:
    its score within ``SCORE_TOLERANCE`` of ``score_thresh``, or of the lowest score of the other's list
    when that list is full (``detections_per_img``)."""
    if score <= model.score_thresh + SCORE_TOLERANCE:
        return True
    return len(other) >= model.detections_per_img and score <= float(other.min()) + SCORE_TOLERANCE


def _describe(detections: dict, k: int) -> str:
    box = ", ".join(f"{v:.1f}" for v in detections["boxes"][k].tolist())
    return f"label {int(detections['labels'][k])}, score {float(detections['scores'][k]):.5g}, box [{box}]"


def _candidates(model: RetinaNet, image: torch.Tensor) -> dict:
    """PyTorch's detections of ``image`` before NMS: ``nms_thresh`` 1 (no box suppresses another; NMS
    drops IoU > the threshold) and no cap on their number."""
    saved = model.nms_thresh, model.detections_per_img
    model.nms_thresh, model.detections_per_img = 1.0, 10**6
    try:
        with torch.no_grad():
            return model([image])[0]
    finally:
        model.nms_thresh, model.detections_per_img = saved


def _nms_ties(model, image, expected: dict, got: dict, close: float, pairs, lost, extra):
    """Resolves what :func:`_match` could not pair within the box tolerance by an NMS tie: PyTorch kept
    candidate A and suppressed B, onnxruntime the reverse, because their scores tie within float noise
    (``NMS_TIE``). Such a PyTorch detection k and onnxruntime detection j have one label, scores within
    ``NMS_TIE``, boxes that overlap beyond ``nms_thresh`` (one suppresses the other), and j is one of
    PyTorch's own candidates before NMS (label, score and box): a graph that computes other boxes has no
    such candidate. Returns the pairs within tolerance, the tie pairs, and what stays unpaired."""
    wide = [(k, j) for k, j in pairs if (expected["boxes"][k] - got["boxes"][j]).abs().max() > close]
    if not wide and not (lost and extra):
        return pairs, [], lost, extra
    before = _candidates(model, image)
    a, b = expected["boxes"].double(), got["boxes"].double()
    iou = box_iou(a, b)

    def tie(k: int, j: int) -> bool:
        if int(expected["labels"][k]) != int(got["labels"][j]) or iou[k, j] <= model.nms_thresh:
            return False
        if abs(float(expected["scores"][k]) - float(got["scores"][j])) > NMS_TIE:
            return False
        same = (before["labels"] == got["labels"][j]) & ((before["scores"] - got["scores"][j]).abs() <= NMS_TIE)
        return bool((same & ((before["boxes"].double() - b[j]).abs().amax(-1) <= close)).any())

    ties = [(k, j) for k, j in wide if tie(k, j)]
    for k in list(lost):
        j = next((j for j in extra if tie(k, j)), None)
        if j is not None:
            ties.append((k, j))
            lost.remove(k)
            extra.remove(j)
    return [p for p in pairs if p not in ties], ties, lost, extra


def _check_image(model: RetinaNet, image: torch.Tensor, expected: dict, got: dict) -> tuple[float, float]:
    """The max box (pixels) and score differences of the paired detections of one image (NMS ties,
    :func:`_nms_ties`, count with their scores only); NeasError on a detection without a counterpart
    that no cut explains, or on a pair beyond the tolerances."""
    size = max(image.shape[1:])
    pairs, lost, extra = _match(expected, got, BOX_TOLERANCE * size)
    pairs, ties, lost, extra = _nms_ties(model, image, expected, got, BOX_TOLERANCE * size, pairs, lost, extra)
    ks, js = [k for k, _ in pairs], [j for _, j in pairs]
    boxes = (expected["boxes"][ks] - got["boxes"][js]).abs().max().item() if pairs else 0.0
    scores = (expected["scores"][ks] - got["scores"][js]).abs().max().item() if pairs else 0.0
    scores = max([scores, *(abs(float(expected["scores"][k]) - float(got["scores"][j])) for k, j in ties)])
    if not (boxes <= BOX_TOLERANCE * size and scores <= SCORE_TOLERANCE):
        raise NeasError(
            f"onnxruntime's detections differ from PyTorch's by {boxes:.3g} pixels in boxes (tolerance "
            f"{BOX_TOLERANCE} x {size}) and {scores:.3g} in scores (tolerance {SCORE_TOLERANCE})"
        )
    for side, mine, other, unpaired in (("PyTorch", expected, got, lost), ("onnxruntime", got, expected, extra)):
        for k in unpaired:
            if not _at_a_cut(float(mine["scores"][k]), other["scores"], model):
                raise NeasError(
                    f"{side}'s detection ({_describe(mine, k)}) has no counterpart of its label with a "
                    f"score within {SCORE_TOLERANCE} and IoU > {MATCH_IOU} ({len(expected['scores'])} detections "
                    f"from PyTorch, {len(got['scores'])} from onnxruntime)"
                )
    return boxes, scores


def _compare(model: RetinaNet, session, images: list[torch.Tensor], path: Path) -> tuple[float, float]:
    """Runs every image through PyTorch and onnxruntime; the max box (pixels) and score differences of
    the matched detections (:func:`_match`). NeasError when an image's detections do not match."""
    worst_boxes = worst_scores = 0.0
    for i, image in enumerate(images):
        with torch.no_grad():
            expected = model([image])[0]
        got = dict(zip(OUTPUTS, map(torch.from_numpy, session.run(None, {"image": image.numpy()}))))
        height, width = image.shape[1:]
        try:
            boxes, scores = _check_image(model, image, expected, got)
        except NeasError as exc:
            raise NeasError(
                f"ONNX check failed on image {i}: {exc} (the image is {width}x{height}); {path} was not written"
            ) from None
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
        ``{"max_abs_diff_boxes"`` (pixels), ``"max_abs_diff_scores"`` (of the matched detections),
        ``"images"``, ``"sizes"`` (distinct image sizes), ``"opset"}``.

    Raises:
        NeasError: the opset is too old, or onnxruntime's detections differ from PyTorch's (a detection
            without a counterpart of its label, score and box, other than at a cut; boxes beyond
            ``BOX_TOLERANCE`` or scores beyond ``SCORE_TOLERANCE``); nothing is left at ``path`` then
            (an earlier file there is kept).
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
    sizes = len({tuple(image.shape[1:]) for image in images})
    return {
        "max_abs_diff_boxes": boxes,
        "max_abs_diff_scores": scores,
        "images": len(images),
        "sizes": sizes,
        "opset": opset,
    }
