"""Images beside a split that a trained ensemble is fitted or scored on: the held-out part of the
training split (its temperature, anytime order and cascade are fitted there) and out-of-distribution
images (its OOD scores)."""

from __future__ import annotations

from neas.data.datasets import evaluation_view, load_dataset
from neas.data.split import holdout_split
from neas.errors import NeasError

__all__ = ["heldout_images", "load_ood"]


def heldout_images(
    data: str, data_dir, holdout: float, input_size: int, decoding: dict | None = None, crop_pct: float | None = None
):
    """The held-out part of the training split a retraining with ``--holdout`` left out, seen as the test split
    is: at the model's evaluation crop ``crop_pct`` (``Preprocessing.crop_pct``; None: the rule for this data)."""
    train = load_dataset(data, "train", input_size, data_dir, **(decoding or {}))
    _, held = holdout_split(train.labels, holdout)
    return evaluation_view(train, held, crop_pct)


def load_ood(
    data: str | None,
    split: str,
    input_size: int,
    data_dir=None,
    download: bool = False,
    decoding=None,
    crop_pct: float | None = None,
):
    """The out-of-distribution images ``data``/``split`` (None without ``data``), seen with the model's own
    transform (``crop_pct``: its ``Preprocessing.crop_pct``): resized to its input size and normalised as the
    evaluated split is, whatever their own size and mode. Errors name ``ood_data``."""
    if data is None:
        return None
    try:
        ood = load_dataset(data, split, input_size, data_dir, download, crop_pct=crop_pct, **(decoding or {}))
    except NeasError as exc:
        raise NeasError(f"ood_data: {exc}") from None
    if len(ood) == 0:
        raise NeasError(f"ood_data: {data!r}/{split} has no images")
    return ood
