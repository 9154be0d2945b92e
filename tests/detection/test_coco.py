"""neas.detection.coco against hand-computed COCO AP on a hand-built case: 3 images, 2 categories,
boxes of every COCO area (small < 32², medium 32²–96², large > 96²)."""

import copy
import logging

import numpy as np
import pytest

from neas.detection.coco import STAT_NAMES, coco_ap
from neas.errors import NeasError

CAT, DOG = 1, 2
BOXES = [  # (annotation id, image id, category id, [x, y, w, h]); areas: 400, 2500, 14400, 256, 10000, 1600
    (1, 1, CAT, [10, 10, 20, 20]),
    (2, 1, DOG, [50, 50, 50, 50]),
    (3, 2, CAT, [0, 0, 120, 120]),
    (4, 2, DOG, [200, 200, 16, 16]),
    (5, 3, DOG, [10, 10, 100, 100]),
    (6, 3, CAT, [150, 150, 40, 40]),
]
GROUND_TRUTH = {
    "images": [{"id": i, "width": 320, "height": 320, "file_name": f"{i}.png"} for i in (1, 2, 3)],
    "categories": [{"id": CAT, "name": "cat"}, {"id": DOG, "name": "dog"}],
    "annotations": [
        {"id": a, "image_id": i, "category_id": c, "bbox": b, "area": b[2] * b[3], "iscrowd": 0} for a, i, c, b in BOXES
    ],
}
METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def _perfect(score: float = 0.9) -> list[dict]:
    return [{"image_id": i, "category_id": c, "bbox": list(b), "score": score} for _, i, c, b in BOXES]


def _iou(a, b) -> float:
    w = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    return w * h / (a[2] * a[3] + b[2] * b[3] - w * h)


def _interpolated_ap(matches: list[bool], n_true: int) -> float:
    """COCO's 101-point interpolated AP of detections in score order (True = matches a box)."""
    hits = np.asarray(matches)
    tp, fp = np.cumsum(hits), np.cumsum(~hits)
    recall, precision = tp / n_true, tp / (tp + fp)
    envelope = np.maximum.accumulate(precision[::-1])[::-1]  # best precision at this recall or beyond
    at = np.searchsorted(recall, np.linspace(0, 1, 101), side="left")
    return float(sum(envelope[i] if i < len(envelope) else 0.0 for i in at) / 101)


def test_perfect_detections_give_ap_one_and_print_nothing(capsys):
    metrics = coco_ap(GROUND_TRUTH, _perfect())
    for name in METRICS:
        assert metrics[name] == pytest.approx(1.0, abs=1e-9), name
    assert metrics["per_class"] == pytest.approx({"cat": 1.0, "dog": 1.0}, abs=1e-9)
    assert capsys.readouterr().out == ""


def test_box_shifted_below_iou_half_is_a_miss_at_ap50():
    detections = _perfect()
    shifted = [75, 50, 50, 50]  # the medium dog box [50, 50, 50, 50] moved 25 px right
    assert _iou(shifted, BOXES[1][3]) == pytest.approx(1 / 3)  # 1250 / 3750 < 0.5
    detections[1] = {"image_id": 1, "category_id": DOG, "bbox": shifted, "score": 0.5}
    metrics = coco_ap(GROUND_TRUTH, detections)
    dog_ap50 = _interpolated_ap([True, True, False], n_true=3)  # 67 of 101 recall points
    assert dog_ap50 == pytest.approx(67 / 101)
    assert metrics["AP50"] == pytest.approx((1.0 + dog_ap50) / 2, abs=1e-6)
    assert metrics["APm"] == pytest.approx(0.5, abs=1e-6)  # medium: the cat found, the dog missed
    assert metrics["per_class"]["cat"] == pytest.approx(1.0, abs=1e-9)  # every cat box found
    assert metrics["per_class"]["dog"] < 1.0


def test_unmatched_false_positive_above_the_true_ones_lowers_ap_by_the_computed_amount():
    detections = _perfect()
    detections.append({"image_id": 1, "category_id": CAT, "bbox": [250, 250, 30, 30], "score": 0.95})
    metrics = coco_ap(GROUND_TRUTH, detections)
    cat_ap = _interpolated_ap([False, True, True, True], n_true=3)  # precision 3/4 at every recall
    assert cat_ap == pytest.approx(0.75)
    assert metrics["per_class"]["cat"] == pytest.approx(cat_ap, abs=1e-6)  # the same at every IoU
    assert metrics["per_class"]["dog"] == pytest.approx(1.0, abs=1e-6)
    for name in ("AP", "AP50", "AP75"):
        assert metrics[name] == pytest.approx((cat_ap + 1.0) / 2, abs=1e-6), name


def test_no_detections_give_zero_and_absent_kinds_give_none():
    metrics = coco_ap(GROUND_TRUTH, [])
    assert {name: metrics[name] for name in METRICS} == dict.fromkeys(METRICS, 0.0)
    assert metrics["per_class"] == {"cat": 0.0, "dog": 0.0}
    large_only = {**GROUND_TRUTH, "annotations": [GROUND_TRUTH["annotations"][2]]}  # one large cat
    metrics = coco_ap(large_only, [])
    assert metrics["APs"] is None and metrics["APm"] is None and metrics["APl"] == 0.0
    assert metrics["per_class"] == {"cat": 0.0, "dog": None}


def test_inputs_are_not_modified():
    ground_truth, detections = copy.deepcopy(GROUND_TRUTH), _perfect()
    coco_ap(ground_truth, detections)
    assert ground_truth == GROUND_TRUTH and detections == _perfect()


def _without(entry: dict, key: str) -> dict:
    return {k: v for k, v in entry.items() if k != key}


def _changed(change) -> dict:
    ground_truth = copy.deepcopy(GROUND_TRUTH)
    change(ground_truth)
    return ground_truth


@pytest.mark.parametrize(
    "ground_truth, detections, field",
    [
        (_without(GROUND_TRUTH, "annotations"), [], r"ground truth: annotations: expected a list \(COCO format\)"),
        (
            {**GROUND_TRUTH, "annotations": [_without(GROUND_TRUTH["annotations"][0], "bbox")]},
            [],
            r"ground truth: annotations\[0\]: missing 'bbox'",
        ),
        (GROUND_TRUTH, [_without(_perfect()[0], "score")], r"detections\[0\]: missing 'score'"),
        (GROUND_TRUTH, [{**_perfect()[0], "image_id": 9}], r"detections\[0\]\.image_id: no image has id 9"),
        (
            GROUND_TRUTH,
            [*_perfect(), {**_perfect()[0], "category_id": 7}],
            r"detections\[6\]\.category_id: no category has id 7",
        ),
        (
            GROUND_TRUTH,
            [{**_perfect()[0], "bbox": [0, 0, -5, 5]}],
            r"detections\[0\]\.bbox: width and height must be >= 0",
        ),
    ],
)
def test_malformed_input_is_one_neas_error_naming_the_field(ground_truth, detections, field):
    with pytest.raises(NeasError, match=field) as error:
        coco_ap(ground_truth, detections)
    assert "\n" not in str(error.value)


# What load_coco refused and coco_ap accepted before one validator checked both (docs/DECISIONS.md,
# "One COCO validator (issue 36)"): the stricter rule for both. (An annotation id None was no
# NeasError either: faster-coco-eval raised a TypeError.)
STRICTER = [
    (lambda g: g["images"].append({"id": "4", "width": 9, "height": 9}), "images[3].id: expected an integer, got '4'"),
    (lambda g: g["images"].append(dict(g["images"][0])), "ground truth: images[3].id: duplicate image id 1"),
    (lambda g: g["images"][1].pop("width"), "ground truth: images[1]: missing 'width' (an integer >= 1)"),
    (lambda g: g["categories"][1].update(name=2), "ground truth: categories[1].name: expected a string, got 2"),
    (lambda g: g.update(categories=[], annotations=[]), "ground truth: categories: expected at least one category"),
    (lambda g: g["annotations"][2].update(id=None), "ground truth: annotations[2].id: expected an integer, got None"),
    (lambda g: g["annotations"][0].update(iscrowd=2), "ground truth: annotations[0].iscrowd: expected 0 or 1, got 2"),
    (lambda g: g["annotations"][4].update(area=-1), "ground truth: annotations[4].area: expected a finite number >= 0"),
    (lambda g: g["annotations"][3].update(image_id=True), "annotations[3].image_id: expected an integer image id"),
]


@pytest.mark.parametrize("change, message", STRICTER, ids=[m.split(":")[1].strip() for _, m in STRICTER])
def test_ground_truth_is_checked_by_the_rules_of_a_coco_file(change, message):
    with pytest.raises(NeasError) as error:
        coco_ap(_changed(change), [])
    assert message in str(error.value)


@pytest.mark.parametrize(
    "detections, message",
    [
        ({"image_id": 1}, "detections: expected a list of {image_id, category_id, bbox, score}, got {'image_id': 1}"),
        ([7], "detections[0]: expected an object, got 7"),
        ([{**_perfect()[0], "image_id": 1.0}], "detections[0].image_id: expected an integer image id, got 1.0"),
        ([{**_perfect()[0], "category_id": True}], "detections[0].category_id: expected an integer category id, got T"),
        ([{**_perfect()[0], "score": float("nan")}], "detections[0].score: expected a finite number, got nan"),
        ([{**_perfect()[0], "bbox": [0, 0, 1]}], "detections[0].bbox: expected [x, y, w, h] with 4 finite numbers"),
    ],
)
def test_detections_are_checked_naming_the_entry_the_field_and_the_value(detections, message):
    with pytest.raises(NeasError) as error:
        coco_ap(GROUND_TRUTH, detections)
    assert message in str(error.value)


def test_in_memory_ground_truth_needs_no_file_names_and_boxes_may_be_tuples():
    without_files = _changed(lambda g: [img.pop("file_name") for img in g["images"]])
    tuples = [{**det, "bbox": tuple(det["bbox"])} for det in _perfect()]
    assert coco_ap(without_files, tuples)["AP"] == pytest.approx(1.0, abs=1e-9)


def test_equals_pycocotools_cocoeval_on_many_coco_like_images():
    """coco_ap runs faster-coco-eval; pycocotools' own COCOeval is the reference."""
    from benchmarks.bench_coco_eval import coco_eval, coco_like

    gt, dets = coco_like(images=30, categories=5, boxes=4, detections=20, seed=3)
    reference = coco_eval(gt, dets, "pycocotools")
    got = coco_ap(gt, dets)
    assert [got[name] for name in STAT_NAMES] == pytest.approx(list(reference[:6]), abs=1e-12)
    assert 0.05 < got["AP"] < 0.95  # a case where matching decides something


def test_prints_and_logs_nothing(capsys, caplog):
    from benchmarks.bench_coco_eval import coco_like

    gt, dets = coco_like(images=3, categories=2, boxes=2, detections=4)
    with caplog.at_level(logging.DEBUG):
        coco_ap(gt, dets)
    assert caplog.records == [] and capsys.readouterr() == ("", "")
