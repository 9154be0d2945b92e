import json

import numpy as np
import pytest
from PIL import Image

from neas.cli import main
from neas.data.carve import carve_test_split
from neas.errors import NeasError


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "src"
    for c, n in (("cat", 10), ("dog", 5)):
        (root / "train" / c).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(np.full((4, 4, 3), i, np.uint8)).save(root / "train" / c / f"{i}.png")
    return root


def _files(root, part):
    return {(p.parent.name, p.name) for p in (root / part).rglob("*.png")}


def test_carve_is_stratified_disjoint_complete_and_fixed(folder, tmp_path):
    listing = carve_test_split(folder, tmp_path / "a", test_fraction=0.2)
    train, test = _files(tmp_path / "a", "train"), _files(tmp_path / "a", "test")
    assert not train & test
    assert train | test == _files(folder, "train")
    # 20 % of each class
    assert sum(c == "cat" for c, _ in test) == 2
    assert sum(c == "dog" for c, _ in test) == 1
    assert listing["train"] == 12
    assert {c: sorted(v) for c, v in listing["test"].items()} == {
        c: sorted(f for k, f in test if k == c) for c in ("cat", "dog")
    }
    assert json.loads((tmp_path / "a" / "split.json").read_text())["test"] == listing["test"]
    carve_test_split(folder, tmp_path / "b", test_fraction=0.2)
    assert _files(tmp_path / "b", "test") == test  # the draw never moves
    c, name = sorted(train)[0]
    assert (tmp_path / "a" / "train" / c / name).read_bytes() == (folder / "train" / c / name).read_bytes()


def test_carve_errors(folder, tmp_path, capsys):
    with pytest.raises(NeasError, match="no val/ folder"):
        carve_test_split(folder, tmp_path / "x", split="val")
    with pytest.raises(NeasError, match="must be in"):
        carve_test_split(folder, tmp_path / "x", test_fraction=1.0)
    assert main(["carve-test", str(folder), "--out", str(tmp_path / "c")]) == 0
    assert "12 train / 3 test" in capsys.readouterr().out
    assert main(["carve-test", str(folder), "--out", str(tmp_path / "c")]) == 2  # never overwrites
    assert "not empty" in capsys.readouterr().err
