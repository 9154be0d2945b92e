"""Results that do not depend on loader workers, batch size, ranks or the view of the held-out part.

The image folders here are shaped like users' data: class-sorted folders, images larger than the
input and not square (so crops and the evaluation view matter), a grayscale and an RGBA image.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import neas.train.recipe as training
from neas.cli import main
from neas.data import BatchLoader, calibration_sets, load_dataset
from neas.data.datasets import ImageFiles, ImageTensors, decode_image
from neas.data.loader import Augment, Training
from neas.data.preprocess import DEFAULT_CROP_PCT, TRAIN_CROP_PCT
from neas.seeding import stream_seed
from neas.space import EnsembleArch, SearchSpace

from ..helpers import Killed

CLASSES = ("cat", "dog", "frog")


def _write_folder(root, per_class: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    for split, n in (("train", per_class), ("test", 4)):
        for c, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                h, w = 44 + (i % 3) * 4, 40 + (i % 2) * 12
                pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8) // 4 + np.uint8(60 * c)
                image = Image.fromarray(pixels)
                if i == 1:
                    image = image.convert("L")
                elif i == 2:
                    image = image.convert("RGBA")
                image.save(folder / f"{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return _write_folder(tmp_path_factory.mktemp("folder") / "data", per_class=16)


@pytest.fixture(scope="module")
def arch_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("arch") / "arch.json"
    space = SearchSpace.preset("tiny")
    EnsembleArch.sample(space, 3, split=2).save(path, space=space.to_dict())
    return path


def _streamed(folder, workers: int, out) -> list[str]:
    """The flags both streamed runs share: an image folder read from disk by ``workers`` loader processes."""
    fixed = ["--data", "imagefolder", "--decode", "stream", "--epochs", "2", "--batch-size", "8", "--device", "cpu"]
    return [*fixed, "--data-dir", str(folder), "--workers", str(workers), "--out", str(out)]


def _retrain(folder, arch_file, out, workers: int, *extra: str) -> int:
    augment = ["--seed", "3", "--randaugment", "rand-m9-mstd0.5", "--erase-prob", "0.5", "--holdout", "0.2"]
    return main(["retrain", "--arch", str(arch_file), *_streamed(folder, workers, out), *augment, *extra])


def _same_tensors(a, b) -> bool:
    x, y = load_file(str(a)), load_file(str(b))
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def test_a_streamed_retrain_is_the_same_with_0_and_2_loader_workers(folder, arch_file, tmp_path):
    assert _retrain(folder, arch_file, tmp_path / "w0", 0) == 0
    assert _retrain(folder, arch_file, tmp_path / "w2", 2) == 0
    assert _same_tensors(tmp_path / "w0" / "model.safetensors", tmp_path / "w2" / "model.safetensors")


def test_a_streamed_retrain_killed_and_resumed_equals_an_uninterrupted_one(folder, arch_file, tmp_path, kill_after):
    assert _retrain(folder, arch_file, tmp_path / "whole", 2) == 0
    restore = kill_after(training, "save_checkpoint", after=1)
    with pytest.raises(Killed):
        _retrain(folder, arch_file, tmp_path / "killed", 0)
    restore()
    assert _retrain(folder, arch_file, tmp_path / "killed", 0, "--resume") == 0
    assert _same_tensors(tmp_path / "whole" / "model.safetensors", tmp_path / "killed" / "model.safetensors")


def test_streamed_supernet_training_is_the_same_with_0_and_2_loader_workers(folder, tmp_path):
    def train(out, workers):
        shrink = ["--space", "tiny", "--seed", "1", "--shrink", "none", "--bn-batches", "1", "--probe-images", "6"]
        return main(["train-supernet", *_streamed(folder, workers, out), *shrink])

    assert train(tmp_path / "w0", 0) == 0
    assert train(tmp_path / "w2", 2) == 0
    assert _same_tensors(tmp_path / "w0" / "supernet.safetensors", tmp_path / "w2" / "supernet.safetensors")


def _epoch_images(data, batch_size: int, rank: int = 0, world: int = 1, augment=None) -> dict[int, torch.Tensor]:
    """{dataset position: augmented image} of one training epoch; positions come back through the labels."""
    positions = ImageTensors(data.images, torch.arange(len(data)), data.classes)
    loader = BatchLoader(positions, batch_size, Training(5, augment, rank, world), channels_last=False)
    return {int(i): x for xs, ys in loader.epoch(3) for x, i in zip(xs, ys)}


def test_in_memory_augmentation_is_a_function_of_the_image_not_of_batch_size_or_rank():
    gen = torch.Generator().manual_seed(0)
    data = ImageTensors(
        torch.randint(0, 256, (48, 3, 16, 16), dtype=torch.uint8, generator=gen), torch.zeros(48).long(), ["a"]
    )
    augment = Augment(pad=2, flip=True, randaugment="rand-m9-mstd0.5", erase_prob=0.5)
    one = _epoch_images(data, 8, augment=augment)
    assert one.keys() == set(range(48))
    other = _epoch_images(data, 12, augment=augment)
    assert all(torch.equal(one[i], other[i]) for i in one)
    shards = _epoch_images(data, 4, rank=0, world=2, augment=augment) | _epoch_images(
        data, 4, rank=1, world=2, augment=augment
    )
    assert all(torch.equal(one[i], shards[i]) for i in shards)
    assert len(shards) == 48
    unaugmented = _epoch_images(data, 8)
    assert sum(not torch.equal(one[i], unaugmented[i]) for i in one) > 40  # the draws do something


@pytest.mark.slow
def test_no_two_seed_epoch_rank_triples_share_a_stream():
    epochs, ranks = np.arange(1001), np.arange(1025)
    seeds = [stream_seed(s, "epoch", e, r) for s in (0, 1, 2) for e in epochs.tolist() for r in ranks.tolist()]
    assert len(np.unique(np.array(seeds, dtype=np.int64))) == len(seeds) == 3 * 1001 * 1025
    # and the old sums' collisions in particular: rank 16 vs the next epoch, seed 0 at epoch 125 vs seed 2 at epoch 0
    assert stream_seed(0, "epoch", 0, 16) != stream_seed(0, "epoch", 1, 0)
    assert stream_seed(0, "epoch", 125, 0) != stream_seed(2, "epoch", 0, 0)


def test_streams_of_different_purposes_or_key_counts_differ():
    assert (
        len(
            {
                stream_seed(0, "shuffle", 1),
                stream_seed(0, "augment", 1),
                stream_seed(0, "augment", 1, 0),
                stream_seed(0, "augment", 10),
                stream_seed(1, "augment", 0, 1),
            }
        )
        == 5
    )


@pytest.mark.parametrize("decode", ["memory", "stream"])
def test_the_held_out_part_is_seen_exactly_as_the_test_split(folder, tmp_path, decode):
    import shutil

    full = load_dataset("imagefolder", "train", 32, folder, decode=decode)
    assert isinstance(full, ImageTensors if decode == "memory" else ImageFiles)
    sets = calibration_sets(full, 0.25, bn_images=6)
    held_images = torch.cat([x for x, _ in BatchLoader(sets.score, 64, False, channels_last=False).epoch(0)])
    files = sets.score.files if decode == "memory" else sets.score.paths
    # the held-out files, copied into the test split of another folder, come out of it identically
    other = tmp_path / "other"
    for i, f in enumerate(files):
        target = other / "test" / CLASSES[int(sets.score.labels[i])] / f"{i:03d}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, target)
    test = load_dataset("imagefolder", "test", 32, other, decode=decode)
    test_images = torch.cat([x for x, _ in BatchLoader(test, 64, False, channels_last=False).epoch(0)])
    test_files = test.files if decode == "memory" else test.paths
    order = [int(f.rsplit("/", 1)[1][:3]) for f in test_files]  # the test split lists the copies class by class
    assert sorted(order) == list(range(len(files)))
    assert torch.equal(held_images[order], test_images)
    # and the view matters for these images: the whole short side (the training view, and the evaluation
    # view of images held in memory) is not timm's 0.875 crop (the evaluation view of streamed ones)
    as_train = torch.stack([decode_image(f, 32, TRAIN_CROP_PCT) for f in files])
    as_test = torch.stack([decode_image(f, 32, DEFAULT_CROP_PCT) for f in files])
    assert not torch.equal(as_train, as_test)


def test_decode_is_a_choice_with_one_clear_error(folder, tmp_path, capsys):
    assert (
        main(
            [
                "train-supernet",
                "--data",
                "imagefolder",
                "--data-dir",
                str(folder),
                "--decode",
                "disk",
                "--out",
                str(tmp_path / "x"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert err.startswith("neas: error: decode: unknown 'disk'") and "auto, memory, stream" in err
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "x").exists()
    memory = load_dataset("imagefolder", "train", 32, folder, decode="auto", max_memory_gb=1e-6)
    assert isinstance(memory, ImageFiles)  # auto streams what does not fit in the limit
