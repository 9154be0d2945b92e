"""The data a search scores candidates with: R recalibration batches from the supernet's
training part and the held-out part, rebuilt from the supernet's own training config."""

from __future__ import annotations

import json

import torch

from neas.data import BatchLoader, holdout_split, load_dataset

__all__ = ["heldout_batches"]


def heldout_batches(meta: dict, space, device, bn_batches: int, batch_size: int, val_images: "int | None" = None,
                    data_dir: "str | None" = None, workers: int = 0):
    """Returns (BN batches of images, held-out (images, labels) batches, number of held-out images)."""
    trained = json.loads(meta["config"])
    full = load_dataset(trained["data"], "train", space.input_size, data_dir or trained.get("data_dir"), False)
    keep, held = holdout_split(full.labels, trained["holdout"])
    train, val = full.subset(keep), full.subset(held if len(held) else keep)
    if val_images is not None:
        val = val.subset(torch.arange(min(val_images, len(val))))
    bn = [x for x, _ in BatchLoader(train, batch_size, False, device=device, workers=workers).take(bn_batches)]
    val_batches = list(BatchLoader(val, batch_size, False, device=device, workers=workers).epoch(0))
    return bn, val_batches, len(val)
