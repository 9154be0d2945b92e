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

from pathlib import Path

import torch

from neas.data.split import SPLIT_SEED, holdout_split
from neas.data.subimagenet import _images, _link
from neas.errors import NeasError
from neas.io import write_json
from neas.runfiles import SPLIT_LISTING

__all__ = ["carve_test_split"]


def carve_test_split(src: str | Path, out: str | Path, test_fraction: float = 0.2, split: str = "train") -> dict:
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
    write_json(out / SPLIT_LISTING, listing)
    return listing
