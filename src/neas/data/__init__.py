"""Data: datasets decoded once into memory, deterministic splits, device-side batches."""

from neas.data.calibration import CalibrationSets, calibration_sets
from neas.data.datasets import DATASETS, ImageFiles, ImageTensors, load_dataset
from neas.data.loader import Augment, BatchLoader, Training, normalize
from neas.data.split import class_counts, holdout_split, stratified_subset

__all__ = [
    "DATASETS",
    "Augment",
    "BatchLoader",
    "CalibrationSets",
    "ImageFiles",
    "ImageTensors",
    "Training",
    "calibration_sets",
    "class_counts",
    "holdout_split",
    "load_dataset",
    "normalize",
    "stratified_subset",
]
