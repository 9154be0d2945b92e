"""``neas carve-test``: carve a fixed, stratified test split out of a folder that has only
``train/`` (our CIFAR-10 ImageFolder copy), so that search and final evaluation never share an
image:

    neas carve-test ../shared/data/cifar10 --out data/cifar10-carved --test-fraction 0.2

writes ``out/train/<class>/*`` and ``out/test/<class>/*`` (hard links when possible, else
copies) and ``out/split.json`` listing the seed and the test files. The draw uses the fixed
split seed of :func:`neas.data.split.holdout_split`, so it never moves with a run's seed. The
search stages then hold their search-val part out of ``train/`` (``holdout``) and only
``neas retrain``/``neas evaluate`` read ``test/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from neas.config import option, validate_fields
from neas.data.split import SPLIT_SEED, holdout_split
from neas.data.subimagenet import _images, _link
from neas.errors import NeasError
from neas.io import write_json

__all__ = ["carve_test_split", "CarveTestCommand"]


def carve_test_split(src: "str | Path", out: "str | Path", test_fraction: float = 0.2, split: str = "train") -> dict:
    """Splits ``src/<split>/<class>/*`` into ``out/train`` and ``out/test``; returns the listing."""
    root, out = Path(src), Path(out)
    if not 0.0 < test_fraction < 1.0:
        raise NeasError(f"--test-fraction must be in (0, 1), got {test_fraction}")
    base = root / split
    if not base.is_dir():
        raise NeasError(f"{root} has no {split}/ folder (expected {root}/{split}/<class>/<image>)")
    if out.exists() and any(out.iterdir()):
        raise NeasError(f"{out} already exists and is not empty; choose another --out")
    classes = sorted(p.name for p in base.iterdir() if p.is_dir())
    files = [(c, f) for i, c in enumerate(classes) for f in _images(base / c)]
    if not files:
        raise NeasError(f"{base} has no class folders with images")
    labels = torch.tensor([classes.index(c) for c, _ in files])
    keep, held = holdout_split(labels, test_fraction)
    listing = {
        "source": str(base),
        "seed": SPLIT_SEED,
        "test_fraction": test_fraction,
        "classes": classes,
        "train": len(keep),
        "test": {c: [] for c in classes},
    }
    for part, index in (("train", keep), ("test", held)):
        for i in index.tolist():
            c, f = files[i]
            _link(f, out / part / c / f.name)
            if part == "test":
                listing["test"][c].append(f.name)
    write_json(out / "split.json", listing)
    return listing


@dataclass
class CarveTestCommand:
    """split a train-only image folder into fixed, stratified train/ and test/ parts"""

    src: str = option(None, "a folder with train/<class>/<image> (e.g. our CIFAR-10 copy)", positional=True)
    out: str = option(None, "where to write the carved copy", required=True)
    test_fraction: float = option(0.2, "fraction of every class moved to test/", valid="(0, 1)")
    split: str = option("train", "the sub-folder to split")

    def __post_init__(self):
        validate_fields(self)

    def __call__(self) -> str:
        listing = carve_test_split(self.src, self.out, self.test_fraction, self.split)
        test = sum(len(v) for v in listing["test"].values())
        listed = f"{self.out}/split.json"
        return f"carved: {listing['train']} train / {test} test images in {self.out} (test files listed in {listed})"
