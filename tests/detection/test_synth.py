"""neas.detection.synth: byte-identical reruns, all three COCO areas, held-out digits for validation,
never writing into a folder it did not make; and the ``neas synth-detection`` command."""

import subprocess
import sys

import numpy as np
import pytest

from neas.detection import synth
from neas.detection.data import DetectionDataset, load_coco
from neas.errors import NeasError


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_the_same_seed_writes_byte_identical_files(tmp_path):
    splits = {"train2017": 6, "val2017": 3}
    assert synth.write_synthetic(tmp_path / "a", splits=splits, size=64) == splits
    synth.write_synthetic(tmp_path / "b", splits=splits, size=64)
    synth.write_synthetic(tmp_path / "c", splits=splits, size=64, seed=1)
    one = _files(tmp_path / "a")
    assert sorted(one) == [
        "annotations/instances_train2017.json",
        "annotations/instances_val2017.json",
        *(f"train2017/{i:012d}.png" for i in range(1, 7)),
        *(f"val2017/{i:012d}.png" for i in range(1, 4)),
    ]
    assert one == _files(tmp_path / "b")
    assert one != _files(tmp_path / "c")


def test_objects_of_every_coco_area_and_negatives_load_as_a_coco_split(tmp_path):
    synth.write_synthetic(tmp_path, splits={"train2017": 80}, seed=0)
    data = load_coco(tmp_path, "train2017")
    assert [c["name"] for c in data.categories] == [str(d) for d in range(10)]
    assert [c["id"] for c in data.categories] == list(range(1, 11))
    annotations = data.ground_truth["annotations"]
    areas = np.array([a["area"] for a in annotations])
    small, large = (areas < 32**2).mean(), (areas > 96**2).mean()
    assert 0.2 < small < 0.6 and 0.03 < large < 0.3 and 1 - small - large > 0.2, (small, large)
    counts = np.bincount([a["image_id"] for a in annotations], minlength=81)[1:]
    assert counts.max() <= 4 and 0 < (counts == 0).sum() < 15  # 1..max_objects, ~5 % negatives
    assert len({a["category_id"] for a in annotations}) == 10
    for a in annotations:
        x, y, w, h = a["bbox"]
        assert x >= 0 and y >= 0 and x + w <= 128 and y + h <= 128 and a["area"] == w * h and a["iscrowd"] == 0
    image, target = DetectionDataset(data, train=False)[0]
    assert image.shape == (3, 128, 128)
    x1, y1, x2, y2 = (int(v) for v in target["boxes"][0])
    assert image[:, y1:y2, x1:x2].max() > 0.5  # the bright digit is in its box on a dark canvas


def test_val_digits_are_disjoint_from_train_digits(tmp_path, monkeypatch):
    _, (train, held_out) = synth._digit_pools(0)
    assert not set(train) & set(held_out) and len(train) + len(held_out) == 1797
    assert len(held_out) == round(0.2 * 1797)
    used = {}
    draw = synth._draw_image

    def spy(rng, digits, pool, size, max_objects):
        used.setdefault(len(pool), 0)
        used[len(pool)] += 1
        return draw(rng, digits, pool, size, max_objects)

    monkeypatch.setattr(synth, "_draw_image", spy)
    synth.write_synthetic(tmp_path, splits={"train2017": 3, "val2017": 2}, size=32)
    assert used == {len(train): 3, len(held_out): 2}


def test_an_existing_non_empty_folder_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    assert synth.write_synthetic(tmp_path / "empty", splits={"val2017": 1}, size=32) == {"val2017": 1}
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(NeasError, match="already exists and is not an empty folder"):
        synth.write_synthetic(tmp_path, splits={"val2017": 1}, size=32)
    with pytest.raises(NeasError, match="already exists and is not an empty folder"):
        synth.write_synthetic(tmp_path / "mine.txt", splits={"val2017": 1}, size=32)
    assert (tmp_path / "mine.txt").read_text() == "keep me" and not (tmp_path / "annotations").exists()
    with pytest.raises(NeasError, match="size: expected an integer >= 16"):
        synth.write_synthetic(tmp_path / "new", size=8)
    with pytest.raises(NeasError, match="is not a split name"):
        synth.write_synthetic(tmp_path / "new", splits={"../x": 1})


def test_the_command_writes_a_set_and_refuses_to_write_into_it_again(tmp_path, capsys):
    from neas.cli import main

    out = tmp_path / "digits"
    argv = ["synth-detection", "--out", str(out), "--train-images", "20", "--val-images", "5"]
    done = subprocess.run([sys.executable, "-m", "neas", *argv], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "20 train2017, 5 val2017 images" in done.stdout
    assert len(load_coco(out, "val2017").images) == 5 and len(list((out / "train2017").iterdir())) == 20
    assert main(argv) == 2  # in process: a second interpreter would double the test's time
    err = capsys.readouterr().err
    assert err.startswith("neas: error: ") and err.count("\n") == 1
    assert "already exists and is not an empty folder" in err
