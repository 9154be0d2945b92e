"""The report's grid of misclassified images with the paths' votes (issue 39 item 2).

``eval.json``'s ``mistakes`` holds the ensemble's most confident wrong predictions on the evaluated
split (:func:`neas.ensemble.assess.mistakes`): each image's index, its file (image folders), its label, the
ensemble's prediction and every path's. Their pixels are read back as the model saw them: from their
files, or from the evaluated split loaded again (``mistakes.source``, :func:`neas.data.heldout.split_source`).
When neither is there any more (the data moved), the page says so instead of showing them.
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from neas.data.datasets import decode_image, image_arrays
from neas.data.heldout import evaluated_images
from neas.errors import NeasError
from neas.report import plots
from neas.runfiles import figure

__all__ = ["mistake_images", "mistakes_section"]


def mistake_images(block: dict, crop_pct: float = 1.0) -> list[np.ndarray]:
    """The images of ``block`` (``eval.json``'s ``mistakes``) as the model saw them (image files at the
    model's ``crop_pct``, eval.json's ``preprocessing``); a :class:`~neas.errors.NeasError` when they cannot
    be read back as they were."""
    entries, source = block["images"], block.get("source") or {}
    if not source.get("input_size"):
        raise NeasError("the evaluation did not record where its images are")
    if all(e.get("file") for e in entries):
        return [decode_image(e["file"], source["input_size"], crop_pct).permute(1, 2, 0).numpy() for e in entries]
    data = evaluated_images(source)
    index = [e["index"] for e in entries]
    if max(index) >= len(data) or [int(data.labels[i]) for i in index] != [e["label"] for e in entries]:
        raise NeasError(f"{source['data']}/{source['split']} no longer holds the images that were evaluated")
    return image_arrays(data, index)


def mistakes_section(out: Path, result: dict) -> str:
    """The grid's figure and caption (a line saying why when the images cannot be shown; empty without mistakes)."""
    block = result.get("mistakes") or {}
    entries = block.get("images") or []
    classes = (result.get("per_class") or {}).get("classes")
    if not entries or not classes:
        return ""
    split = (block.get("source") or {}).get("split", result.get("split", "test"))
    crop = (result.get("preprocessing") or {}).get("crop_pct", 1.0)  # records before it: the whole image
    try:
        if not (isinstance(crop, float | int) and 0 < crop <= 1):
            raise NeasError(f"eval.json's preprocessing crop_pct {crop!r} is not in (0, 1]")
        images = mistake_images(block, float(crop))
    except NeasError as exc:
        return f"<p class='note'>(the misclassified images are not shown: {html.escape(str(exc))})</p>"
    name = figure("mistakes")
    plots.plot_mistakes(images, entries, classes, out / name)
    caption = html.escape(
        f"The ensemble's {len(entries)} most confident mistakes (of {block['of']}) on the {split} split, as the "
        "model sees them: the true class, the ensemble's prediction and confidence, and each path's vote "
        "(✓: the path was right)"
    )
    return f'<figure><img src="{name}" alt="{caption}"><figcaption>{caption}</figcaption></figure>'
