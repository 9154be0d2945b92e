"""The data a search scores candidates with: R recalibration batches from the supernet's
training part and the held-out part, rebuilt from the supernet's own training config."""

from __future__ import annotations

from neas.data import calibration_sets, load_dataset
from neas.data.datasets import check_same_classes
from neas.supernet.io import SupernetFile

__all__ = ["heldout_batches"]


def heldout_batches(
    info: SupernetFile,
    device,
    bn_batches: int,
    batch_size: int,
    val_images: int | None = None,
    data_dir: str | None = None,
    workers: int = 0,
    decoding: dict | None = None,
):
    """Returns (BN batches of images, held-out (images, labels) batches, the ``calibration`` record).

    Both sets are stratified, seeded subsets (:func:`neas.data.calibration_sets`): the first R
    batches of an image folder would otherwise be one class. ``decoding``: the keyword arguments
    of :func:`neas.data.load_dataset` that say how image folders are held.
    """
    full = load_dataset(info.data, "train", info.space.input_size, data_dir or info.data_dir, False, **(decoding or {}))
    check_same_classes(
        list(info.classes), full.classes, f"the supernet's training data ({data_dir or info.data_dir or info.data})"
    )
    sets = calibration_sets(
        full, info.holdout, bn_batches * batch_size, val_images, ("bn_batches x batch_size", "val_images")
    )
    bn = [x for x, _ in sets.bn_batches(batch_size, device, workers)]
    return bn, sets.score_batches(batch_size, device, workers), sets.record()
