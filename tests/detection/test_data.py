"""neas.detection.data on hand-built COCO splits: every bad input of the module's policy, order
independence, image modes, and the training flips as a pure function of (seed, epoch, index)."""

import copy
import io
import json
import logging
import random

import numpy as np
import pytest
import torch
from PIL import Image

from neas.data.datasets import decode_image, rgb_array
from neas.detection import data as data_module
from neas.detection.coco import coco_ap
from neas.detection.data import DetectionDataset, collate, load_coco
from neas.errors import NeasError

SPLIT = "val2017"
FILE = "annotations/instances_val2017.json"
BASE = {
    "info": {"description": "hand-built"},
    "images": [
        {"id": 7, "file_name": "b.png", "width": 40, "height": 30},
        {"id": 2, "file_name": "a.png", "width": 40, "height": 30, "license": 1},
        {"id": 9, "file_name": "empty.png", "width": 20, "height": 20},
    ],
    "categories": [
        {"id": 90, "name": "dog"},
        {"id": 1, "name": "cat", "supercategory": "animal"},
        {"id": 3, "name": "cow"},
    ],
    "annotations": [
        {"id": 11, "image_id": 2, "category_id": 90, "bbox": [1, 2, 10, 5], "area": 40.0, "iscrowd": 0},
        {"id": 12, "image_id": 7, "category_id": 1, "bbox": [30, 20, 20, 20]},  # partly outside: clipped
        {"id": 13, "image_id": 2, "category_id": 3, "bbox": [5.5, 6, 4, 3], "iscrowd": 0},
    ],
}


def _write(root, coco, split=SPLIT, mode="RGB", images=True):
    """Writes ``coco`` as ROOT/annotations/instances_<split>.json and a random image per entry."""
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(coco))
    (root / split).mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for img in coco.get("images", []) if images else ():
        if not (isinstance(img, dict) and img.get("width", 0) >= 1 and img.get("height", 0) >= 1):
            continue  # a broken entry: refused before its file is looked for
        pixels = rng.integers(0, 256, (img["height"], img["width"], 3), dtype=np.uint8)
        image = Image.fromarray(pixels).convert(mode)
        image.save(root / split / img["file_name"].replace("../", ""), format="JPEG" if mode == "CMYK" else "PNG")
    return root


def _broken(change):
    coco = copy.deepcopy(BASE)
    change(coco)
    return coco


def test_load_cleans_a_split_and_scores_with_coco_ap(tmp_path):
    root = _write(tmp_path, BASE)
    before = (root / FILE).read_bytes()
    data = load_coco(root, SPLIT)
    assert (root / FILE).read_bytes() == before
    assert [img["id"] for img in data.images] == [2, 7, 9]
    assert data.images[0] == {"id": 2, "file_name": "a.png", "width": 40, "height": 30}
    assert data.image_path(data.images[0]) == root / SPLIT / "a.png"
    assert data.categories == [{"id": 1, "name": "cat"}, {"id": 3, "name": "cow"}, {"id": 90, "name": "dog"}]
    assert data.targets[2] == {"boxes": [[5.5, 6.0, 9.5, 9.0], [1.0, 2.0, 11.0, 7.0]], "labels": [1, 2]}
    assert data.targets[7] == {"boxes": [[30.0, 20.0, 40.0, 30.0]], "labels": [0]}  # clipped to 40x30
    assert data.targets[9] == {"boxes": [], "labels": []}  # a negative, kept
    gt = data.ground_truth  # the file's annotations as given: its order, its ids, its boxes (unclipped)
    assert gt["annotations"] == [
        {"id": 11, "image_id": 2, "category_id": 90, "bbox": [1, 2, 10, 5], "area": 40.0, "iscrowd": 0},
        {"id": 12, "image_id": 7, "category_id": 1, "bbox": [30, 20, 20, 20]},
        {"id": 13, "image_id": 2, "category_id": 3, "bbox": [5.5, 6, 4, 3], "iscrowd": 0},
    ]
    detections = [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
        for a in gt["annotations"]
    ]
    assert coco_ap(gt, detections)["AP"] == pytest.approx(1.0)


def test_entry_order_in_the_file_does_not_matter(tmp_path):
    shuffled = copy.deepcopy(BASE)
    for key in ("images", "categories", "annotations"):
        random.Random(1).shuffle(shuffled[key])
        shuffled[key].reverse()
    one = load_coco(_write(tmp_path / "a", BASE), SPLIT)
    two = load_coco(_write(tmp_path / "b", shuffled), SPLIT)
    for name in ("images", "targets", "categories"):
        assert getattr(one, name) == getattr(two, name), name
    for key in ("images", "categories"):
        assert one.ground_truth[key] == two.ground_truth[key], key
    # the ground truth is the file's (in its order, as pycocotools reads it); the same annotations
    by_id = sorted(one.ground_truth["annotations"], key=lambda a: a["id"])
    assert by_id == sorted(two.ground_truth["annotations"], key=lambda a: a["id"])


BAD = [
    (lambda c: c.pop("images"), "images: expected a list (COCO format), got nothing"),
    (lambda c: c.update(categories={"id": 1}), "categories: expected a list"),
    (lambda c: c["images"].append(dict(c["images"][0])), "images[3].id: duplicate image id 7"),
    (lambda c: c["images"][1].update(width=0), "images[1].width: expected an integer >= 1"),
    (lambda c: c["images"][1].update(file_name="../a.png"), "images[1].file_name: expected a relative file name"),
    (lambda c: c["images"][0].pop("height"), "images[0]: missing 'height'"),
    (lambda c: c["categories"].append({"id": 3, "name": "emu"}), "categories[3]: duplicate category id 3"),
    (lambda c: c["categories"][0].update(id="90"), "categories[0].id: expected an integer"),
    (lambda c: c["annotations"][1].update(image_id=5), "annotations[1].image_id: no image has id 5"),
    (lambda c: c["annotations"][2].update(category_id=2), "annotations[2].category_id: no category has id 2"),
    (lambda c: c["annotations"][0].update(bbox=[1, 2, 3]), "annotations[0].bbox: expected [x, y, w, h] with 4 finite"),
    (lambda c: c["annotations"][2].update(bbox=[1, 2, 3, float("nan")]), "annotations[2].bbox: expected [x, y, w, h]"),
    (lambda c: c["annotations"][1].update(bbox=[1, 2, "3", 4]), "annotations[1].bbox: expected [x, y, w, h]"),
    (lambda c: c["annotations"][1].update(bbox=[1, 2, -3, 4]), "annotations[1].bbox: width and height must be >= 0"),
    (lambda c: c["annotations"][0].update(iscrowd=2), "annotations[0].iscrowd: expected 0 or 1"),
    (lambda c: c["annotations"][0].update(area=-1), "annotations[0].area: expected a finite number >= 0"),
    (lambda c: c["annotations"].append(7), "annotations[3]: expected an object, got 7"),
    (lambda c: c["annotations"][1].pop("id"), "annotations[1]: missing 'id' (an integer)"),
    (lambda c: c["annotations"][2].update(id="13"), "annotations[2].id: expected an integer, got '13'"),
    (lambda c: c["annotations"][2].update(id=11), "annotations[2].id: duplicate annotation id 11"),
]


@pytest.mark.parametrize("change, message", BAD, ids=[m.split(":")[0] for _, m in BAD])
def test_non_coco_json_is_refused_naming_the_file_and_the_entry(tmp_path, change, message):
    root = _write(tmp_path, _broken(change))
    with pytest.raises(NeasError, match=r"annotations/instances_val2017\.json: ") as error:
        load_coco(root, SPLIT)
    assert message in str(error.value)


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", ""])
def test_malformed_json_is_refused_naming_the_file(tmp_path, text):
    root = _write(tmp_path, BASE)
    (root / FILE).write_text(text)
    message = r"instances_val2017\.json: (not a readable COCO annotation file|COCO annotation file must be a JSON obj)"
    with pytest.raises(NeasError, match=message):
        load_coco(root, SPLIT)


def test_a_file_written_with_a_byte_order_mark_or_in_utf16_loads(tmp_path):
    text = json.dumps(BASE)
    for encoding in ("utf-8-sig", "utf-16"):
        root = _write(tmp_path / encoding, BASE)
        (root / FILE).write_bytes(text.encode(encoding))
        assert [img["id"] for img in load_coco(root, SPLIT).images] == [2, 7, 9]


def test_a_file_over_the_size_cap_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(data_module, "MAX_ANNOTATION_BYTES", 100)
    with pytest.raises(NeasError, match=r"instances_val2017\.json: too large"):
        load_coco(_write(tmp_path, BASE), SPLIT)


def test_missing_files_are_refused_when_loading_naming_the_layout(tmp_path):
    with pytest.raises(NeasError, match=r"instances_val2017\.json: no such annotation file \(expected ROOT/annot"):
        load_coco(tmp_path, SPLIT)
    root = _write(tmp_path, BASE, images=False)
    (root / SPLIT).rmdir()
    with pytest.raises(NeasError, match=r"val2017: no such image folder \(expected .* images in ROOT/val2017/"):
        load_coco(root, SPLIT)
    root = _write(tmp_path, BASE)
    (root / SPLIT / "b.png").unlink()
    with pytest.raises(NeasError, match=r"val2017/b\.png: no such image file \(listed in .*instances_val2017\.json"):
        load_coco(root, SPLIT)


def test_empty_and_outside_boxes_are_no_targets_with_one_warning_but_stay_ground_truth(tmp_path, caplog):
    def change(coco):
        anns = coco["annotations"]
        anns.append({"id": 20, "image_id": 2, "category_id": 1, "bbox": [3, 3, 0, 5]})  # zero width
        anns.append({"id": 21, "image_id": 2, "category_id": 1, "bbox": [3, 3, 4, 0]})  # zero height
        anns.append({"id": 22, "image_id": 7, "category_id": 1, "bbox": [40, 5, 4, 4]})  # right of the image
        anns.append({"id": 23, "image_id": 7, "category_id": 1, "bbox": [-9, -9, 4, 4]})  # above and left

    with caplog.at_level(logging.WARNING, logger="neas.detection.data"):
        data = load_coco(_write(tmp_path, _broken(change)), SPLIT)
    assert [a["id"] for a in data.ground_truth["annotations"]] == [11, 12, 13, 20, 21, 22, 23]  # scored as given
    assert sum(len(t["boxes"]) for t in data.targets.values()) == 3
    assert len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    assert "2 boxes of zero width or height and 2 entirely outside their image are not training targets" in message


def _raw_file() -> dict:
    """A val file as user datasets have them: six image sizes, ids with gaps, every 4th image empty, a
    crowd region, and boxes partly past the border, of zero width or height, or entirely outside."""
    rng = np.random.default_rng(5)
    sizes = [(128, 128), (160, 96), (96, 160), (200, 120), (112, 144), (150, 100)]
    images = [
        {"id": 1000 + 7 * k, "file_name": f"{k}.png", "width": sizes[k % 6][0], "height": sizes[k % 6][1]}
        for k in range(12)
    ]
    boxes = []  # (image index, category id, [x, y, w, h], iscrowd)
    for k, img in enumerate(images):
        for _ in range(k % 4):
            w, h = (float(v) for v in rng.uniform(8, 60, 2))
            x, y = float(rng.uniform(0, img["width"] - w)), float(rng.uniform(0, img["height"] - h))
            boxes.append((k, int(rng.choice([2, 5, 9])), [x, y, w, h], 0))
    boxes += [
        (0, 5, [110.0, 100.0, 50.0, 50.0], 0),  # 32 x 22 px past the border of a 128x128 image
        (1, 2, [20.0, 30.0, 0.0, 15.0], 0),  # zero width
        (2, 9, [10.0, 40.0, 30.0, 0.0], 0),  # zero height
        (3, 2, [205.0, 10.0, 20.0, 20.0], 0),  # entirely right of a 200x120 image
        (4, 5, [-12.0, -8.0, 40.0, 30.0], 0),  # past the top-left corner
        (5, 9, [10.0, 10.0, 60.0, 50.0], 1),  # a crowd region
    ]
    annotations = [
        {"id": 500 + 3 * n, "image_id": images[k]["id"], "category_id": c, "bbox": b, "area": b[2] * b[3], "iscrowd": z}
        for n, (k, c, b, z) in enumerate(boxes)
    ]
    categories = [{"id": 2, "name": "rect"}, {"id": 5, "name": "ellipse"}, {"id": 9, "name": "triangle"}]
    return {"images": images, "annotations": annotations, "categories": categories}


def _jittered(coco: dict, seed: int) -> list[dict]:
    """Detections near every true box (jittered, some of another class) and false positives, seeded."""
    rng = np.random.default_rng(seed)
    detections = []
    for ann in coco["annotations"]:
        x, y, w, h = np.asarray(ann["bbox"]) + rng.normal(0, 3, 4)
        category = ann["category_id"] if rng.random() < 0.8 else int(rng.choice([2, 5, 9]))
        box = [float(x), float(y), float(max(w, 1.0)), float(max(h, 1.0))]
        detections.append({"image_id": ann["image_id"], "category_id": category, "bbox": box, "score": rng.random()})
    for img in coco["images"]:
        box = [float(v) for v in rng.uniform(0, 60, 4)]
        detections.append({"image_id": img["id"], "category_id": 5, "bbox": box, "score": float(rng.random())})
    return detections


def _pycocotools(annotation_file, detections: list) -> tuple[list, dict]:
    """pycocotools' COCOeval on the annotation file itself: stats[0:6] and AP per category id."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO(str(annotation_file))
        evaluator = COCOeval(truth, truth.loadRes(copy.deepcopy(detections)), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    per_class = {}
    for k, cat in enumerate(evaluator.params.catIds):
        values = evaluator.eval["precision"][:, :, k, 0, 2]
        per_class[cat] = float(values[values > -1].mean()) if (values > -1).any() else None
    return [None if v < 0 else float(v) for v in evaluator.stats[:6]], per_class


@pytest.mark.parametrize("detections", ["jittered 0", "jittered 1", "the file's boxes"])
def test_ap_is_scored_against_the_annotation_file_as_given(tmp_path, detections):
    """The audit's case: boxes past the border or of zero size. AP was scored against load_coco's cleaned
    copy (clipped, dropped): 0.1321 where pycocotools gives 0.1468 on the file itself."""
    coco = _raw_file()
    data = load_coco(_write(tmp_path, coco), SPLIT)
    if detections == "the file's boxes":
        found = [{**{k: a[k] for k in ("image_id", "category_id", "bbox")}, "score": 0.9} for a in coco["annotations"]]
    else:
        found = _jittered(coco, int(detections[-1]))
    stats, per_class = _pycocotools(tmp_path / FILE, found)
    got = coco_ap(data.ground_truth, found)
    assert [got[name] for name in ("AP", "AP50", "AP75", "APs", "APm", "APl")] == pytest.approx(stats, abs=1e-12)
    names = {c["id"]: c["name"] for c in coco["categories"]}
    assert got["per_class"] == pytest.approx({names[c]: ap for c, ap in per_class.items()}, abs=1e-12)
    assert sum(len(t["boxes"]) for t in data.targets.values()) == len(coco["annotations"]) - 4  # training: cleaned


def test_crowd_boxes_are_ground_truth_but_not_targets(tmp_path):
    crowd = _broken(lambda c: c["annotations"][1].update(iscrowd=1))
    data = load_coco(_write(tmp_path, crowd), SPLIT)
    assert data.targets[7] == {"boxes": [], "labels": []}
    assert [a["iscrowd"] for a in data.ground_truth["annotations"] if a["image_id"] == 7] == [1]


def test_a_split_with_other_categories_is_refused(tmp_path):
    train = load_coco(_write(tmp_path, BASE, split="train2017"), "train2017")
    assert load_coco(_write(tmp_path, BASE), SPLIT, categories=train.categories).categories == train.categories
    renamed = _broken(lambda c: c["categories"][2].update(name="ox"))
    with pytest.raises(NeasError, match=r"instances_val2017\.json: categories differ from the training split's"):
        load_coco(_write(tmp_path, renamed), SPLIT, categories=train.categories)


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "CMYK", "I;16", "1"])
def test_every_image_mode_loads_as_rgb(tmp_path, mode):
    root = _write(tmp_path, BASE, mode="RGB" if mode == "I;16" else mode)
    if mode == "I;16":
        Image.fromarray(np.full((30, 40), 65535, dtype=np.uint16)).save(root / SPLIT / "a.png")
        assert Image.open(root / SPLIT / "a.png").mode.startswith("I")
    dataset = DetectionDataset(load_coco(root, SPLIT), train=False)
    image, target = dataset[0]
    assert image.shape == (3, 30, 40) and image.dtype == torch.float32
    assert image.min() >= 0.0 and image.max() <= 1.0
    if mode == "I;16":
        assert torch.all(image == 1.0)
    assert target["boxes"].dtype == torch.float32 and target["labels"].dtype == torch.int64
    assert target["image_id"] == 2


def test_exif_orientation_is_not_applied(tmp_path):
    root = _write(tmp_path, BASE)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    Image.new("RGB", (40, 30), (200, 10, 10)).save(root / SPLIT / "a.png", exif=exif.tobytes())
    image, _ = DetectionDataset(load_coco(root, SPLIT), train=False)[0]
    assert image.shape == (3, 30, 40)  # stored pixels, as COCO boxes are


def test_an_image_of_another_size_than_listed_is_refused_when_the_split_is_loaded(tmp_path):
    root = _write(tmp_path, BASE)
    original = (root / SPLIT / "b.png").read_bytes()
    Image.new("RGB", (41, 30)).save(root / SPLIT / "b.png")
    size = r"val2017/b\.png: the image is 41x30 pixels but .*instances_val2017\.json says 40x30"
    with pytest.raises(NeasError, match=size):
        load_coco(root, SPLIT)  # before any training
    (root / SPLIT / "b.png").write_bytes(original)
    dataset = DetectionDataset(load_coco(root, SPLIT), train=False)
    Image.new("RGB", (41, 30)).save(root / SPLIT / "b.png")  # changed after the split was loaded
    with pytest.raises(NeasError, match=size):
        dataset[1]


def test_a_garbage_file_or_a_decompression_bomb_is_refused_when_the_split_is_loaded_naming_it(tmp_path, monkeypatch):
    """The fuzz pass: they were found only when a worker decoded them, after training had started."""
    root = _write(tmp_path, BASE)
    (root / SPLIT / "b.png").write_bytes(b"not an image at all")
    with pytest.raises(NeasError, match=r"val2017/b\.png: cannot read image \(UnidentifiedImageError: cannot identify"):
        load_coco(root, SPLIT)
    root = _write(tmp_path / "bomb", BASE)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # 40 x 30 = 1200 pixels: over twice the limit
    with pytest.raises(NeasError, match=r"val2017/a\.png: cannot read image \(DecompressionBombError: Image size"):
        load_coco(root, SPLIT)


def _truncated(tmp_path):
    """A split whose image b.png is cut after its header (found only when decoded)."""
    root = _write(tmp_path, BASE)
    data = load_coco(root, SPLIT)
    (root / SPLIT / "b.png").write_bytes((root / SPLIT / "b.png").read_bytes()[:200])
    return data


@pytest.mark.parametrize("workers", [0, 1])
def test_a_truncated_image_is_one_error_line_naming_the_file_even_from_a_loader_worker(tmp_path, workers):
    """The fuzz pass: in the main process 'image file is truncated' (which file?); from a worker, torch's
    re-raised message carried the worker's whole traceback."""
    from torch.utils.data import DataLoader

    loader = DataLoader(DetectionDataset(_truncated(tmp_path), train=False), 1, num_workers=workers, collate_fn=collate)
    with pytest.raises(data_module.ImageError) as caught:
        list(loader)
    message = str(caught.value)
    assert "\n" not in message and "Traceback" not in message and "DataLoader worker" not in message
    assert message.startswith(str(tmp_path / SPLIT / "b.png") + ": cannot read image (OSError: ")


def test_negatives_give_empty_boxes_and_collate_keeps_sizes(tmp_path):
    dataset = DetectionDataset(load_coco(_write(tmp_path, BASE), SPLIT), train=False)
    _image, target = dataset[2]
    assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,)
    images, targets = collate([dataset[0], dataset[2]])
    assert [tuple(i.shape) for i in images] == [(3, 30, 40), (3, 20, 20)]
    assert [t["image_id"] for t in targets] == [2, 9]


def _flips(dataset, epoch, order):
    dataset.set_epoch(epoch)
    plain = DetectionDataset(dataset.data, train=False)
    return {i: not torch.equal(dataset[i][0], plain[i][0]) for i in order}


def test_flips_are_a_pure_function_of_seed_epoch_and_index(tmp_path):
    images = [{"id": i, "file_name": f"{i}.png", "width": 4, "height": 3} for i in range(1, 13)]
    data = load_coco(_write(tmp_path, {"images": images, "annotations": [], "categories": BASE["categories"]}), SPLIT)
    first = _flips(DetectionDataset(data, train=True, seed=5), 3, range(12))
    again = _flips(DetectionDataset(data, train=True, seed=5), 3, reversed(range(12)))
    assert first == again  # another dataset (a resumed run, another worker), another order: the same flips
    assert 0 < sum(first.values()) < 12
    assert first != _flips(DetectionDataset(data, train=True, seed=5), 4, range(12))
    assert first != _flips(DetectionDataset(data, train=True, seed=6), 3, range(12))
    assert not any(_flips(DetectionDataset(data, train=False, seed=5), 3, range(12)).values())


def test_a_flip_mirrors_the_image_and_its_boxes(tmp_path):
    root = _write(tmp_path, BASE)
    data = load_coco(root, SPLIT)
    plain = DetectionDataset(data, train=False)
    train = DetectionDataset(data, train=True, seed=0)
    epoch = next(e for e in range(64) if data_module._flipped(0, e, 0))
    train.set_epoch(epoch)
    (image, target), (base, base_target) = train[0], plain[0]
    assert torch.equal(image, base.flip(2))
    assert target["boxes"].tolist() == [[30.5, 6.0, 34.5, 9.0], [29.0, 2.0, 39.0, 7.0]]  # x -> 40 - x
    assert torch.equal(target["labels"], base_target["labels"])


def test_data_module_reads_png_bytes_of_odd_modes_without_a_file_name():
    buffer = io.BytesIO()
    Image.new("LA", (3, 2), (9, 100)).save(buffer, format="PNG")
    rgb = rgb_array(Image.open(buffer))
    assert rgb.shape == (2, 3, 3) and rgb.dtype == np.uint8 and (rgb == 9).all()


def test_a_16_bit_image_decodes_to_the_same_pixels_for_detection_as_for_classification(tmp_path):
    """One decoder: a detector sees the pixels a classifier trained on the same file sees (65280 >> 8
    is 255; the detection decoder once rounded 65280 / 65535 * 255 to 254)."""
    root = _write(tmp_path, BASE)
    Image.fromarray(np.full((30, 40), 65280, dtype=np.uint16)).save(root / SPLIT / "a.png")
    image, _ = DetectionDataset(load_coco(root, SPLIT), train=False)[0]
    classified = decode_image(str(root / SPLIT / "a.png"), 30)  # resized to 30 x 30: a uniform image stays uniform
    assert torch.all(torch.round(image * 255) == 255) and torch.all(classified == 255)
