"""The sets runs calibrate BNs and score candidates on: stratified, seeded, never a prefix of a
class-sorted split (an ImageFolder lists its files class by class)."""

import numpy as np
import pytest
import torch

from neas.data import ImageTensors
from neas.data.loader import MEAN, STD, Training
from neas.search.data import heldout_batches

SIZES = [
    40 + 4 * i for i in range(10)
]  # distinct class sizes, distinct held-out and kept sizes: a class is known by its size


def _within_one(counts: dict, labels_total: dict, n: int):
    total = sum(labels_total.values())
    for c, m in labels_total.items():
        assert abs(counts.get(c, 0) - n * m / total) < 1 + 1e-9, (c, counts, labels_total)


HELD = [round(0.25 * m) for m in SIZES]  # what holdout_split(0.25) takes from each class
KEPT = [m - h for m, h in zip(SIZES, HELD)]


def _balanced(counts, part_sizes):
    """Every class present, each within one image of its share of the part it is drawn from."""
    counts = list(counts.values()) if isinstance(counts, dict) else list(counts)
    n, total = sum(counts), sum(part_sizes)
    assert len(counts) == len(part_sizes), counts
    assert min(counts) > 0, counts
    for got, m in zip(counts, part_sizes):
        assert abs(got - n * m / total) < 1 + 1e-9, (counts, part_sizes)


def test_stratified_subset_of_class_sorted_labels():
    from neas.data import stratified_subset

    labels = torch.arange(10).repeat_interleave(torch.tensor(SIZES))  # class-sorted, like an ImageFolder
    total = {c: m for c, m in enumerate(SIZES)}
    for n in (10, 37, 64, 100, len(labels)):
        index = stratified_subset(labels, n, "bn")
        assert len(index) == n
        assert len(set(index.tolist())) == n
        _within_one(dict(zip(*np.unique(labels[index].numpy(), return_counts=True))), total, n)
    index = stratified_subset(labels, 64, "bn")
    assert torch.equal(index, stratified_subset(labels, 64, "bn"))  # a fixed seed: the same on every rank and run
    assert not torch.equal(index, stratified_subset(labels, 64, "score"))  # each purpose draws its own images
    for batch in index.split(16):  # interleaved: batches cut in order are mixed too
        assert len(torch.unique(labels[batch])) >= 8


def test_calibration_sets_of_a_class_sorted_tensor_dataset():
    from neas.data import calibration_sets

    labels = torch.arange(10).repeat_interleave(torch.tensor(SIZES))
    images = torch.zeros(len(labels), 3, 4, 4, dtype=torch.uint8)
    images[:, 0, 0, 0], images[:, 0, 0, 1] = (
        torch.arange(len(labels)) % 256,
        torch.arange(len(labels)) // 256,
    )  # its index
    data = ImageTensors(images, labels, [f"c{i}" for i in range(10)])
    sets = calibration_sets(data, 0.25, 40, 30)
    record = sets.record()
    assert record["bn_images"] == 40
    assert record["score_images"] == 30
    _balanced(record["bn_classes"], KEPT)
    _balanced(record["score_classes"], HELD)
    assert sum(record["bn_classes"].values()) == 40
    # the BN images come from the training part, the scoring images from the held-out part
    index = lambda part: set((part.images[:, 0, 0, 0].long() + 256 * part.images[:, 0, 0, 1].long()).tolist())
    assert index(sets.bn) <= index(sets.train)
    assert not index(sets.score) & index(sets.train)
    assert len(index(sets.train)) + round(0.25 * len(labels)) == len(labels)


def _folder(root, names):
    """A class-by-class ImageFolder: class i has SIZES[i] 32x32 images whose red channel codes i."""
    from PIL import Image

    for i, name in enumerate(names):
        (root / "train" / name).mkdir(parents=True)
        for j in range(SIZES[i]):
            Image.new("RGB", (32, 32), (20 * i + 5, j % 7, 100)).save(root / "train" / name / f"img{j:03d}.png")
    return root


def _classes_of(images: torch.Tensor) -> list[int]:
    """The class coded in a normalised batch's red channel."""
    red = images[:, 0].float().mean((1, 2)) * STD[0] * 255 + MEAN[0] * 255
    return [int(round((float(r) - 5) / 20)) for r in red]


def _scored_sets(root, **kw):
    from neas.space import SearchSpace, ShrunkSpace
    from neas.supernet.io import SupernetFile

    space = SearchSpace.preset("tiny")
    info = SupernetFile(
        space,
        ShrunkSpace.full(space),
        tuple(f"class{i}" for i in range(10)),
        "imagefolder",
        str(root),
        0.25,
        "diversity",
        0,
        {},
    )
    return heldout_batches(info, "cpu", bn_batches=2, batch_size=16, val_images=40, **kw)


def test_search_sets_on_a_class_sorted_image_folder_are_balanced(tmp_path):
    bn, val, record = _scored_sets(_folder(tmp_path, [f"class{i}" for i in range(10)]))
    bn_classes = [_classes_of(x) for x in bn]
    for batch in bn_classes:  # every BN batch mixes the classes; a prefix of the folder would be one class
        assert len(set(batch)) >= 8, batch
    _balanced(np.bincount([c for batch in bn_classes for c in batch], minlength=10), KEPT)
    _balanced(torch.bincount(torch.cat([y for _, y in val]), minlength=10).tolist(), HELD)
    assert record["bn_images"] == 32
    assert record["score_images"] == 40
    _balanced(record["bn_classes"], KEPT)
    _balanced(record["score_classes"], HELD)


def test_a_search_refuses_data_whose_classes_differ_from_the_supernets(tmp_path):
    from neas.errors import NeasError
    from neas.space import SearchSpace, ShrunkSpace
    from neas.supernet.io import SupernetFile

    root = _folder(tmp_path, [f"class{i}" for i in range(10)])
    space = SearchSpace.preset("tiny")
    renamed = (*(f"class{i}" for i in range(9)), "dog")  # trained on another folder
    info = SupernetFile(space, ShrunkSpace.full(space), renamed, "imagefolder", str(root), 0.25, "diversity", 0, {})
    with pytest.raises(
        NeasError, match=r"classes do not match the training classes \(missing \['dog'\], unexpected \['class9'\]\)"
    ):
        heldout_batches(info, "cpu", bn_batches=1, batch_size=8)


def test_reversing_the_class_names_changes_no_class_count(tmp_path):
    forward = _scored_sets(_folder(tmp_path / "a", [f"class{i}" for i in range(10)]))
    backward = _scored_sets(_folder(tmp_path / "b", [f"class{9 - i}" for i in range(10)]))  # sorted order reversed

    def by_content(bn, val):
        # the red channel codes the class's content (its size), whatever its name or label
        bn_counts = np.bincount([c for x in bn for c in _classes_of(x)], minlength=10)
        score_counts = np.bincount([c for x, _ in val for c in _classes_of(x)], minlength=10)
        return bn_counts.tolist(), score_counts.tolist()

    assert by_content(*forward[:2]) == by_content(*backward[:2])


def test_streamed_training_applies_randaugment(tmp_path):
    from PIL import Image

    from neas.data import Augment, BatchLoader, load_dataset

    for c in ("a", "b"):
        (tmp_path / "train" / c).mkdir(parents=True)
        for i in range(8):
            Image.new("RGB", (40, 36), (120, 80, 40)).save(tmp_path / "train" / c / f"{i}.png")
    files = load_dataset("imagefolder", "train", 32, tmp_path, max_memory_gb=0)
    torch.manual_seed(0)

    def batch(policy):
        aug = Augment(pad=4, flip=True, randaugment=policy)
        return next(BatchLoader(files, 16, Training(0, aug)).epoch(0))[0]

    # crops and flips of a uniform image leave it uniform; RandAugment changes its pixels
    plain = batch(None)
    assert torch.allclose(plain, plain[:1, :, :1, :1].expand_as(plain), atol=1e-4)
    augmented = batch("rand-m9-mstd0.5")
    assert not torch.allclose(augmented, plain, atol=1e-3)


def test_eval_view_of_large_images_is_timms(tmp_path):
    """Test images of another size get timm's eval transform (bicubic resize, centre crop) at the
    model's crop: 0.875 for a model trained on streamed images, 1.0 for one trained in memory (the
    split's own rule when no crop is given)."""
    from PIL import Image
    from timm.data import create_transform

    from neas.data import load_dataset

    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (tmp_path / "test" / c).mkdir(parents=True)
        Image.fromarray(rng.integers(0, 255, (50, 64, 3), dtype=np.uint8)).save(tmp_path / "test" / c / "x.png")
    source = Image.open(tmp_path / "test" / "a" / "x.png").convert("RGB")
    for crop_pct, given in ((0.875, 0.875), (1.0, 1.0), (1.0, None)):
        image = load_dataset("imagefolder", "test", 32, tmp_path, crop_pct=given).images[0]
        timm = create_transform(32, is_training=False, crop_pct=crop_pct, interpolation="bicubic", use_prefetcher=True)
        assert torch.equal(image, timm(source)), crop_pct
    streamed = load_dataset("imagefolder", "test", 32, tmp_path, decode="stream")
    assert streamed.crop_pct == 0.875
