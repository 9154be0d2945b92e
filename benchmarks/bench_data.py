"""Benchmark 4: supernet training fed from ``../shared/data/cifar10/train`` (an ImageFolder
on disk) vs the same images as tensors already in memory."""

from __future__ import annotations

import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks.common import Result, interleaved
from neas import EnsembleArch, SearchSpace, Supernet
from neas.data import Augment, BatchLoader, load_dataset
from neas.data.datasets import ImageTensors

__all__ = ["data_feed", "CIFAR"]

CIFAR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10"


def data_feed(size: dict, device="cpu", steps: int = 8) -> "Result | None":
    if not (CIFAR / "train").is_dir():
        return None
    space = SearchSpace.preset("cifar")
    start = time.perf_counter()
    load_dataset("imagefolder", "train", 32, CIFAR)  # decodes once (or reads the decode cache)
    first_load = time.perf_counter() - start
    start = time.perf_counter()
    disk = load_dataset("imagefolder", "train", 32, CIFAR)
    warm_load = time.perf_counter() - start
    memory = ImageTensors(disk.images.clone(), disk.labels.clone(), disk.classes)  # "already in memory"
    torch.manual_seed(0)
    supernet = Supernet(space, 10).to(device, memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(supernet.parameters(), lr=0.01, momentum=0.9)

    def train(data_fn):
        def run():
            data = data_fn()
            loader = BatchLoader(data, size["batch"], True, Augment(pad=4), seed=0, device=device)
            rng = random.Random(0)
            for i, (x, y) in enumerate(loader.epoch(0)):
                if i == steps:
                    break
                loss = sum(F.cross_entropy(l, y) for l in supernet(x, EnsembleArch.sample(space, rng)))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

        return run

    t = interleaved({"disk": train(lambda: load_dataset("imagefolder", "train", 32, CIFAR)), "memory": train(lambda: memory)},
                    max(3, size["repeats"] // 2), 1, device)
    ratio = t["memory"] / t["disk"]
    step_s = t["memory"] / steps
    epoch_s = step_s * len(disk) // size["batch"]
    return Result("4. data from disk", f"ImageFolder on disk ({steps} steps incl. load)", "tensors in memory",
                  t["disk"], t["memory"], ">= 0.95", ratio, ratio >= 0.95,
                  {"first_load_s": first_load, "warm_load_s": warm_load, "images": len(disk),
                   "epoch_ratio_with_warm_load": epoch_s / (epoch_s + warm_load)})
