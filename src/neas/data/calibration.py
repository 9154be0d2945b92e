"""The sets a run calibrates and scores candidates on (docs/DESIGN.md §8), and their record.

One owner for all of them — shrinking's BN batches and probe images, a search's BN batches
and held-out images (``--val-images``), ``neas rank``'s one-shot scoring: the training split is
cut into a training part and a held-out part (:func:`holdout_split`), the BN images are a
stratified subset of the training part, the scoring images one of the held-out part
(:func:`stratified_subset`). Runs write :meth:`CalibrationSets.record` beside their results so
a reader sees at a glance that the sets cover every class.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from neas.data.datasets import ImageFiles, ImageTensors, evaluation_view
from neas.data.loader import BatchLoader
from neas.data.split import class_counts, holdout_split, stratified_subset
from neas.errors import NeasError

__all__ = ["CalibrationSets", "calibration_sets", "check_same_calibration"]

log = logging.getLogger(__name__)

Dataset = ImageTensors | ImageFiles


@dataclass
class CalibrationSets:
    """The training part of a split, and the BN and scoring sets drawn from it."""

    train: Dataset  # the training part: the split without its held-out images
    bn: Dataset  # BN recalibration images, from the training part
    score: Dataset  # scoring images, from the held-out part, seen as an evaluation split is

    def bn_batches(self, batch_size: int, device, workers: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return list(BatchLoader(self.bn, batch_size, False, device=device, workers=workers).epoch(0))

    def score_batches(self, batch_size: int, device, workers: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return list(BatchLoader(self.score, batch_size, False, device=device, workers=workers).epoch(0))

    def record(self) -> dict:
        """The ``calibration`` block of shrink rounds, ``arch.json`` and ``rank.json``."""
        return {
            "bn_images": len(self.bn),
            "bn_classes": class_counts(self.bn.labels, self.bn.classes),
            "score_images": len(self.score),
            "score_classes": class_counts(self.score.labels, self.score.classes),
        }


def calibration_sets(
    full: Dataset,
    holdout: float,
    bn_images: int,
    score_images: int | None = None,
    names: tuple[str, str] = ("BN images", "scoring images"),
) -> CalibrationSets:
    """Splits ``full`` (a training split) and draws ``bn_images`` BN and ``score_images`` scoring
    images (all held-out images when None), each stratified, seeded and in interleaved class order.
    A count over what its part holds is clipped to it, with a warning that uses ``names`` (the
    settings that asked for each)."""
    labels = full.labels.cpu()
    keep, held = holdout_split(labels, holdout)
    if not len(held):
        raise NeasError(
            f"holdout {holdout} holds out no image: candidates would be scored on their own training images"
        )
    parts = ((names[0], bn_images, len(keep), "images of the training part"), (names[1], score_images, len(held), ""))
    for name, asked, there, part in parts:
        if asked is not None and asked > there:
            part = part or f"held-out images (holdout {holdout:g} of {len(labels)})"
            log.warning("%s %d: clipped to the %d %s; every one is used", name, asked, there, part)
    bn = keep[stratified_subset(labels[keep], bn_images, "bn")]
    score = held[stratified_subset(labels[held], score_images, "score")]
    return CalibrationSets(full.subset(keep), full.subset(bn), evaluation_view(full, score))


def check_same_calibration(run, state: dict, calibration: dict) -> None:
    """Refuses to resume a run whose ``state`` recorded other calibration/scoring sets than
    ``calibration`` (e.g. one started before the sets were stratified): it would mix two measurements."""
    if state.get("calibration") != calibration:
        raise NeasError(
            f"--resume: {run} calibrated or scored on other BN/held-out sets than this version draws "
            f"(recorded: {state.get('calibration', 'none: started before the sets were stratified')}); start it anew"
        )
