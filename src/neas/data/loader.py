"""Batches for training and evaluation, the same on every rank up to its shard.

In-memory data (:class:`ImageTensors`) is augmented per batch on the device (random crop
with padding, optional horizontal flip) and normalised there, so a step costs one index and
one copy. Streamed data (:class:`ImageFiles`) goes through a torch ``DataLoader`` with timm's
transforms: for training, RandomResizedCrop, flip and the same RandAugment policy; random
erasing is applied on the device to both (it works on normalised pixels). Shuffling depends only on (seed, epoch): a resumed run sees the same
batches as an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F

from neas.data.datasets import ImageFiles, ImageTensors, decode_image
from neas.errors import NeasError

__all__ = ["Augment", "BatchLoader", "normalize", "MEAN", "STD"]

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Augment:
    """Training augmentation for in-memory images."""

    pad: int = 4  # random-crop padding in pixels (0: none)
    flip: bool = True  # random horizontal flips (off for digits: a mirrored digit is another glyph)
    randaugment: "str | None" = None  # timm RandAugment policy, e.g. 'rand-m9-mstd0.5'
    erase_prob: float = 0.0  # timm random erasing probability (per image, on normalised pixels)


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float normalised with the ImageNet mean and std."""
    mean = torch.tensor(MEAN, device=images.device).view(1, 3, 1, 1) * 255
    std = torch.tensor(STD, device=images.device).view(1, 3, 1, 1) * 255
    return (images.float() - mean) / std


def _randaugment(images: torch.Tensor, policy: str) -> torch.Tensor:
    """timm's RandAugment, image by image (PIL); draws from Python's ``random``."""
    import numpy as np
    from PIL import Image
    from timm.data.auto_augment import rand_augment_transform

    transform = _randaugment_cache.get(policy)
    if transform is None:
        transform = _randaugment_cache[policy] = rand_augment_transform(policy, {"img_mean": tuple(round(255 * m) for m in MEAN)})
    out = images.cpu().permute(0, 2, 3, 1).numpy()
    done = [np.asarray(transform(Image.fromarray(img)), dtype=np.uint8) for img in out]
    return torch.from_numpy(np.stack(done)).permute(0, 3, 1, 2).to(images.device)


_randaugment_cache: dict = {}


def _augment(images: torch.Tensor, aug: Augment, gen: torch.Generator) -> torch.Tensor:
    if aug.randaugment:
        images = _randaugment(images, aug.randaugment)
    b, _, h, w = images.shape
    if aug.pad:
        padded = F.pad(images, (aug.pad,) * 4, mode="reflect")
        offsets = torch.randint(0, 2 * aug.pad + 1, (b, 2), generator=gen).tolist()
        images = torch.stack([padded[i, :, dy : dy + h, dx : dx + w] for i, (dy, dx) in enumerate(offsets)])
    if aug.flip:
        flip = torch.rand(b, generator=gen) < 0.5
        images = torch.where(flip.to(images.device).view(b, 1, 1, 1), images.flip(3), images)
    return images


class _FileDataset(torch.utils.data.Dataset):
    """Images decoded per item: timm's training transform with ``augment``, else the evaluation view."""

    def __init__(self, data: ImageFiles, augment: "Augment | None"):
        self.data = data
        self.transform = None
        if augment is not None:
            from timm.data import create_transform

            self.transform = create_transform(
                data.input_size, is_training=True, hflip=0.5 if augment.flip else 0.0, color_jitter=None,
                auto_augment=augment.randaugment or None, use_prefetcher=True,  # uint8 out; normalised on the device
            )

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        from PIL import Image

        path = self.data.paths[i]
        if self.transform is None:
            return decode_image(path, self.data.input_size, self.data.crop_pct), self.data.labels[i]
        try:
            with Image.open(path) as img:
                image = self.transform(img.convert("RGB"))
        except OSError as exc:
            raise NeasError(f"cannot read image {path}: {exc}") from None
        return image, self.data.labels[i]


class BatchLoader:
    """Iterates over one rank's batches of an epoch: ``for x, y in loader.epoch(e)``.

    Args:
        data: in-memory or streamed images.
        batch_size: images per batch on this rank.
        train: shuffle (per epoch), augment and drop the last incomplete batch.
        augment: the in-memory augmentation when ``train``.
        seed: shuffling and augmentation seed.
        rank, world: this process's shard of every epoch (equal sizes on all ranks).
        device: where batches go; ``channels_last`` sets their memory format.
        workers: loader processes for streamed or corrupted images.
        corruption: a :class:`neas.data.corruptions.Corruption` applied to every image (evaluation only).
    """

    def __init__(
        self,
        data: "ImageTensors | ImageFiles",
        batch_size: int,
        train: bool,
        augment: "Augment | None" = None,
        seed: int = 0,
        rank: int = 0,
        world: int = 1,
        device: "torch.device | str" = "cpu",
        channels_last: bool = True,
        workers: int = 0,
        corruption=None,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.data, self.batch_size, self.train = data, batch_size, train
        self.augment = augment if train else None
        self.seed, self.rank, self.world = seed, rank, world
        self.device = torch.device(device)
        self.channels_last, self.workers = channels_last, workers
        if corruption is not None and train:
            raise ValueError("corruptions are for evaluation, not training")
        self.corruption = corruption
        if isinstance(data, ImageTensors):
            data.images = data.images.to(self.device)  # decoded once, kept on the device
            data.labels = data.labels.to(self.device)

    def _indices(self, epoch: int) -> torch.Tensor:
        n = len(self.data)
        if self.train:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed * 100_003 + epoch))
        else:
            order = torch.arange(n)
        per_rank = n // self.world if self.train else -(-n // self.world)
        shard = order[self.rank :: self.world][:per_rank]
        if self.train:
            shard = shard[: len(shard) // self.batch_size * self.batch_size]
        return shard

    def __len__(self) -> int:
        return -(-len(self._indices(0)) // self.batch_size)

    def _finish(self, images: torch.Tensor, labels: torch.Tensor):
        x = normalize(images.to(self.device, non_blocking=True))
        if self.augment is not None and self.augment.erase_prob > 0:
            from timm.data.random_erasing import RandomErasing

            x = RandomErasing(self.augment.erase_prob, mode="pixel", device=str(x.device))(x)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, labels.to(self.device, non_blocking=True)

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        index = self._indices(epoch)
        if isinstance(self.data, ImageTensors) and self.corruption is None:
            gen = torch.Generator().manual_seed((self.seed * 100_003 + epoch) * 64 + self.rank)
            for start in range(0, len(index), self.batch_size):
                batch = index[start : start + self.batch_size].to(self.device)
                images = self.data.images[batch]
                if self.augment is not None:
                    images = _augment(images, self.augment, gen)
                yield self._finish(images, self.data.labels[batch])
            return
        if self.corruption is not None:
            from neas.data.corruptions import CorruptedImages

            items = CorruptedImages(self.data, self.corruption)
        else:
            items = _FileDataset(self.data, self.augment)
        loader = torch.utils.data.DataLoader(
            torch.utils.data.Subset(items, index.tolist()),
            batch_size=self.batch_size,
            num_workers=self.workers,
            pin_memory=self.device.type == "cuda",
            drop_last=self.train,
        )
        for images, labels in loader:
            yield self._finish(images, labels)
