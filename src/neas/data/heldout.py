"""Images beside a split that a trained ensemble is fitted or scored on: the held-out part of the
training split (its temperature, anytime order and cascade are fitted there) and out-of-distribution
images (its OOD scores)."""

from __future__ import annotations

from pathlib import Path

from neas.data.datasets import evaluation_view, load_dataset
from neas.data.split import holdout_split
from neas.errors import NeasError

__all__ = ["evaluated_images", "heldout_images", "load_ood", "split_source"]


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


def split_source(data: str, data_dir, split: str, input_size: int, holdout: float | None = None) -> dict:
    """What an evaluated split is, for :func:`evaluated_images` to load it again elsewhere (the report's
    misclassified images): the dataset, its directory resolved, the split (``holdout``: the held-out part
    of the training split, with its fraction) and the input size."""
    where = None if data_dir is None else str(Path(data_dir).expanduser().resolve())
    return {"data": data, "data_dir": where, "split": split, "holdout": holdout, "input_size": input_size}


def evaluated_images(source: dict):
    """The split :func:`split_source` describes, as it was evaluated (image folders listed, not decoded:
    a few of its images are read)."""
    decoding = {"decode": "list"}
    if source["split"] == "holdout":
        return heldout_images(source["data"], source["data_dir"], source["holdout"], source["input_size"], decoding)
    return load_dataset(source["data"], source["split"], source["input_size"], source["data_dir"], **decoding)
