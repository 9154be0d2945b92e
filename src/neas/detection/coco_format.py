"""The COCO format, checked: the one validator of COCO-format values, for the annotation files that
:func:`neas.detection.data.load_coco` reads and for the ground truth and detections that
:func:`neas.detection.coco.coco_ap` scores in memory (docs/DECISIONS.md, "One COCO validator").

Every check raises a one-line :class:`~neas.errors.NeasError` that starts with ``where`` (the file's
path, ``ground truth`` or ``detections``), names the entry and the field and echoes the value:
``<where>: annotations[3].bbox: expected [x, y, w, h] with 4 finite numbers, got [1, 2, 3]``.

The rules:

- a dataset: an object whose ``images``, ``annotations`` and ``categories`` are lists;
- a category: ``id`` an integer, ``name`` a string, both unique; at least one category;
- an image: ``id`` an integer, unique; ``width`` and ``height`` integers >= 1; where the images are
  files (``file_names=True``), ``file_name`` a relative name that does not climb out with ``..``;
- an annotation: ``id`` an integer, unique; ``image_id`` and ``category_id`` integers naming an image
  and a category; ``bbox`` a box; ``iscrowd``, when given, 0 or 1; ``area``, when given, a finite
  number >= 0;
- a detection (COCO results format): ``image_id``, ``category_id`` and ``bbox`` as an annotation's,
  ``score`` a finite number;
- a box: ``[x, y, w, h]``, 4 finite numbers (ints or floats, never bools) with ``w, h >= 0``.

Other keys (``info``, ``licenses``, ``supercategory``, ``segmentation``, ...) are neither checked nor
required. Nothing here modifies its input.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import PurePosixPath

from neas.errors import NeasError, show

__all__ = [
    "check_annotations",
    "check_categories",
    "check_dataset",
    "check_detections",
    "check_ground_truth",
    "check_images",
    "is_int",
    "is_number",
]

Fields = dict[str, tuple[Callable[[object], bool], str]]  # {key: (check, what it must be)}


def is_int(value) -> bool:
    """An int, not a bool: what a COCO id or size may hold."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    """A finite int or float, not a bool: what a COCO number field may hold."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_box(value) -> bool:
    return isinstance(value, (list, tuple)) and len(value) == 4 and all(is_number(v) for v in value)


def _is_file_name(value) -> bool:
    if not isinstance(value, str) or not value or "\\" in value:
        return False
    name = PurePosixPath(value)
    return not name.is_absolute() and ".." not in name.parts


_ID = (is_int, "an integer")
_SIZE = (lambda v: is_int(v) and v >= 1, "an integer >= 1")
_FILE_NAME = (_is_file_name, "a relative file name inside the split folder")
_CATEGORY: Fields = {"id": _ID, "name": (lambda v: isinstance(v, str), "a string")}
_IMAGE: Fields = {"id": _ID, "width": _SIZE, "height": _SIZE}
_BOX = (_is_box, "[x, y, w, h] with 4 finite numbers")
_REFERENCES: Fields = {
    "image_id": (is_int, "an integer image id"),
    "category_id": (is_int, "an integer category id"),
    "bbox": _BOX,
}
_ANNOTATION: Fields = {"id": _ID, **_REFERENCES}
_DETECTION: Fields = {**_REFERENCES, "score": (is_number, "a finite number")}


def _check_entry(entry, where: str, fields: Fields) -> None:
    """Checks that ``entry`` is an object whose ``fields`` are there and pass their checks."""
    if not isinstance(entry, dict):
        raise NeasError(f"{where}: expected an object, got {show(entry)}")
    for key, (check, what) in fields.items():
        if key not in entry:
            raise NeasError(f"{where}: missing {key!r} ({what})")
        if not check(entry[key]):
            raise NeasError(f"{where}.{key}: expected {what}, got {show(entry[key])}")


def check_dataset(value, where: str) -> None:
    """Checks that ``value`` is an object whose ``images``, ``annotations`` and ``categories`` are lists."""
    if not isinstance(value, dict):
        raise NeasError(f"{where}: expected a COCO object with images, annotations, categories, got {show(value)}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(value.get(key), list):
            got = "nothing" if key not in value else show(value[key])
            raise NeasError(f"{where}: {key}: expected a list (COCO format), got {got}")


def check_categories(entries: list, where: str) -> list[dict]:
    """The categories ``[{"id", "name"}]`` (fresh dicts) sorted by id; duplicate ids or names, or none, refused."""
    cats, names = {}, set()
    for i, cat in enumerate(entries):
        at = f"{where}: categories[{i}]"
        _check_entry(cat, at, _CATEGORY)
        if cat["id"] in cats or cat["name"] in names:
            raise NeasError(f"{at}: duplicate category id {cat['id']} or name {cat['name']!r}")
        cats[cat["id"]] = cat["name"]
        names.add(cat["name"])
    if not cats:
        raise NeasError(f"{where}: categories: expected at least one category, got none")
    return [{"id": c, "name": cats[c]} for c in sorted(cats)]


def check_images(entries: list, where: str, *, file_names: bool) -> dict[int, dict]:
    """``{image id: {"id", ["file_name",] "width", "height"}}`` (fresh dicts, in the order of ``entries``);
    duplicate ids refused. ``file_names``: the images are files, each entry names its own."""
    fields = {**_IMAGE, "file_name": _FILE_NAME} if file_names else _IMAGE
    images = {}
    for i, img in enumerate(entries):
        at = f"{where}: images[{i}]"
        _check_entry(img, at, fields)
        if img["id"] in images:
            raise NeasError(f"{at}.id: duplicate image id {img['id']}")
        images[img["id"]] = {k: img[k] for k in ("id", "file_name", "width", "height") if k in fields}
    return images


def _check_references(entry: dict, at: str, images, cat_ids: set) -> None:
    """``entry``'s image and category exist and its box has ``w, h >= 0`` (its fields already checked)."""
    if entry["image_id"] not in images:
        raise NeasError(f"{at}.image_id: no image has id {entry['image_id']}")
    if entry["category_id"] not in cat_ids:
        raise NeasError(f"{at}.category_id: no category has id {entry['category_id']} (ids: {sorted(cat_ids)})")
    _x, _y, w, h = entry["bbox"]
    if w < 0 or h < 0:
        raise NeasError(f"{at}.bbox: width and height must be >= 0, got {show(entry['bbox'])}")


def check_annotations(entries: list, where: str, images, categories: list[dict]) -> None:
    """Checks each annotation, against ``images`` (the image ids) and ``categories`` (``[{"id", ...}]``)."""
    cat_ids, ids = {c["id"] for c in categories}, set()
    for i, ann in enumerate(entries):
        at = f"{where}: annotations[{i}]"
        _check_entry(ann, at, _ANNOTATION)
        if ann["id"] in ids:
            raise NeasError(f"{at}.id: duplicate annotation id {ann['id']}")
        ids.add(ann["id"])
        _check_references(ann, at, images, cat_ids)
        if ann.get("iscrowd", 0) not in (0, 1) or isinstance(ann.get("iscrowd"), bool):
            raise NeasError(f"{at}.iscrowd: expected 0 or 1, got {show(ann['iscrowd'])}")
        if "area" in ann and not (is_number(ann["area"]) and ann["area"] >= 0):
            raise NeasError(f"{at}.area: expected a finite number >= 0, got {show(ann['area'])}")


def check_ground_truth(value, where: str = "ground truth") -> tuple[dict[int, dict], list[dict]]:
    """The images (as :func:`check_images` without file names) and the categories (as
    :func:`check_categories`) of the COCO dataset ``value``, after checking all of it."""
    check_dataset(value, where)
    categories = check_categories(value["categories"], where)
    images = check_images(value["images"], where, file_names=False)
    check_annotations(value["annotations"], where, images, categories)
    return images, categories


def check_detections(value, images, categories: list[dict], where: str = "detections") -> None:
    """Checks detections in COCO results format (``[{image_id, category_id, bbox, score}]``) against
    ``images`` (the image ids) and ``categories`` (``[{"id", ...}]``) of their ground truth."""
    if not isinstance(value, list):
        raise NeasError(f"{where}: expected a list of {{image_id, category_id, bbox, score}}, got {show(value)}")
    cat_ids = {c["id"] for c in categories}
    for i, det in enumerate(value):
        at = f"{where}[{i}]"
        _check_entry(det, at, _DETECTION)
        _check_references(det, at, images, cat_ids)
