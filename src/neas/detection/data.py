"""COCO-format detection data: a checked split (:func:`load_coco`), a torch dataset over it and its collate.

Layout: ``ROOT/annotations/instances_<split>.json`` (COCO ``images``, ``annotations``, ``categories``)
and the images in ``ROOT/<split>/<file_name>``. :func:`load_coco` reads and checks the file once, in the
main process, and returns a :class:`CocoSplit`: the images sorted by id, the training targets per image
(boxes ``[x1, y1, x2, y2]`` in pixels, labels ``0..C-1``: cleaned, see below) and the COCO ground truth
that :func:`neas.detection.coco.coco_ap` scores against: the file's annotations as given, so the AP is
the one pycocotools computes on the file itself (a box past the border or of zero size included). The
images and targets do not depend on the order of entries in the file.

Bad input (each a :class:`~neas.errors.NeasError` naming the file and the entry, unless it says otherwise):

- a missing annotation file or image folder: refused, naming the path and the expected layout;
- a file over ``MAX_ANNOTATION_BYTES``, malformed JSON, a value that is not COCO (``images``,
  ``annotations`` or ``categories`` missing or not a list, an entry of the wrong type, duplicate image
  ids, duplicate category ids or names, an annotation without an integer ``id`` or with another's, an
  annotation naming an unknown image or category, a ``bbox`` that is not 4 finite numbers, ``iscrowd``
  not 0/1, ``area`` not a finite number >= 0, a ``file_name`` that is absolute or climbs out with
  ``..``): refused, by the one COCO validator, :mod:`neas.detection.coco_format`;
- a listed image file that is missing, that PIL cannot identify from its header (garbage, an
  unsupported format), that is a decompression bomb, or whose size differs from its ``width`` /
  ``height``: refused when the split is loaded, before any training (a header read per image, no
  decoding); a file truncated after its header: refused when decoded, as an :class:`ImageError`
  naming the file, in one line even from a DataLoader worker;
- a box of negative width or height: refused; of zero width or height: not a training target,
  counted (one warning per split); partly outside the image: clipped to it as a target; entirely
  outside: not a target, counted. The ground truth keeps every box as the file gives it;
- ``iscrowd: 1``: kept in ``ground_truth`` (COCOeval ignores detections matched to it), not a target;
- category ids with gaps (1, 3, 90): labels ``0..C-1`` in id order, ``categories[label]["id"]``;
- an image without annotations: kept, a negative (boxes of shape ``[0, 4]``);
- ``categories=`` given (the training split's) and the file's differ: refused.

Images decode to RGB whatever their mode (L, LA, RGBA, P, CMYK; 16-bit grayscale scaled from 0..65535).
EXIF orientation is not applied: COCO boxes are in stored-pixel coordinates. The input JSON is not
modified; ``ground_truth`` holds fresh dicts, the file's annotations in its order with its ids.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from neas.data.datasets import rgb_array
from neas.detection.coco_format import check_annotations, check_categories, check_dataset, check_images
from neas.errors import NeasError, show
from neas.io import read_json
from neas.seeding import stream_seed

__all__ = ["MAX_ANNOTATION_BYTES", "CocoSplit", "DetectionDataset", "ImageError", "collate", "load_coco"]

log = logging.getLogger(__name__)

MAX_ANNOTATION_BYTES = 2**30  # COCO's instances_train2017.json is 448 MB; a file over 1 GiB is not a COCO split
_FLIP = "detection-flip"  # the stream_seed purpose of the training flips


class ImageError(NeasError):
    """An image file that cannot be read, or is not the size its entry says: the message names the file.

    Raised in a DataLoader worker, it reaches the main process as ``ImageError(text)`` where torch's
    ``ExceptionWrapper.reraise`` made ``text`` "Caught ImageError in DataLoader worker process N.",
    the worker's traceback and, last, ``neas.detection.data.ImageError: <message>``: the message alone
    is kept, so the CLI prints one line naming the file, never a worker's traceback."""

    def __init__(self, message: str):
        if "\nOriginal Traceback" in message:
            message = message.rstrip().splitlines()[-1].partition(": ")[2] or message
        super().__init__(message)


def _image_error(path: Path, exc: BaseException) -> ImageError:
    reason = " ".join(str(exc).split()) or type(exc).__name__  # one line
    return ImageError(f"{path}: cannot read image ({type(exc).__name__}: {reason})")


@dataclass
class CocoSplit:
    """One checked COCO split; see the module docstring for what was cleaned."""

    root: Path  # the dataset root ROOT
    split: str  # e.g. "train2017"
    images: list[dict]  # {"id", "file_name", "width", "height"}, sorted by id
    targets: dict  # image id -> {"boxes": [[x1, y1, x2, y2], ...] (pixels, clipped), "labels": [int 0..C-1]}
    categories: list[dict]  # [{"id", "name"}] sorted by id; label i <-> categories[i]["id"]
    ground_truth: dict = field(repr=False)  # COCO dict (images, the file's annotations, categories) for coco_ap

    @property
    def annotation_file(self) -> Path:
        """``ROOT/annotations/instances_<split>.json``."""
        return _annotation_file(self.root, self.split)

    def image_path(self, image: dict) -> Path:
        """``ROOT/<split>/<file_name>`` of one of :attr:`images`."""
        return self.root / self.split / image["file_name"]


def _annotation_file(root: Path, split: str) -> Path:
    return root / "annotations" / f"instances_{split}.json"


def load_coco(root, split: str, *, categories: list[dict] | None = None) -> CocoSplit:
    """Reads and checks ``ROOT/annotations/instances_<split>.json`` and that every image it lists is in
    ``ROOT/<split>/``. ``categories``: the training split's (``CocoSplit.categories``); a split whose
    categories differ is refused."""
    root = Path(root)
    path = _annotation_file(root, split)
    layout = f"expected ROOT/annotations/instances_{split}.json and the images in ROOT/{split}/, ROOT = {root}"
    if not path.is_file():
        raise NeasError(f"{path}: no such annotation file ({layout})")
    folder = root / split
    if not folder.is_dir():
        raise NeasError(f"{folder}: no such image folder ({layout})")
    value = read_json(path, "COCO annotation file", max_bytes=MAX_ANNOTATION_BYTES)
    check_dataset(value, str(path))
    cats = check_categories(value["categories"], str(path))
    if categories is not None:
        _check_same_categories(cats, categories, path)
    images = check_images(value["images"], str(path), file_names=True)
    check_annotations(value["annotations"], str(path), images, cats)
    annotations, dropped = _clean_annotations(value["annotations"], images)
    if dropped["zero"] or dropped["outside"]:
        log.warning(
            "%s: %d boxes of zero width or height and %d entirely outside their image are not training targets "
            "(they stay in the ground truth that AP is scored against, as the file gives them)",
            path,
            dropped["zero"],
            dropped["outside"],
        )
    ordered = sorted(images.values(), key=lambda img: img["id"])
    _check_files(ordered, folder, path)
    return CocoSplit(
        root=root,
        split=split,
        images=ordered,
        targets=_targets(ordered, annotations, cats),
        categories=cats,
        ground_truth={
            "images": [dict(img) for img in ordered],
            "annotations": [_as_given(ann) for ann in value["annotations"]],
            "categories": cats,
        },
    )


def _check_same_categories(cats: list[dict], expected: list[dict], path: Path) -> None:
    if cats != [{"id": c["id"], "name": c["name"]} for c in expected]:
        raise NeasError(
            f"{path}: categories differ from the training split's: got {show(cats, 300)}, expected "
            f"{show(expected, 300)} (a model's labels follow the training split's categories)"
        )


_GROUND_TRUTH_KEYS = ("id", "image_id", "category_id", "bbox", "area", "iscrowd")  # what COCOeval reads


def _as_given(ann: dict) -> dict:
    """A checked annotation as the file gives it (a fresh dict of the keys COCOeval reads)."""
    return {k: list(ann[k]) if k == "bbox" else ann[k] for k in _GROUND_TRUTH_KEYS if k in ann}


def _clean_annotations(entries: list, images: dict) -> tuple[list[dict], dict]:
    """The checked annotations cleaned for training (boxes clipped; empty ones dropped), in a content
    order, ids 1..n; and the numbers dropped {"zero", "outside"}."""
    kept, dropped = [], {"zero": 0, "outside": 0}
    for ann in entries:
        x, y, w, h = (float(v) for v in ann["bbox"])
        if w == 0 or h == 0:
            dropped["zero"] += 1
            continue
        img = images[ann["image_id"]]
        x1, y1 = max(x, 0.0), max(y, 0.0)
        x2, y2 = min(x + w, float(img["width"])), min(y + h, float(img["height"]))
        if x2 <= x1 or y2 <= y1:
            dropped["outside"] += 1
            continue
        box = [x1, y1, x2 - x1, y2 - y1]
        area = float(ann["area"]) if "area" in ann else box[2] * box[3]
        kept.append((ann["image_id"], ann["category_id"], box, area, int(ann.get("iscrowd", 0))))
    kept.sort()
    annotations = [
        {"id": n, "image_id": i, "category_id": c, "bbox": b, "area": a, "iscrowd": crowd}
        for n, (i, c, b, a, crowd) in enumerate(kept, 1)
    ]
    return annotations, dropped


def _check_files(images: list[dict], folder: Path, path: Path) -> None:
    """Every listed image is a file whose header PIL reads (no decoding: a garbage file or a decompression
    bomb is refused here, before any training) and whose size is its entry's; a file truncated after its
    header is found when decoded, named by :class:`ImageError`."""
    missing = [img["file_name"] for img in images if not (folder / img["file_name"]).is_file()]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise NeasError(f"{folder / missing[0]}: no such image file{more} (listed in {path})")
    for img in images:
        file = folder / img["file_name"]
        try:
            with Image.open(file) as image:
                size = image.size
        except Exception as exc:  # PIL raises many types for broken files (and DecompressionBombError)
            raise _image_error(file, exc) from None
        _check_size(file, size, img, path)


def _check_size(file: Path, size: tuple[int, int], img: dict, path: Path) -> None:
    if size != (img["width"], img["height"]):
        raise ImageError(
            f"{file}: the image is {size[0]}x{size[1]} pixels but {path} says {img['width']}x{img['height']} "
            f"(image id {img['id']})"
        )


def _targets(images: list[dict], annotations: list[dict], cats: list[dict]) -> dict:
    """{image id: {"boxes": [[x1, y1, x2, y2]], "labels": [label]}}, crowd boxes left out."""
    label = {c["id"]: i for i, c in enumerate(cats)}
    targets = {img["id"]: {"boxes": [], "labels": []} for img in images}
    for ann in annotations:
        if ann["iscrowd"]:
            continue
        x, y, w, h = ann["bbox"]
        targets[ann["image_id"]]["boxes"].append([x, y, x + w, y + h])
        targets[ann["image_id"]]["labels"].append(label[ann["category_id"]])
    return targets


def _flipped(seed: int, epoch: int, index: int) -> bool:
    """Whether the training view of image ``index`` is flipped in ``epoch``: p = 0.5, a pure function."""
    return random.Random(stream_seed(seed, _FLIP, epoch, index)).random() < 0.5


class DetectionDataset(torch.utils.data.Dataset):
    """The images of a :class:`CocoSplit` with their targets; ``train``: a random horizontal flip
    (p = 0.5) drawn from ``(seed, epoch, index)`` alone, so a resumed run or any number of workers sees
    the same flips. Call :meth:`set_epoch` before each epoch."""

    def __init__(self, data: CocoSplit, *, train: bool, seed: int = 0):
        self.data, self.train, self.seed, self.epoch = data, bool(train), int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.data.images)

    def __getitem__(self, i) -> tuple[torch.Tensor, dict]:
        """(image (3, H, W) RGB in [0, 1], {"boxes": (N, 4) xyxy, "labels": int64 (N,), "image_id": int}),
        the floats in torch's default dtype (float32; float64 where a test pins numbers)."""
        info = self.data.images[i]
        path = self.data.image_path(info)
        try:
            with Image.open(path) as image:
                _check_size(path, image.size, info, self.data.annotation_file)  # changed since it was loaded
                pixels = rgb_array(image)
        except ImageError:
            raise
        except Exception as exc:  # PIL raises many types for broken files (a truncated one: OSError)
            raise _image_error(path, exc) from None
        tensor = torch.from_numpy(pixels).permute(2, 0, 1).to(torch.get_default_dtype()).div_(255.0)  # (3, H, W)
        target = self.data.targets[info["id"]]
        boxes = torch.tensor(target["boxes"], dtype=torch.get_default_dtype()).reshape(-1, 4)  # (N, 4) x1 y1 x2 y2
        labels = torch.tensor(target["labels"], dtype=torch.int64)  # (N,)
        if self.train and _flipped(self.seed, self.epoch, i):
            tensor = tensor.flip(2)
            boxes = torch.stack([info["width"] - boxes[:, 2], boxes[:, 1], info["width"] - boxes[:, 0], boxes[:, 3]], 1)
        return tensor.contiguous(), {"boxes": boxes, "labels": labels, "image_id": int(info["id"])}


def collate(batch) -> tuple[list[torch.Tensor], list[dict]]:
    """A batch of (image, target) pairs as (images, targets) lists: the images keep their own sizes."""
    return [image for image, _ in batch], [target for _, target in batch]
