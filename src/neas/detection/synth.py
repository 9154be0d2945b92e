"""A small synthetic COCO-format detection set from scikit-learn's bundled 8x8 digits (no download).

Each image is a noisy dark ``size`` x ``size`` RGB canvas with 0..``max_objects`` digits (about 5 % of the
images have none: negatives), each upscaled (bilinear) to a random square side and pasted, tinted a random
bright colour, at a random place; a placement whose box overlaps an earlier one with IoU > 0.3 is drawn
again (and the digit left out after 20 tries). Sides are drawn so that all three COCO areas occur: small
(10-30 px, area < 32²), medium (36-92 px) and, on canvases over 100 px, ~15 % large (100-120 px, most
of them > 96² in area). The box is tight around the digit's non-zero pixels. Categories "0".."9" have
COCO ids 1..10.

The digits are split once by a permutation seeded ``seed``: a split whose name starts with ``train``
draws from 80 % of them, every other split from the other 20 %, so validation sees unseen digits.
Every image is drawn from its own stream (``stream_seed(seed, "synth-detection", split, index)``): the
same arguments give byte-identical files. Written: ``ROOT/<split>/<id:012d>.png`` and
``ROOT/annotations/instances_<split>.json``, each atomically, the annotation file of a split last; while
it writes, ``ROOT`` holds :data:`UNFINISHED`, so a rerun after a kill or a failure replaces the
unfinished set instead of refusing the folder.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
from PIL import Image

from neas.errors import NeasError, show
from neas.io import write_bytes, write_json
from neas.runfiles import SYNTH_UNFINISHED
from neas.seeding import stream_seed

__all__ = ["CATEGORIES", "MAX_SIZE", "UNFINISHED", "write_synthetic"]

CATEGORIES = [{"id": d + 1, "name": str(d), "supercategory": "digit"} for d in range(10)]
_TRAIN_FRACTION = 0.8  # of the sklearn digits, drawn by the train* splits; the rest by the others
_MAX_IOU = 0.3
_TRIES = 20
_NEGATIVES = 0.05  # fraction of images without objects
_LARGE, _SMALL = 0.15, 0.35  # chances of a large and a small side (medium: the rest)
MAX_SIZE = 4096  # pixels of an image's side: a (size, size, 3) float64 canvas is drawn per image (400 MB here)


def _written(pattern: str) -> re.Pattern:
    """A file name this module writes, or the temporary name ``neas.io`` writes it under first."""
    return re.compile(rf"{pattern}|\.{pattern}\.\d+\.tmp")


UNFINISHED = SYNTH_UNFINISHED  # in ``out`` while a run writes it
_MARKER = _written(re.escape(UNFINISHED))
_IMAGE_FILE = _written(r"\d{12}\.png")
_ANNOTATION_FILE = _written(r"instances_\w+\.json")


def write_synthetic(
    out,
    *,
    splits: dict[str, int] | None = None,
    size: int = 128,
    seed: int = 0,
    max_objects: int = 4,
) -> dict:
    """Writes the synthetic set into ``out`` (new, empty, or a set of its own that a killed or failed
    run left unfinished: replaced); returns {split: number of images}.

    ``splits``: {name: images}, default ``{"train2017": 3000, "val2017": 150}``. While it writes, ``out``
    holds :data:`UNFINISHED`; a rerun that finds it (and nothing but the files this function writes)
    deletes them and starts again, so a kill at any moment never leaves a folder the rerun refuses.
    A finished set has no such file and is never written into again."""
    splits = {"train2017": 3000, "val2017": 150} if splits is None else dict(splits)
    out = Path(out)
    _check_arguments(splits, size, max_objects)
    _claim(out)
    digits, pools = _digit_pools(seed)
    (out / "annotations").mkdir(exist_ok=True)
    for split, count in splits.items():
        (out / split).mkdir(exist_ok=True)
        pool = pools[0] if split.startswith("train") else pools[1]
        images, annotations = [], []
        for index in range(count):
            rng = np.random.default_rng(stream_seed(seed, "synth-detection", split, index))
            canvas, boxes = _draw_image(rng, digits, pool, size, max_objects)
            image = {"id": index + 1, "file_name": f"{index + 1:012d}.png", "width": size, "height": size}
            write_bytes(out / split / image["file_name"], _png(canvas))
            images.append(image)
            for category_id, box in boxes:
                annotations.append(_annotation(len(annotations) + 1, image["id"], category_id, box))
        coco = {
            "info": {"description": f"neas synthetic digits detection, seed {seed}", "version": "1"},
            "images": images,
            "annotations": annotations,
            "categories": CATEGORIES,
        }
        write_json(out / "annotations" / f"instances_{split}.json", coco, indent=None)
    (out / UNFINISHED).unlink()  # finished: a rerun refuses the folder from now on
    return {split: count for split, count in splits.items()}


def _check_arguments(splits: dict, size: int, max_objects: int) -> None:
    if not isinstance(size, int) or isinstance(size, bool) or not 16 <= size <= MAX_SIZE:
        raise NeasError(f"size: expected an integer in 16..{MAX_SIZE} (pixels), got {show(size)}")
    if not isinstance(max_objects, int) or max_objects < 1:
        raise NeasError(f"max_objects: expected an integer >= 1, got {show(max_objects)}")
    for name, count in splits.items():
        if not _is_split(name):
            raise NeasError(f"splits: {show(name)} is not a split name (letters, digits and _; not 'annotations')")
        if not isinstance(count, int) or count < 0:
            raise NeasError(f"splits[{name!r}]: expected a number of images >= 0, got {show(count)}")


def _is_split(name) -> bool:
    return isinstance(name, str) and bool(name) and name != "annotations" and name.replace("_", "").isalnum()


def _claim(out: Path) -> None:
    """Makes ``out`` this run's: new or empty, marked :data:`UNFINISHED` before anything else is written;
    or, marked by an unfinished run, emptied of that run's files. Anything else is refused, untouched."""
    refuse = f"{out} already exists and is not an empty folder; choose another --out (nothing is overwritten)"
    if out.exists() and not out.is_dir():
        raise NeasError(refuse)
    if out.is_dir() and any(out.iterdir()):
        if not any(_MARKER.fullmatch(entry.name) for entry in out.iterdir()):
            raise NeasError(refuse)
        files, folders = _unfinished_set(out)
        for path in files:
            path.unlink()
        for folder in folders:
            folder.rmdir()
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / UNFINISHED, {"writer": "neas synth-detection", "state": "unfinished: a rerun replaces it"})


def _unfinished_set(out: Path) -> tuple[list[Path], list[Path]]:
    """The files and folders of an unfinished set in ``out``: the marker, the annotation files, the images
    and the temporary files of each. NeasError naming the first other entry: a file this module never
    writes is never deleted."""
    files, folders = [], []
    for entry in sorted(out.iterdir()):
        if _MARKER.fullmatch(entry.name) and entry.is_file() and not entry.is_symlink():
            files.append(entry)
            continue
        if entry.is_symlink() or not entry.is_dir() or not (entry.name == "annotations" or _is_split(entry.name)):
            raise _foreign(out, entry)
        names = _ANNOTATION_FILE if entry.name == "annotations" else _IMAGE_FILE
        for path in sorted(entry.iterdir()):
            if path.is_symlink() or not path.is_file() or not names.fullmatch(path.name):
                raise _foreign(out, path)
            files.append(path)
        folders.append(entry)
    return files, folders


def _foreign(out: Path, path: Path) -> NeasError:
    return NeasError(
        f"{out} holds an unfinished synthetic set and {path}, which neas synth-detection does not write; "
        "choose another --out (nothing is overwritten)"
    )


def _digit_pools(seed: int) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """((images (N, 8, 8) uint8 0..255, labels (N,)), (train indices, held-out indices))."""
    from sklearn.datasets import load_digits  # bundled with scikit-learn: no download

    digits = load_digits()
    images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)
    order = np.random.default_rng(stream_seed(seed, "synth-detection-digits")).permutation(len(images))
    cut = int(round(_TRAIN_FRACTION * len(images)))
    return (images, digits.target.astype(np.int64)), (np.sort(order[:cut]), np.sort(order[cut:]))


def _side(rng: np.random.Generator, size: int) -> int:
    """A square side for one digit: small, medium or (on canvases over 100 px) large."""
    u = rng.random()
    if size > 100 and u < _LARGE:
        return int(rng.integers(100, min(120, size) + 1))
    if u < _LARGE + _SMALL or size < 36:
        return int(rng.integers(10, min(30, size) + 1))
    return int(rng.integers(36, min(92, size) + 1))


def _iou(a, b) -> float:
    """IoU of two [x, y, w, h] boxes."""
    w = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    return w * h / (a[2] * a[3] + b[2] * b[3] - w * h)


def _draw_image(rng, digits, pool, size: int, max_objects: int) -> tuple[np.ndarray, list]:
    """A canvas (size, size, 3) uint8 and its [(category id, [x, y, w, h])]."""
    images, labels = digits
    canvas = np.clip(rng.normal(24.0, 10.0, (size, size, 3)), 0, 255)  # noisy dark background
    count = 0 if rng.random() < _NEGATIVES else int(rng.integers(1, max_objects + 1))
    boxes = []
    for _ in range(count):
        index = int(pool[rng.integers(len(pool))])
        side = _side(rng, size)
        mask = np.asarray(Image.fromarray(images[index]).resize((side, side), Image.BILINEAR), dtype=np.float64)
        rows, cols = np.nonzero(mask)
        tight = [int(cols.min()), int(rows.min()), int(cols.max() - cols.min() + 1), int(rows.max() - rows.min() + 1)]
        colour = rng.uniform(150.0, 255.0, 3)
        for _ in range(_TRIES):
            x, y = (int(v) for v in rng.integers(0, size - side + 1, 2))
            box = [x + tight[0], y + tight[1], tight[2], tight[3]]
            if all(_iou(box, other) <= _MAX_IOU for _, other in boxes):
                alpha = (mask / 255.0)[:, :, None]  # (side, side, 1)
                patch = canvas[y : y + side, x : x + side]
                canvas[y : y + side, x : x + side] = patch * (1.0 - alpha) + colour * alpha
                boxes.append((int(labels[index]) + 1, box))
                break
    return np.rint(canvas).astype(np.uint8), boxes


def _annotation(ann_id: int, image_id: int, category_id: int, box: list) -> dict:
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category_id,
        "bbox": [float(v) for v in box],
        "area": float(box[2] * box[3]),
        "iscrowd": 0,
    }


def _png(canvas: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(canvas, "RGB").save(buffer, format="PNG")
    return buffer.getvalue()
