"""Corrupted copies of an evaluation split: the 15 common corruptions of ImageNet-C / CIFAR-10-C
(Hendrycks & Dietterich, 2019) — noise, blur, weather, digital — at severities 1-5, built
locally from the images, reproducibly.

The corruptions are those of the ``imagecorruptions`` package (maintained fork
``imagecorruptions-imaug``, which runs on NumPy 2 and current scikit-image; docs/DECISIONS.md),
with its ImageNet-C parameters: the numbers are comparable between models evaluated here, not
to the published CIFAR-10-C files. Every image draws from its own seed, a function of
(seed, corruption, severity, image index), so the copies do not depend on batch size, worker
count or evaluation order.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
from PIL import Image

from neas.data.datasets import ImageTensors, decode_image
from neas.errors import NeasError
from neas.options import CORRUPTIONS, parse_corruptions, parse_severities

__all__ = ["CORRUPTIONS", "CorruptedImages", "Corruption", "parse_corruptions", "parse_severities"]

_SEEDED = ("glass_blur", "impulse_noise")  # their own generators (numba's, scikit-image's): seeded explicitly


class Corruption:
    """One corruption at one severity, applied to uint8 (3, H, W) images."""

    def __init__(self, name: str, severity: int, seed: int = 0):
        parse_corruptions([name])
        if severity not in range(1, 6):
            raise NeasError(f"severity must be in 1..5, got {severity}")
        self.name, self.severity, self.seed = name, severity, seed

    def image_seed(self, index: int) -> int:
        key = f"{self.seed}:{self.name}:{self.severity}:{index}".encode()
        return int.from_bytes(hashlib.sha256(key).digest()[:4], "little")

    def __call__(self, image: torch.Tensor, index: int) -> torch.Tensor:
        from imagecorruptions import corrupt

        hwc = image.permute(1, 2, 0).numpy()
        if min(hwc.shape[:2]) < 32:
            raise NeasError(f"corruptions need images of at least 32x32 pixels, got {hwc.shape[1]}x{hwc.shape[0]}")
        seed = self.image_seed(index)
        state = np.random.get_state()
        np.random.seed(seed)  # most corruptions draw from NumPy's global generator; these two take a seed
        try:
            out = corrupt(
                hwc,
                corruption_name=self.name,
                severity=self.severity,
                **({"seed": seed} if self.name in _SEEDED else {}),
            )
        finally:
            np.random.set_state(state)
        out = np.asarray(out)
        if out.shape[:2] != hwc.shape[:2]:  # a few corruptions resize on the way; the model sees its input size
            out = np.asarray(Image.fromarray(np.uint8(np.clip(out, 0, 255))).resize(hwc.shape[1::-1], Image.BILINEAR))
        return torch.from_numpy(np.ascontiguousarray(np.clip(out, 0, 255).astype(np.uint8))).permute(2, 0, 1)


class CorruptedImages(torch.utils.data.Dataset):
    """A corrupted copy of an evaluation dataset, item by item (so a DataLoader's workers share
    the work): in-memory images or files decoded at the evaluation view."""

    def __init__(self, data, corruption: Corruption):

        self.data, self.corruption = data, corruption
        self.images = data.images.cpu() if isinstance(data, ImageTensors) else None
        self.labels = data.labels.cpu()

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):

        image = (
            self.images[i]
            if self.images is not None
            else decode_image(self.data.paths[i], self.data.input_size, self.data.crop_pct)
        )
        return self.corruption(image, i), self.labels[i]
