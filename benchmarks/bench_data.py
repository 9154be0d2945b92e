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
from neas.data import Augment, BatchLoader, Training, load_dataset
from neas.data.datasets import ImageTensors

__all__ = ["CIFAR", "data_feed"]

CIFAR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10"


def data_feed(size: dict, device="cpu", steps: int = 8) -> Result | None:
    """Images/s of supernet training over one epoch: data decoded from disk once (then cached)
    vs the same tensors already in memory; the streamed (decode every epoch) path for reference."""
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
    streamed = load_dataset("imagefolder", "train", 32, CIFAR, max_memory_gb=0)  # decode every epoch
    torch.manual_seed(0)
    supernet = Supernet(space, 10).to(device, memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(supernet.parameters(), lr=0.01, momentum=0.9)

    def train(data, workers=0):
        def run():
            loader = BatchLoader(data, size["batch"], Training(0, Augment(pad=4)), device=device, workers=workers)
            rng = random.Random(0)
            for i, (x, y) in enumerate(loader.epoch(0)):
                if i == steps:
                    break
                loss = sum(F.cross_entropy(lg, y) for lg in supernet(x, EnsembleArch.sample(space, rng)))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

        return run

    t = interleaved({"disk": train(disk), "memory": train(memory)}, size["repeats"], 1, device)
    # streamed apart: its worker processes must not overlap the two measured sides
    t.update(interleaved({"streamed": train(streamed, workers=2)}, 2, 1, device))
    epoch_steps = len(disk) // size["batch"]
    epoch_memory = t["memory"] / steps * epoch_steps
    epoch_disk = t["disk"] / steps * epoch_steps + warm_load  # the load happens once per run
    ratio = epoch_memory / epoch_disk
    return Result(
        "4. data from disk",
        "ImageFolder decoded once + cached",
        "tensors in memory",
        epoch_disk,
        epoch_memory,
        ">= 0.95",
        ratio,
        ratio >= 0.95,
        {
            "unit": "seconds per epoch",
            "first_load_s": first_load,
            "warm_load_s": warm_load,
            "images": len(disk),
            "step_disk_ms": 1e3 * t["disk"] / steps,
            "step_memory_ms": 1e3 * t["memory"] / steps,
            "streamed_ratio": t["memory"] / t["streamed"],
        },
    )
