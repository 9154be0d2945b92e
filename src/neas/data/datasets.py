"""Datasets (docs/DESIGN.md §10): ``digits``, ``cifar10``/``cifar100``, ``imagefolder``.

Small datasets are decoded once into a uint8 tensor (N, 3, S, S) at the space's input size
and kept in memory (:class:`ImageTensors`), so epochs never re-decode images. Image folders
choose with ``decode``: ``memory``, ``stream`` (from disk, :class:`ImageFiles`) or ``auto``
(stream when more than ``max_memory_gb`` once decoded). Search runs never see the ``test`` split.

Every image file is decoded by one transform, :class:`neas.data.preprocess.Preprocessing` (timm's
bicubic resize of the short side to S / crop_pct and centre crop), whatever its size. A training split
is seen two ways: its training part is augmented from the whole short side (``crop_pct`` 1.0), its
held-out part (:func:`evaluation_view`) exactly as an evaluation split is — at the evaluation crop of
the model (:func:`neas.data.preprocess.evaluation_crop_pct`: 1.0 for images held in memory, 0.875
for streamed ones) — so what is fitted on the held-out part (temperature, anytime order, candidate
scores) sees the view it is reported on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import math
import os
import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from neas.data.preprocess import TRAIN_CROP_PCT, Preprocessing, evaluation_crop_pct
from neas.data.split import holdout_split
from neas.errors import NeasError, suggest
from neas.io import atomic_write
from neas.options import DATASETS, DECODE_MODES

__all__ = [
    "DATASETS",
    "DECODE_MODES",
    "IMAGE_EXTENSIONS",
    "ImageFiles",
    "ImageTensors",
    "check_same_classes",
    "evaluation_view",
    "image_arrays",
    "load_dataset",
    "preprocessing_of",
    "rgb_array",
    "scan_split",
]

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
_DIGITS_TEST_FRACTION = 0.2


@dataclass
class ImageTensors:
    """A decoded dataset in memory: uint8 images (N, 3, S, S) and int64 labels (N,)."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    files: list[str] | None = None  # the image files, when decoded from a folder (for other views of them)
    crop_pct: float | None = None  # the view the files were decoded at (None: not decoded from files)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def subset(self, index: torch.Tensor) -> ImageTensors:
        files = None if self.files is None else [self.files[i] for i in index.tolist()]
        return ImageTensors(self.images[index], self.labels[index], self.classes, files, self.crop_pct)


@dataclass
class ImageFiles:
    """A dataset too large for memory: file paths and labels, decoded by the loader."""

    paths: list[str]
    labels: torch.Tensor
    classes: list[str]
    input_size: int
    crop_pct: float = 1.0  # the evaluation view (see :func:`decode_image`)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def subset(self, index: torch.Tensor) -> ImageFiles:
        return ImageFiles(
            [self.paths[i] for i in index.tolist()], self.labels[index], self.classes, self.input_size, self.crop_pct
        )


def _resize_uint8(images: torch.Tensor, size: int) -> torch.Tensor:
    """(N, C, H, W) uint8 -> (N, C, size, size) uint8, bilinear with antialiasing."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images.contiguous()
    out = F.interpolate(images.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return out.round().clamp(0, 255).to(torch.uint8)


def _digits(split: str, input_size: int) -> ImageTensors:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.from_numpy(np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8))[:, None].repeat(1, 3, 1, 1)
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    train, test = holdout_split(labels, _DIGITS_TEST_FRACTION)  # digits ships no test split: carve a fixed one
    index = test if split == "test" else train
    return ImageTensors(_resize_uint8(images[index], input_size), labels[index], [str(i) for i in range(10)])


def _cifar(
    name: str,
    root: Path | None,
    split: str,
    input_size: int,
    download: bool,
    **folder,
) -> ImageTensors | ImageFiles:
    """torchvision's arrays, or an image folder copy (``folder``: :func:`_imagefolder`'s options)."""
    if root is not None and (root / split).is_dir():
        return _imagefolder(root, split, input_size, **folder)
    from torchvision import datasets

    if root is None:
        raise NeasError(f"{name}: --data-dir is required (a torchvision download location or an ImageFolder copy)")
    try:
        if name == "svhn":  # torchvision's SVHN: (N, 3, 32, 32) arrays, labels 0-9, splits train/test
            ds = datasets.SVHN(str(root), split="test" if split == "test" else "train", download=download)
            images = torch.from_numpy(ds.data).contiguous()
            return ImageTensors(
                _resize_uint8(images, input_size),
                torch.tensor(ds.labels, dtype=torch.int64),
                [str(c) for c in range(10)],
            )
        cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
        ds = cls(str(root), train=split != "test", download=download)
    except RuntimeError as exc:
        raise NeasError(
            f"{name}: no dataset in {root} ({exc}); pass --download when online, or point --data-dir at an "
            f"ImageFolder copy with {root}/{split}/<class>/<image>"
        ) from None
    images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
    return ImageTensors(
        _resize_uint8(images, input_size), torch.tensor(ds.targets, dtype=torch.int64), list(ds.classes)
    )


def _scan(root: Path, split: str) -> tuple[list[str], list[int], list[str]]:
    base = root / split
    if not root.is_dir():
        raise NeasError(f"data directory {root} does not exist")
    if not base.is_dir():
        present = sorted(p.name for p in root.iterdir() if p.is_dir())
        raise NeasError(
            f"data directory {root} has no '{split}' split (expected {root}/{split}/<class>/<image>; found: "
            f"{present or 'nothing'})"
        )
    folders = sorted(p.name for p in base.iterdir() if p.is_dir())
    hidden = [c for c in folders if c.startswith(".")]
    if hidden:
        log.warning("%s: ignoring hidden folders %s", base, ", ".join(hidden))
    per_class, skipped = {}, Counter()
    for c in (c for c in folders if not c.startswith(".")):
        files = []
        for dirpath, dirs, names in os.walk(base / c):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))  # the same file order on every file system
            names = [f for f in sorted(names) if not f.startswith(".")]
            files += [os.path.join(dirpath, f) for f in names if f.lower().endswith(IMAGE_EXTENSIONS)]
            skipped.update(
                os.path.splitext(f)[1].lower() or "(none)" for f in names if not f.lower().endswith(IMAGE_EXTENSIONS)
            )
        per_class[c] = files
    if skipped:
        log.warning(
            "%s: skipping %d file(s) without a supported image extension (%s); supported: %s",
            base,
            sum(skipped.values()),
            ", ".join(f"{ext} x{n}" for ext, n in sorted(skipped.items())),
            " ".join(IMAGE_EXTENSIONS),
        )
    empty = [c for c, files in per_class.items() if not files]
    if empty:
        log.warning("%s: ignoring class folders without images: %s", base, ", ".join(empty))
    if not per_class:
        raise NeasError(f"{base} has no class folders (expected {base}/<class>/<image>)")
    classes = [c for c, files in per_class.items() if files]
    if not classes:
        raise NeasError(f"{base} contains no images (looked for {', '.join(IMAGE_EXTENSIONS)})")
    if len(classes) < 2:
        raise NeasError(
            f"{base} has {len(classes)} class folder(s) with images ({', '.join(classes) or 'none'}); "
            f"at least 2 are needed (expected {base}/<class>/<image>, looked for {', '.join(IMAGE_EXTENSIONS)})"
        )
    paths = [f for c in classes for f in per_class[c]]
    labels = [i for i, c in enumerate(classes) for _ in per_class[c]]
    return paths, labels, classes


def preprocessing_of(data: ImageTensors | ImageFiles, input_size: int) -> Preprocessing:
    """The evaluation transform of a model trained on ``data`` (a training split): the evaluation crop
    follows how its training part is augmented (:func:`neas.data.preprocess.evaluation_crop_pct`)."""
    return Preprocessing.for_training(input_size, isinstance(data, ImageFiles))


_eval_transforms: dict = {}


def eval_transform(input_size: int, crop_pct: float):
    """timm's evaluation transform at ``Preprocessing(input_size, crop_pct)`` (bicubic resize of the
    short side to ``input_size / crop_pct``, centre crop), returning uint8 (3, S, S) tensors:
    normalisation happens on the device."""
    key = (input_size, crop_pct)
    if key not in _eval_transforms:
        _eval_transforms[key] = Preprocessing(input_size, crop_pct).transform(normalized=False)
    return _eval_transforms[key]


def _to_rgb(img: Image.Image) -> Image.Image:
    """An image of any mode as 8-bit RGB. PIL's own conversion clips the wide grey modes at 255
    (a 16-bit PNG becomes white), so they are scaled here: ``I;16*`` and ``I`` (how PIL reads
    16-bit PNGs and TIFFs) by ``>> 8`` from 0-65535, ``F`` from 0-1 (docs/DECISIONS.md)."""
    if img.mode.startswith("I;16") or img.mode == "I":
        array = np.asarray(img).astype(np.int64).clip(0, 65535) >> 8
    elif img.mode == "F":
        array = np.rint(np.asarray(img, dtype=np.float64).clip(0.0, 1.0) * 255.0)
    else:
        return img.convert("RGB")
    return Image.fromarray(array.astype(np.uint8), "L").convert("RGB")


def rgb_array(img: Image.Image) -> np.ndarray:
    """(H, W, 3) uint8 RGB of an image of any mode (see :func:`_to_rgb`): the one decoder of
    classification and detection images alike."""
    return np.array(_to_rgb(img), dtype=np.uint8)


def open_rgb(path: str) -> Image.Image:
    """One image file, decoded to 8-bit RGB (see :func:`_to_rgb`); errors name the file."""
    try:
        with Image.open(path) as img:
            return _to_rgb(img)
    except Exception as exc:  # PIL raises many types for broken files
        raise NeasError(f"cannot read image {path}: {exc}") from None


def decode_image(path: str, input_size: int, crop_pct: float = TRAIN_CROP_PCT) -> torch.Tensor:
    """One image file -> (3, S, S) uint8 with timm's evaluation transform at ``crop_pct``, whatever
    its size (:mod:`neas.data.preprocess`). Errors name the file."""
    return eval_transform(input_size, crop_pct)(open_rgb(path)).contiguous()


def image_arrays(data: ImageTensors | ImageFiles, indices: list[int]) -> list[np.ndarray]:
    """The images ``indices`` of ``data`` as the model sees them before normalisation: (S, S, 3) uint8 each."""
    if isinstance(data, ImageFiles):
        pixels = [decode_image(data.paths[i], data.input_size, data.crop_pct) for i in indices]
    else:
        pixels = [data.images[i] for i in indices]
    return [x.permute(1, 2, 0).numpy() for x in pixels]


def cache_dir() -> Path:
    """Where decoded image folders are cached (``$NEAS_CACHE_DIR``, else ``~/.cache/neas``)."""
    return Path(os.environ.get("NEAS_CACHE_DIR") or Path.home() / ".cache" / "neas")


def cache_cap_bytes() -> int:
    """The decode cache's size cap, ``$NEAS_CACHE_MAX_GB`` GiB (default 20; 0 caches nothing)."""
    raw = os.environ.get("NEAS_CACHE_MAX_GB") or "20"
    try:
        gib = float(raw)
    except ValueError:
        gib = math.nan
    if not math.isfinite(gib) or gib < 0:
        raise NeasError(f"NEAS_CACHE_MAX_GB must be a number of GiB >= 0, got {raw!r}")
    return int(gib * 2**30)


_CACHE_FILE = re.compile(r"[0-9a-f]{24}\.npy")  # the names the cache writes; nothing else there is touched


def _cache_key(paths: list[str], input_size: int, crop_pct: float) -> str:
    """The view and every file's name and bytes: a file rewritten with its old size and mtime
    (``tar x``, ``rsync -a``, ``cp -p``) is a new key. Hashing 50,000 CIFAR PNGs (197 MB) takes
    1.5 s from the page cache, 4 % of decoding them (docs/DECISIONS.md)."""
    # v4: every image through the transform (v3: S x S images kept; wide grey images decoded, not clipped)
    digest = hashlib.sha256(f"v4:{input_size}:{crop_pct}".encode())
    for p in paths:
        try:
            with open(p, "rb") as f:
                content = f.read()
        except OSError as exc:
            raise NeasError(f"cannot read image {p}: {exc.strerror or exc}") from None
        digest.update(f"{p}:{len(content)}\n".encode())
        digest.update(content)
    return digest.hexdigest()[:24]


def _make_room(directory: Path, need: int, cap: int) -> bool:
    """Removes the least recently used cache files until ``need`` more bytes fit in ``cap``;
    False (nothing removed) when ``need`` alone is over it."""
    if need > cap:
        return False
    files = []
    for path in directory.glob("*.npy"):
        if _CACHE_FILE.fullmatch(path.name):
            with contextlib.suppress(FileNotFoundError):  # another process may have removed it
                st = path.stat()
                files.append((st.st_mtime_ns, st.st_size, path))
    total = sum(size for _, size, _ in files)
    for _, size, path in sorted(files):
        if total + need <= cap:
            break
        path.unlink(missing_ok=True)
        total -= size
        log.info("decode cache: removed %s (the cache is capped at NEAS_CACHE_MAX_GB=%g GiB)", path, cap / 2**30)
    return True


def _read_cache(cached: Path) -> torch.Tensor | None:
    if not cached.is_file():
        return None
    try:
        images = torch.from_numpy(np.load(cached))
    except (OSError, ValueError):
        log.warning("ignoring a damaged decode cache %s", cached)
        return None
    with contextlib.suppress(OSError):
        os.utime(cached)  # used now: the cap removes the least recently used first
    return images


def _write_cache(cached: Path, images: torch.Tensor, cap: int) -> None:
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        if _make_room(cached.parent, images.numel() + 128, cap):  # + the .npy header
            atomic_write(cached, lambda f: np.save(f, images.numpy()))
        else:
            log.info("decode cache: %.1f GiB is over NEAS_CACHE_MAX_GB, not cached", images.numel() / 2**30)
    except OSError as exc:  # a read-only home: decoding every time still works
        log.warning("could not write the decode cache %s: %s", cached, exc)


def _decode_all(paths: list[str], input_size: int, crop_pct: float) -> torch.Tensor:
    """The files decoded at the view (input_size, crop_pct) into one uint8 (N, 3, S, S) tensor,
    cached as one array keyed by the files' names and contents (see :func:`_cache_key`)."""
    cap = cache_cap_bytes()  # a bad $NEAS_CACHE_MAX_GB is refused before any decoding
    cached = cache_dir() / f"{_cache_key(paths, input_size, crop_pct)}.npy"
    images = _read_cache(cached)
    if images is not None:
        return images
    images = torch.empty(len(paths), 3, input_size, input_size, dtype=torch.uint8)

    def work(i):
        images[i] = decode_image(paths[i], input_size, crop_pct)

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        list(pool.map(work, range(len(paths))))
    _write_cache(cached, images, cap)
    return images


def _imagefolder(
    root: Path,
    split: str,
    input_size: int,
    decode: str = "auto",
    max_memory_gb: float = 8.0,
    crop_pct: float | None = None,
    announce: bool = True,
) -> ImageTensors | ImageFiles:
    """The folder's split, streamed or decoded into memory as ``decode`` says, at the view ``crop_pct``
    (None: the training view for ``train``, else this split's evaluation crop); with ``announce``, one line
    saying which (a listing for its labels alone, ``decode="stream"`` without ``announce``, says nothing)."""
    paths, labels, classes = _scan(root, split)
    label_tensor = torch.tensor(labels, dtype=torch.int64)
    decoded_bytes = len(paths) * 3 * input_size * input_size
    streamed = decode == "stream" or (decode == "auto" and decoded_bytes > max_memory_gb * 2**30)
    if crop_pct is None:
        crop_pct = TRAIN_CROP_PCT if split == "train" else evaluation_crop_pct(streamed)
    if streamed:
        why = "decode: stream" if decode == "stream" else f"more than --max-memory-gb {max_memory_gb:g} GiB decoded"
        if announce:
            log.info("%s/%s: %d images stream from disk, decoded per step (%s)", root, split, len(paths), why)
        return ImageFiles(paths, label_tensor, classes, input_size, crop_pct)
    images = _decode_all(paths, input_size, crop_pct)
    if announce:
        why = "decode: memory" if decode == "memory" else f"decode: auto, within --max-memory-gb {max_memory_gb:g}"
        log.info(
            "%s/%s: %d images decoded into memory at %d x %d (%.1f MiB; %s)",
            *(root, split, len(paths), input_size, input_size, decoded_bytes / 2**20, why),
        )
    return ImageTensors(images, label_tensor, classes, paths, crop_pct)


def evaluation_view(
    data: ImageTensors | ImageFiles, index: torch.Tensor, crop_pct: float | None = None
) -> ImageTensors | ImageFiles:
    """The images ``index`` of a training split seen exactly as an evaluation split is (timm's
    evaluation transform at ``crop_pct``; None: the evaluation crop of a model trained on ``data``,
    :func:`preprocessing_of`): the held-out part of a split. Datasets without files (digits,
    torchvision's CIFAR arrays) have one view."""
    part = data.subset(index)
    if crop_pct is None:
        crop_pct = evaluation_crop_pct(isinstance(data, ImageFiles))
    if isinstance(part, ImageFiles):
        return dataclasses.replace(part, crop_pct=crop_pct)
    if part.files is None or part.crop_pct == crop_pct:
        return part
    images = _decode_all(part.files, part.images.shape[-1], crop_pct)
    return ImageTensors(images, part.labels, part.classes, part.files, crop_pct)


def load_dataset(
    name: str,
    split: str,
    input_size: int,
    data_dir: str | Path | None = None,
    download: bool = False,
    decode: str = "auto",
    max_memory_gb: float = 8.0,
    crop_pct: float | None = None,
) -> ImageTensors | ImageFiles:
    """Loads ``split`` ('train' or 'test') of dataset ``name`` at ``input_size`` x ``input_size``;
    image folders are decoded into memory or streamed as ``decode`` says (see the module docstring),
    and say which in one line (``decode="list"``, for checks before a run: streamed, without the line),
    at the view ``crop_pct`` (None: the training view for ``train``, else the split's own evaluation
    crop; pass the model's, ``Preprocessing.crop_pct``, to evaluate it). Arrays (digits, CIFAR) have
    one view."""
    if decode not in (*DECODE_MODES, "list"):
        raise NeasError(f"decode: unknown {decode!r}{suggest(decode, DECODE_MODES)}; choose {', '.join(DECODE_MODES)}")
    folder = {"decode": "stream" if decode == "list" else decode, "max_memory_gb": max_memory_gb}
    folder.update(crop_pct=crop_pct, announce=decode != "list")
    if name not in DATASETS:
        raise NeasError(f"unknown dataset {name!r}{suggest(name, DATASETS)}; datasets: {', '.join(DATASETS)}")
    if name != "imagefolder" and split not in ("train", "test"):
        raise NeasError(
            f"split: {name} has the splits train and test, not {split!r}{suggest(split, ('train', 'test'))}"
        )
    root = Path(data_dir).expanduser() if data_dir else None
    if root is not None and root.exists() and not root.is_dir():
        raise NeasError(f"data_dir {root} is a file, not a directory")
    if name == "digits":
        if root is not None:  # a --data-dir given for it would be silently ignored
            raise NeasError(f"data_dir {root}: the digits dataset is bundled with scikit-learn and reads no directory")
        return _digits(split, input_size)
    if name in ("cifar10", "cifar100", "svhn"):
        return _cifar(name, root, split, input_size, download, **folder)
    if root is None:
        raise NeasError("imagefolder: --data-dir is required (a root/<split>/<class>/<image> tree)")
    return _imagefolder(root, split, input_size, **folder)


def scan_split(name: str, split: str, input_size: int, data_dir=None, download: bool = False):
    """``split``'s labels and classes (and an image folder's files) for checks before a run starts: image
    folders are listed, not decoded, and print no data line (the run's own loading says how it holds them)."""
    return load_dataset(name, split, input_size, data_dir, download, decode="list")


def check_same_classes(expected: list[str], got: list[str], where: str) -> None:
    """Classes are matched by name, not position: ``got`` must be ``expected``, in the same order."""
    if list(expected) == list(got):
        return
    missing, extra = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
    detail = f"missing {missing}, unexpected {extra}" if missing or extra else "the same names in another order"
    raise NeasError(f"{where}: its classes do not match the training classes ({detail})")
