import json

import pytest
from PIL import Image

from neas.cli import main
from neas.data.subimagenet import make_subimagenet
from neas.errors import NeasError


@pytest.fixture
def imagenet(tmp_path):
    root = tmp_path / "imagenet"
    for i in range(6):
        for split, n in (("train", 5), ("val", 2)):
            (root / split / f"n{i:03d}").mkdir(parents=True)
            for j in range(n):
                Image.new("RGB", (8, 8), (i * 40, j * 30, 0)).save(root / split / f"n{i:03d}" / f"{j}.JPEG")
    return root


def test_subset_is_seeded_and_listed(imagenet, tmp_path):
    a = make_subimagenet(imagenet, tmp_path / "a", classes=4, train_per_class=3, val_per_class=2, seed=1)
    b = make_subimagenet(imagenet, tmp_path / "b", classes=4, train_per_class=3, val_per_class=2, seed=1)
    assert a["classes"] == b["classes"]
    assert len(a["classes"]) == 4
    for c in a["classes"]:
        assert len(list((tmp_path / "a" / "train" / c).iterdir())) == 3
        assert len(list((tmp_path / "a" / "val" / c).iterdir())) == 2
    assert json.loads((tmp_path / "a" / "classes.json").read_text())["classes"] == a["classes"]


def test_errors(imagenet, tmp_path, capsys):
    with pytest.raises(NeasError, match="fewer than the 10 asked for"):
        make_subimagenet(imagenet, tmp_path / "x", classes=10)
    with pytest.raises(NeasError, match="not enough images"):
        make_subimagenet(imagenet, tmp_path / "y", classes=2, train_per_class=250)
    (tmp_path / "nothing").mkdir()  # a missing one is refused before (neas.config.check_inputs)
    assert main(["subimagenet", "--imagenet", str(tmp_path / "nothing"), "--out", str(tmp_path / "z")]) == 2
    assert "no train/ folder" in capsys.readouterr().err
