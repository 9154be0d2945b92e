"""The dataset options every command that loads data shares (a mixin of their schemas)."""

from __future__ import annotations

from dataclasses import dataclass

from neas.config import option

__all__ = ["DataOptions"]


@dataclass
class DataOptions:
    data: str = option("digits", "digits | cifar10 | cifar100 | imagefolder")
    data_dir: "str | None" = option(None, "dataset root (cifar: a download directory or an ImageFolder copy)")
    download: bool = option(False, "let torchvision download cifar10/cifar100")
