"""On a class-sorted image folder (every real ImageFolder), shrinking and search calibrate and
score on sets that cover every class, and say so in their records."""

import json

import pytest

from neas.config import from_dict
from neas.recipes.search import SearchConfig, search
from neas.recipes.train_supernet import SupernetConfig, train_supernet

from ..helpers import tiny_supernet


def _check(calibration: dict, bn_images: int, score_images: int):
    assert calibration["bn_images"] == bn_images
    assert calibration["score_images"] == score_images
    for part in ("bn", "score"):
        counts = calibration[f"{part}_classes"]
        assert sorted(counts) == [f"class{i}" for i in range(10)], counts
        assert max(counts.values()) <= 1.5 * min(counts.values()), counts
        assert sum(counts.values()) == calibration[f"{part}_images"]


@pytest.fixture(scope="module")
def sorted_folder(tmp_path_factory):
    """10 classes x 24 images, written class by class; each class a different colour."""
    import numpy as np
    from PIL import Image

    root = tmp_path_factory.mktemp("sorted")
    rng = np.random.default_rng(0)
    for c in range(10):
        (root / "train" / f"class{c}").mkdir(parents=True)
        for j in range(24):
            pixels = rng.integers(0, 60, (32, 32, 3)) + np.array([25 * c, 250 - 25 * c, 120])
            Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(root / "train" / f"class{c}" / f"{j:03d}.png")
    return root


def test_shrink_rounds_and_arch_json_record_balanced_sets(sorted_folder, tmp_path):
    supernet = train_supernet(
        from_dict(
            SupernetConfig,
            tiny_supernet(
                out=str(tmp_path / "supernet"),
                data="imagefolder",
                data_dir=str(sorted_folder),
                holdout=0.25,
                epochs=3,
                batch_size=16,
                lr=0.1,
                shrink_drop=2,
                shrink_samples=2,
                bn_batches=2,
                probe_images=40,
                workers=0,
            ),
        )
    )
    rounds = sorted((supernet / "shrink").glob("round_*.json"))
    assert len(rounds) == 2
    for path in rounds:
        _check(json.loads(path.read_text())["calibration"], bn_images=32, score_images=40)
    run = search(
        from_dict(
            SearchConfig,
            dict(
                supernet=str(supernet),
                out=str(tmp_path / "search"),
                population=4,
                parents=2,
                generations=1,
                mutations=0,
                crossovers=0,
                bn_batches=2,
                batch_size=16,
                val_images=30,
                device="cpu",
            ),
        )
    )
    _check(json.loads((run / "arch.json").read_text())["calibration"], bn_images=32, score_images=30)
