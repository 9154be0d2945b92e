import pytest
import torch

from neas.data import Augment, BatchLoader, Training, holdout_split, load_dataset
from neas.data.datasets import ImageTensors
from neas.errors import NeasError


def test_holdout_is_stratified_deterministic_and_disjoint():
    labels = torch.arange(10).repeat_interleave(50)
    keep, held = holdout_split(labels, 0.1)
    assert len(held) == 50
    assert len(keep) == 450
    assert set(keep.tolist()).isdisjoint(held.tolist())
    assert torch.bincount(labels[held]).tolist() == [5] * 10
    k2, h2 = holdout_split(labels, 0.1)
    assert torch.equal(held, h2)
    assert torch.equal(keep, k2)


def test_digits_train_and_test_are_disjoint():
    train, test = load_dataset("digits", "train", 16), load_dataset("digits", "test", 16)
    assert len(train) + len(test) == 1797
    assert train.images.shape[1:] == (3, 16, 16)
    assert train.images.dtype == torch.uint8
    assert train.num_classes == 10
    # no test image appears in the training split
    flat_train = {bytes(x.flatten().tolist()) for x in train.images}
    assert sum(bytes(x.flatten().tolist()) in flat_train for x in test.images) < 5  # digits has a few exact duplicates


def _data(n=100):
    return ImageTensors(
        torch.randint(0, 255, (n, 3, 8, 8), dtype=torch.uint8), torch.arange(n) % 10, [str(i) for i in range(10)]
    )


def test_epochs_are_reproducible_and_differ():
    loader = BatchLoader(_data(), 16, Training(1, Augment(pad=2)))
    a = [x for x, _ in loader.epoch(0)]
    b = [x for x, _ in loader.epoch(0)]
    c = [x for x, _ in loader.epoch(1)]
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    assert not torch.equal(a[0], c[0])
    assert len(a) == 6
    assert a[0].is_contiguous(memory_format=torch.channels_last)


def test_rank_shards_are_disjoint_and_equal():
    data = _data(100)
    data.labels = torch.arange(100)  # each image's label is its index
    shards = [
        torch.cat([y for _, y in BatchLoader(data, 10, Training(seed=0, rank=r, world=2)).epoch(3)]) for r in range(2)
    ]
    assert len(shards[0]) == len(shards[1]) == 50
    assert set(shards[0].tolist()).isdisjoint(shards[1].tolist())
    assert sorted(shards[0].tolist() + shards[1].tolist()) == list(range(100))


def test_eval_loader_keeps_every_image_in_order():
    data = _data(37)
    ys = torch.cat([y for _, y in BatchLoader(data, 10, False).epoch(0)])
    assert torch.equal(ys, data.labels)


def test_streamed_imagefolder(tmp_path):
    from PIL import Image

    for c in ("a", "b"):
        (tmp_path / "train" / c).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (20 + i, 18), (i * 40, 0, 0)).save(tmp_path / "train" / c / f"{i}.png")
    mem = load_dataset("imagefolder", "train", 16, tmp_path)
    assert mem.images.shape == (6, 3, 16, 16)
    assert mem.classes == ["a", "b"]
    files = load_dataset("imagefolder", "train", 16, tmp_path, max_memory_gb=0)
    batches = list(BatchLoader(files, 4, False).epoch(0))
    assert sum(len(y) for _, y in batches) == 6
    x_mem = next(BatchLoader(mem, 6, False).epoch(0))[0]
    x_files = torch.cat([x for x, _ in batches])
    torch.testing.assert_close(x_mem, x_files)
    with pytest.raises(NeasError, match="has no 'test' split"):
        load_dataset("imagefolder", "test", 16, tmp_path)


def test_decoded_folders_are_cached_and_invalidated(tmp_path):
    import time

    from PIL import Image

    from neas.data.datasets import cache_dir

    for c in ("a", "b"):
        (tmp_path / "train" / c).mkdir(parents=True)
        Image.new("RGB", (12, 12), (200 if c == "a" else 10, 0, 0)).save(tmp_path / "train" / c / "x.png")
    first = load_dataset("imagefolder", "train", 8, tmp_path)
    files = list(cache_dir().glob("*.npy"))
    second = load_dataset("imagefolder", "train", 8, tmp_path)
    assert torch.equal(first.images, second.images)
    assert list(cache_dir().glob("*.npy")) == files
    time.sleep(0.01)
    Image.new("RGB", (12, 12), (0, 255, 0)).save(tmp_path / "train" / "a" / "x.png")  # changed file: new key
    third = load_dataset("imagefolder", "train", 8, tmp_path)
    assert not torch.equal(third.images, first.images)
    assert len(list(cache_dir().glob("*.npy"))) == len(files) + 1


def _two_classes(root, n=3):
    from PIL import Image

    for c in ("a", "b"):
        (root / "train" / c).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (20, 18), (i * 40, 0, 0)).save(root / "train" / c / f"{i}.png")


def test_the_data_line_says_how_images_are_held_and_a_listing_for_checks_says_nothing(tmp_path, caplog):
    """issue 39 item 4: a run's checks before training listed the folder with decode=stream and printed
    "stream from disk"; then the run decoded the images into memory."""
    import logging

    from neas.data.datasets import scan_split

    _two_classes(tmp_path)
    with caplog.at_level(logging.INFO, logger="neas.data.datasets"):
        assert len(scan_split("imagefolder", "train", 16, tmp_path)) == 6
        assert caplog.messages == []
        load_dataset("imagefolder", "train", 16, tmp_path)
        assert caplog.messages[-1].endswith(
            "train: 6 images decoded into memory at 16 x 16 (0.0 MiB; decode: auto, within --max-memory-gb 8)"
        )
        load_dataset("imagefolder", "train", 16, tmp_path, max_memory_gb=0)
        assert caplog.messages[-1].endswith(
            "train: 6 images stream from disk, decoded per step (more than --max-memory-gb 0 GiB decoded)"
        )


def test_a_count_over_what_its_part_holds_is_clipped_with_a_warning(tmp_path, caplog):
    import logging

    from neas.data import calibration_sets

    _two_classes(tmp_path, n=10)
    full = load_dataset("imagefolder", "train", 16, tmp_path)
    with caplog.at_level(logging.WARNING, logger="neas.data.calibration"):
        sets = calibration_sets(full, 0.2, 8, 360, ("bn_batches x batch_size", "probe_images"))
    assert len(sets.score) == 4 and len(sets.bn) == 8
    assert caplog.messages == [
        "probe_images 360: clipped to the 4 held-out images (holdout 0.2 of 20); every one is used"
    ]
