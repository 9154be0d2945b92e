"""``neas subimagenet``: the paper's subImageNet (after Cream) — 100 classes drawn at random
(seeded) from an ImageNet tree, 250 training and 50 validation images each.

Images are linked (hard link when possible, else copied), never re-encoded; the chosen classes
and files are listed in ``classes.json``. Validation images come from the class's ``val``
folder when it has enough, otherwise from training images not used for ``train``.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

from neas.data.datasets import IMAGE_EXTENSIONS
from neas.errors import NeasError
from neas.io import write_json
from neas.runfiles import CLASS_LISTING

__all__ = ["make_subimagenet"]


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS) if folder.is_dir() else []


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def make_subimagenet(
    imagenet: str | Path,
    out: str | Path,
    classes: int = 100,
    train_per_class: int = 250,
    val_per_class: int = 50,
    seed: int = 0,
) -> dict:
    """Writes ``out/train/<class>/*`` and ``out/val/<class>/*``; returns the listing."""
    root, out = Path(imagenet), Path(out)
    if not (root / "train").is_dir():
        raise NeasError(
            f"{root} has no train/ folder (expected an ImageNet tree: train/<class>/<image>, val/<class>/<image>)"
        )
    if out.exists() and any(out.iterdir()):
        raise NeasError(f"{out} already exists and is not empty; choose another --out")
    all_classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    if len(all_classes) < classes:
        raise NeasError(f"{root}/train has {len(all_classes)} classes, fewer than the {classes} asked for")
    rng = random.Random(seed)
    chosen = sorted(rng.sample(all_classes, classes))
    listing = {"source": str(root), "seed": seed, "classes": chosen, "train": {}, "val": {}}
    for c in chosen:
        train = _images(root / "train" / c)
        rng.shuffle(train)
        val_source = _images(root / "val" / c)
        if len(val_source) >= val_per_class:
            rng.shuffle(val_source)
            val = val_source[:val_per_class]
        else:
            val = train[train_per_class : train_per_class + val_per_class]
        if len(train) < train_per_class or len(val) < val_per_class:
            raise NeasError(f"class {c}: not enough images for {train_per_class} train + {val_per_class} val")
        for split, files in (("train", train[:train_per_class]), ("val", val)):
            for f in files:
                _link(f, out / split / c / f.name)
            listing[split][c] = [f.name for f in files]
    write_json(out / CLASS_LISTING, listing)
    return listing
