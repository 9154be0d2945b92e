"""Benchmark: COCO box AP with faster-coco-eval (what :func:`neas.detection.coco.coco_ap` uses) against
pycocotools' ``COCOeval``, on the same detections, side by side in one run (issue 27, item 3).

    python -m benchmarks.bench_coco_eval                    # 500 COCO-like images, ~1 minute on 2 cores
    python -m benchmarks.bench_coco_eval --images 5000      # val2017's size

The images are COCO-like: 640 x 480, 80 categories, 7 boxes each (5-300 px), and 100 detections per
image (COCOeval's cap): jittered copies of the true boxes, 70 % with the right category, random
scores. Both sides run evaluate + accumulate + summarize on their own copy of the same dicts; the
12 summary statistics must agree, and the printed difference says by how much.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io

import numpy as np

from benchmarks.common import Result, interleaved

__all__ = ["coco_eval", "coco_like"]


def coco_like(images: int, categories: int = 80, boxes: int = 7, detections: int = 100, seed: int = 0):
    """(ground truth COCO dict, detections in COCO results format)."""
    rng = np.random.default_rng(seed)
    gt = {"images": [], "annotations": [], "categories": [{"id": c, "name": str(c)} for c in range(1, categories + 1)]}
    dets = []
    for image in range(1, images + 1):
        gt["images"].append({"id": image, "width": 640, "height": 480})
        own = []
        for _ in range(boxes):
            w, h = rng.uniform(5, 300, 2)
            box = [float(rng.uniform(0, 640 - w)), float(rng.uniform(0, 480 - h)), float(w), float(h)]
            own.append({"id": len(gt["annotations"]) + 1, "image_id": image, "bbox": box, "area": float(w * h)})
            own[-1].update(category_id=int(rng.integers(1, categories + 1)), iscrowd=0)
            gt["annotations"].append(own[-1])
        for k in range(detections):
            true = own[k % boxes]
            x, y, w, h = np.asarray(true["bbox"]) + rng.normal(0, 0.15, 4) * np.repeat(true["bbox"][2:], 2)
            category = true["category_id"] if rng.random() < 0.7 else int(rng.integers(1, categories + 1))
            box = [float(x), float(y), float(max(w, 1.0)), float(max(h, 1.0))]
            dets.append({"image_id": image, "category_id": category, "bbox": box, "score": float(rng.random())})
    return gt, dets


def coco_eval(gt: dict, dets: list, backend: str) -> np.ndarray:
    """The 12 COCOeval statistics of ``dets`` with ``backend`` ("pycocotools" or "faster-coco-eval")."""
    if backend == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    else:
        from faster_coco_eval import COCO
        from faster_coco_eval import COCOeval_faster as COCOeval
    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO()
        truth.dataset = copy.deepcopy(gt)
        truth.createIndex()
        evaluator = COCOeval(truth, truth.loadRes(copy.deepcopy(dets)), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return np.asarray(evaluator.stats)


def compare(images: int, repeats: int = 3) -> Result:
    gt, dets = coco_like(images)
    stats = {}

    def timed(backend):
        return lambda: stats.__setitem__(backend, coco_eval(gt, dets, backend))

    times = interleaved({b: timed(b) for b in ("faster-coco-eval", "pycocotools")}, repeats=repeats, warmup=1)
    difference = float(np.abs(stats["faster-coco-eval"] - stats["pycocotools"]).max())
    result = Result(
        f"coco eval, {images} images",
        "faster-coco-eval",
        "pycocotools COCOeval",
        times["faster-coco-eval"],
        times["pycocotools"],
        ">= 1.0",
        extra={"max_stat_difference": difference, "detections": len(dets), "AP": float(stats["pycocotools"][0])},
    )
    result.ratio = result.baseline_s / result.ours_s
    result.ok = result.ratio >= 1.0 and difference < 1e-9
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    result = compare(args.images, args.repeats)
    print(result.line())
    print(f"  largest difference between the 12 statistics: {result.extra['max_stat_difference']:.2e}")


if __name__ == "__main__":
    main()
