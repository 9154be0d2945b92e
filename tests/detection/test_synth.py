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
    with pytest.raises(NeasError, match=r"size: expected an integer in 16\.\.4096 \(pixels\), got 8"):
        synth.write_synthetic(tmp_path / "new", size=8)
    with pytest.raises(NeasError, match="is not a split name"):
        synth.write_synthetic(tmp_path / "new", splits={"../x": 1})


def test_a_failed_or_killed_run_leaves_a_folder_its_rerun_replaces(tmp_path, monkeypatch):
    """The fuzz pass: a killed run (33 images, no annotation file) left a folder the rerun refused."""
    splits = {"train2017": 6, "val2017": 3}
    synth.write_synthetic(tmp_path / "fresh", splits=splits, size=32)
    png, calls = synth._png, []

    def dies_at_the_fifth_image(canvas):
        calls.append(1)
        if len(calls) == 5:
            raise MemoryError("killed")
        return png(canvas)

    monkeypatch.setattr(synth, "_png", dies_at_the_fifth_image)
    out = tmp_path / "o"
    with pytest.raises(MemoryError):
        synth.write_synthetic(out, splits=splits, size=32)
    monkeypatch.undo()
    assert (out / synth.UNFINISHED).is_file() and len(list((out / "train2017").iterdir())) == 4
    (out / "train2017" / ".000000000005.png.4242.tmp").write_bytes(b"half")  # what a SIGKILL mid-write leaves
    assert synth.write_synthetic(out, splits={"train2017": 2}, size=32) == {"train2017": 2}  # other arguments
    assert sorted(_files(out)) == ["annotations/instances_train2017.json", *(f"train2017/{i:012d}.png" for i in (1, 2))]
    (out / synth.UNFINISHED).write_text("{}")  # unfinished again: the rerun with the first arguments replaces it
    assert synth.write_synthetic(out, splits=splits, size=32) == splits
    assert _files(out) == _files(tmp_path / "fresh") and not (out / synth.UNFINISHED).exists()


def test_an_unfinished_set_with_a_file_it_never_writes_is_refused_untouched(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / synth.UNFINISHED).write_text("{}")
    (out / "train2017").mkdir()
    (out / "train2017" / "notes.txt").write_text("keep me")
    with pytest.raises(NeasError, match=r"holds an unfinished synthetic set and .*train2017/notes\.txt, which neas"):
        synth.write_synthetic(out, splits={"train2017": 1}, size=32)
    assert (out / "train2017" / "notes.txt").read_text() == "keep me"


def test_an_absurd_size_is_refused_before_any_folder_is_made(tmp_path):
    """The fuzz pass: --size 100000 ran out of memory and left two empty folders behind."""
    with pytest.raises(NeasError, match=r"size: expected an integer in 16\.\.4096 \(pixels\), got 100000"):
        synth.write_synthetic(tmp_path / "o", size=100000)
    assert not (tmp_path / "o").exists()


def test_a_sigkilled_command_is_finished_by_its_rerun_and_a_finished_set_is_never_written_again(tmp_path, capsys):
    """The fuzz pass's case: `kill -9` of `neas synth-detection` mid-way left a folder the same command refused."""
    import os
    import time

    from neas.cli import main

    out = tmp_path / "digits"
    argv = ["synth-detection", "--out", str(out), "--train-images", "3000", "--val-images", "5", "--size", "32"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "neas", *argv], env=env, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (out / "train2017").is_dir() or len(list((out / "train2017").iterdir())) < 3:
        assert proc.poll() is None and time.time() < deadline, "it finished or never started"
        time.sleep(0.02)
    proc.kill()  # SIGKILL: no handler runs
    proc.wait()
    assert not (out / "annotations" / "instances_val2017.json").exists()
    argv[argv.index("3000")] = "20"  # the rerun may ask for another set: the unfinished one is replaced
    assert main(argv) == 0  # in process: a second interpreter would double the test's time
    assert "20 train2017, 5 val2017 images" in capsys.readouterr().out
    assert len(load_coco(out, "val2017").images) == 5 and len(list((out / "train2017").iterdir())) == 20
    assert main(argv) == 2  # finished: never written into again
    err = capsys.readouterr().err
    assert err.startswith("neas: error: ") and err.count("\n") == 1
    assert "already exists and is not an empty folder" in err
