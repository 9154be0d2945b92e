"""Benchmarks 1 and 2: the supernet training step against its own networks.

1. A supernet step (forward, sum of K losses, backward, SGD) on a sampled ensemble vs the same
   ensemble built as a plain ``build_ensemble`` network with the same weights: target >= 0.95
   of the plain network's images/s.
2. A supernet step with split point s vs its parts timed separately (shared part once + each
   path's private part, forward + backward): target <= 1.05 x the sum.
"""

from __future__ import annotations

import random

import torch
import torch.nn.functional as F

from benchmarks.common import Result, interleaved
from neas import EnsembleArch, SearchSpace, Supernet
from neas.train.loop import autocast

__all__ = ["shared_once", "supernet_vs_plain"]


def _setup(space_name: str, size: dict, device):
    space = SearchSpace.preset(space_name)
    if space_name == "imagenet":
        space = SearchSpace.from_dict({**space.to_dict(), "input_size": size["imagenet_input"]})
        batch = size["imagenet_batch"]
    else:
        batch = size["batch"]
    torch.manual_seed(0)
    supernet = Supernet(space, 100).to(device, memory_format=torch.channels_last)
    x = torch.randn(batch, 3, space.input_size, space.input_size, device=device).contiguous(
        memory_format=torch.channels_last
    )
    y = torch.randint(0, 100, (batch,), device=device)
    return space, supernet, x, y


def _step(forward, params, x, y, device):
    opt = torch.optim.SGD(params, lr=1e-3, momentum=0.9, weight_decay=4e-5)

    def step():
        with autocast(torch.device(device)):
            loss = sum(F.cross_entropy(lg.float(), y) for lg in forward(x))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def supernet_vs_plain(space_name: str, size: dict, device="cpu") -> Result:
    space, supernet, x, y = _setup(space_name, size, device)
    rng = random.Random(0)
    archs = [EnsembleArch.sample(space, rng) for _ in range(3)]
    ours, base = 0.0, 0.0
    for arch in archs:  # a few random ensembles, each timed side by side
        plain = supernet.extract(arch).to(device, memory_format=torch.channels_last).train()
        supernet.train()
        t = interleaved(
            {
                "supernet": _step(lambda x, a=arch: supernet(x, a), supernet.parameters(), x, y, device),
                "plain": _step(plain.path_logits, plain.parameters(), x, y, device),
            },
            size["repeats"],
            size["warmup"],
            device,
        )
        ours, base = ours + t["supernet"], base + t["plain"]
    ratio = base / ours
    return Result(
        f"1. supernet step ({space_name})",
        "supernet(x, arch) step",
        "plain build_ensemble step",
        ours / len(archs),
        base / len(archs),
        ">= 0.95",
        ratio,
        ratio >= 0.95,
        {"batch": x.shape[0], "input": space.input_size, "archs": [str(a) for a in archs]},
    )


def shared_once(space_name: str, size: dict, device="cpu") -> Result:
    space, supernet, x, y = _setup(space_name, size, device)
    supernet.train()
    arch = EnsembleArch.sample(space, 1, split=(space.split[0] + space.split[1]) // 2)
    with torch.no_grad():
        shared_out = supernet.forward_shared(x, arch)
    grad = torch.randn_like(shared_out)

    def full():
        loss = sum(F.cross_entropy(lg.float(), y) for lg in supernet(x, arch))
        supernet.zero_grad(set_to_none=True)
        loss.backward()

    def shared():
        supernet.zero_grad(set_to_none=True)
        supernet.forward_shared(x, arch).backward(grad)

    def path(k):
        def run():
            h = shared_out.detach().requires_grad_()
            loss = F.cross_entropy(supernet.forward_path(h, arch, k)[0].float(), y)
            supernet.zero_grad(set_to_none=True)
            loss.backward()

        return run

    fns = {"full": full, "shared": shared, **{f"path{k}": path(k) for k in range(arch.num_paths)}}
    t = interleaved(fns, size["repeats"], size["warmup"], device)
    parts = sum(v for k, v in t.items() if k != "full")
    ratio = parts / t["full"]
    return Result(
        f"2. shared part once ({space_name})",
        f"step at split {arch.split}",
        "shared once + K private parts",
        t["full"],
        parts,
        "<= 1.05",
        ratio,
        t["full"] <= 1.05 * parts,
        {k: v * 1e3 for k, v in t.items()},
    )
