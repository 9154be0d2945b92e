"""Data: datasets decoded once into memory, deterministic splits, device-side batches."""

from neas.data.datasets import DATASETS, ImageFiles, ImageTensors, load_dataset
from neas.data.loader import Augment, BatchLoader, normalize
from neas.data.split import holdout_split

__all__ = ["Augment", "BatchLoader", "DATASETS", "ImageFiles", "ImageTensors", "holdout_split", "load_dataset", "normalize"]
