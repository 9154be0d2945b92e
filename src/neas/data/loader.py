"""Batches for training and evaluation, the same on every rank up to its shard.

In-memory data (:class:`ImageTensors`) is augmented per batch on the device (random crop
with padding, optional horizontal flip) and normalised there, so a step costs one index and
one copy. Streamed data (:class:`ImageFiles`) goes through a torch ``DataLoader`` with timm's
transforms: for training, RandomResizedCrop, flip and the same RandAugment policy; random
erasing is applied on the device to both (it works on normalised pixels).

Every random draw of an image is a function of (run seed, epoch, image index) only
(:mod:`neas.seeding`): the crop offsets and flips of in-memory images come from a per-epoch table
indexed by image, and every per-image transform (RandAugment, timm's streamed transforms,
erasing) runs under its own seed. So a batch does not depend on the number of loader workers,
on the batch size or on which rank an image lands on, and shuffling depends only on (seed,
epoch): a resumed run sees the same batches as an uninterrupted one.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from timm.data import create_transform
from timm.data.auto_augment import rand_augment_transform

from neas.data.corruptions import CorruptedImages
from neas.data.datasets import ImageFiles, ImageTensors, decode_image, open_rgb
from neas.data.preprocess import MEAN, STD
from neas.errors import NeasError
from neas.seeding import per_image_rng, seeded_globals, stream_seed

__all__ = ["MEAN", "STD", "Augment", "BatchLoader", "Training", "normalize"]


@dataclass(frozen=True)
class Augment:
    """Training augmentation for in-memory images."""

    pad: int = 4  # random-crop padding in pixels (0: none)
    flip: bool = True  # random horizontal flips (off for digits: a mirrored digit is another glyph)
    randaugment: str | None = None  # timm RandAugment policy, e.g. 'rand-m9-mstd0.5'
    erase_prob: float = 0.0  # timm random erasing probability (per image, on normalised pixels)


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float normalised with the ImageNet mean and std."""
    mean = torch.tensor(MEAN, device=images.device).view(1, 3, 1, 1) * 255
    std = torch.tensor(STD, device=images.device).view(1, 3, 1, 1) * 255
    return (images.to(torch.get_default_dtype()) - mean) / std


def _randaugment(images: torch.Tensor, policy: str, seeds: list[int]) -> torch.Tensor:
    """timm's RandAugment, image by image (PIL), image ``j`` under seed ``seeds[j]`` (it draws
    from Python's and NumPy's global generators)."""

    transform = _randaugment_cache.get(policy)
    if transform is None:
        transform = _randaugment_cache[policy] = rand_augment_transform(
            policy, {"img_mean": tuple(round(255 * m) for m in MEAN)}
        )
    out = images.cpu().permute(0, 2, 3, 1).numpy()
    done = []
    for img, seed in zip(out, seeds):
        with seeded_globals(seed):
            done.append(np.asarray(transform(Image.fromarray(img)), dtype=np.uint8))
    return torch.from_numpy(np.stack(done)).permute(0, 3, 1, 2).to(images.device)


_randaugment_cache: dict = {}


@dataclass(frozen=True)
class _EpochDraws:
    """An epoch's crop offsets (N, 2) and flips (N,) of in-memory images, row ``i`` for image ``i``."""

    offsets: np.ndarray
    flip: np.ndarray

    @classmethod
    def draw(cls, n: int, pad: int, seed: int, epoch: int) -> _EpochDraws:
        rng = per_image_rng(seed, "augment-table", epoch)
        return cls(rng.integers(0, 2 * pad + 1, (n, 2)), rng.random(n) < 0.5)


def _augment(
    images: torch.Tensor, index: np.ndarray, aug: Augment, draws: _EpochDraws, seed: int, epoch: int
) -> torch.Tensor:
    """Augments the images ``index`` (CPU, dataset positions): every draw is the image's own."""
    if aug.randaugment:
        images = _randaugment(images, aug.randaugment, [stream_seed(seed, "augment", epoch, i) for i in index.tolist()])
    b, _, h, w = images.shape
    if aug.pad:
        padded = F.pad(images, (aug.pad,) * 4, mode="reflect")
        offsets = draws.offsets[index].tolist()
        images = torch.stack([padded[i, :, dy : dy + h, dx : dx + w] for i, (dy, dx) in enumerate(offsets)])
    if aug.flip:
        flip = torch.from_numpy(draws.flip[index])
        images = torch.where(flip.to(images.device).view(b, 1, 1, 1), images.flip(3), images)
    return images


def _random_erase(x: torch.Tensor, index: np.ndarray, prob: float, seed: int, epoch: int) -> torch.Tensor:
    """timm's ``RandomErasing(prob, mode="pixel")`` (one box of 2 %-1/3 of the image, log-uniform
    aspect ratio 0.3-3.3, up to 10 tries, normal noise), drawn per image from (seed, epoch, index).

    Written out because timm's draws from the global generators of the host and the device,
    which a per-image seed could only reach through a host sync per image on CUDA.
    """
    _, c, h, w = x.shape
    for row, i in enumerate(index.tolist()):
        rng = np.random.default_rng(stream_seed(seed, "erase", epoch, i))
        if rng.random() >= prob:
            continue
        for _ in range(10):
            area = rng.uniform(0.02, 1 / 3) * h * w
            aspect = math.exp(rng.uniform(math.log(0.3), math.log(1 / 0.3)))
            eh, ew = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
            if eh < h and ew < w:
                top, left = int(rng.integers(0, h - eh + 1)), int(rng.integers(0, w - ew + 1))
                gen = torch.Generator(device=x.device).manual_seed(int(rng.integers(2**63)))
                x[row, :, top : top + eh, left : left + ew] = torch.randn(
                    (c, eh, ew), generator=gen, device=x.device, dtype=x.dtype
                )
                break
    return x


class _FileDataset(torch.utils.data.Dataset):
    """Images decoded per item: timm's training transform with ``augment``, else the evaluation view."""

    def __init__(self, data: ImageFiles, augment: Augment | None, seed: int = 0, epoch: int = 0):
        self.data, self.seed, self.epoch = data, seed, epoch
        self.transform = None
        if augment is not None:
            self.transform = create_transform(
                data.input_size,
                is_training=True,
                hflip=0.5 if augment.flip else 0.0,
                color_jitter=None,
                auto_augment=augment.randaugment or None,
                use_prefetcher=True,  # uint8 out; normalised on the device
            )

    def __len__(self):
        return len(self.data)

    def _image(self, i: int) -> torch.Tensor:
        path = self.data.paths[i]
        if self.transform is None:
            return decode_image(path, self.data.input_size, self.data.crop_pct)
        img = open_rgb(path)
        with seeded_globals(stream_seed(self.seed, "augment", self.epoch, i)):
            return self.transform(img)

    def __getitem__(self, i):
        """(image, label, i, error): an unreadable file gives a blank image and its one-line error,
        which :meth:`BatchLoader.epoch` raises; raised in a worker, the DataLoader would re-raise it
        wrapped in the worker's traceback."""
        try:
            return self._image(i), self.data.labels[i], i, ""
        except NeasError as exc:
            size = self.data.input_size
            return torch.zeros(3, size, size, dtype=torch.uint8), self.data.labels[i], i, str(exc)


@dataclass(frozen=True)
class Training:
    """What makes a :class:`BatchLoader` a training one: each epoch is shuffled under ``seed``,
    augmented (``augment``: in-memory images; streamed ones take timm's training transform) and
    its last incomplete batch dropped; rank ``rank`` of ``world`` takes its equal share."""

    seed: int = 0
    augment: Augment | None = None
    rank: int = 0
    world: int = 1


class BatchLoader:
    """Iterates over one rank's batches of an epoch: ``for x, y in loader.epoch(e)``.

    Args:
        data: in-memory or streamed images.
        batch_size: images per batch on this rank.
        train: a :class:`Training` (``True``: its defaults), or ``False``/None for evaluation (every
            image once, in order).
        device: where batches go; ``channels_last`` sets their memory format.
        workers: loader processes for streamed or corrupted images.
        corruption: a :class:`neas.data.corruptions.Corruption` applied to every image (evaluation only).
    """

    def __init__(
        self,
        data: ImageTensors | ImageFiles,
        batch_size: int,
        train: Training | bool | None = None,
        device: torch.device | str = "cpu",
        channels_last: bool = True,
        workers: int = 0,
        corruption=None,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        training = Training() if train is True else (train or None)
        self.data, self.batch_size, self.train = data, batch_size, training is not None
        training = training or Training()
        self.augment = training.augment if self.train else None
        self.seed, self.rank, self.world = training.seed, training.rank, training.world
        self.device = torch.device(device)
        self.channels_last, self.workers = channels_last, workers
        if corruption is not None and self.train:
            raise ValueError("corruptions are for evaluation, not training")
        self.corruption = corruption
        if isinstance(data, ImageTensors):
            data.images = data.images.to(self.device)  # decoded once, kept on the device
            data.labels = data.labels.to(self.device)

    def _indices(self, epoch: int) -> torch.Tensor:
        n = len(self.data)
        if self.train:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(stream_seed(self.seed, "shuffle", epoch)))
        else:
            order = torch.arange(n)
        per_rank = n // self.world if self.train else -(-n // self.world)
        shard = order[self.rank :: self.world][:per_rank]
        if self.train:
            shard = shard[: len(shard) // self.batch_size * self.batch_size]
        return shard

    def __len__(self) -> int:
        return -(-len(self._indices(0)) // self.batch_size)

    def _finish(self, images: torch.Tensor, labels: torch.Tensor, index: torch.Tensor | None = None, epoch: int = 0):
        x = normalize(images.to(self.device, non_blocking=True))
        if self.augment is not None and self.augment.erase_prob > 0:
            x = _random_erase(x, index.cpu().numpy(), self.augment.erase_prob, self.seed, epoch)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, labels.to(self.device, non_blocking=True)

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        index = self._indices(epoch)
        if isinstance(self.data, ImageTensors) and self.corruption is None:
            draws = (
                _EpochDraws.draw(len(self.data), self.augment.pad, self.seed, epoch)
                if self.augment is not None
                else None
            )
            for start in range(0, len(index), self.batch_size):
                cpu = index[start : start + self.batch_size]
                batch = cpu.to(self.device)
                images = self.data.images[batch]
                if self.augment is not None:
                    images = _augment(images, cpu.numpy(), self.augment, draws, self.seed, epoch)
                yield self._finish(images, self.data.labels[batch], cpu, epoch)
            return
        if self.corruption is not None:
            items = CorruptedImages(self.data, self.corruption)
        else:
            items = _FileDataset(self.data, self.augment, self.seed, epoch)
        loader = torch.utils.data.DataLoader(
            torch.utils.data.Subset(items, index.tolist()),
            batch_size=self.batch_size,
            num_workers=self.workers,
            pin_memory=self.device.type == "cuda",
            drop_last=self.train,
        )
        for images, labels, *more in loader:  # files give their dataset positions and errors, corrupted copies none
            if more and any(more[1]):
                raise NeasError(next(e for e in more[1] if e))
            yield self._finish(images, labels, more[0] if more else None, epoch)
