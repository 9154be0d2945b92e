"""Benchmark 8: a 2-process (gloo) supernet step — gradients of the sampled ensemble's weights
reduced in one coalesced all-reduce (ours) vs DDP with ``find_unused_parameters=True`` followed
by resetting the unused gradients (what supernet training did before) — timed interleaved in
the same two processes. Also prints the bytes each reduces per step.
"""

from __future__ import annotations

import os
import random
import socket
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F

from benchmarks.common import Result

__all__ = ["ddp_reduction"]


def _reduce_used(mode: str, model, arch, sent: list) -> None:
    """After backward: ours all-reduces the gradients of the modules ``arch`` used (recording the bytes
    sent); DDP has reduced them all, and the unused ones are dropped so both optimisers see the same."""
    from neas import dist

    used = list(dict.fromkeys(p for m in model.used_modules(arch) for p in m.parameters()))
    if mode == "ours":
        sent.append(dist.all_reduce_grads(used))
        return
    keep = {id(p) for p in used}
    for p in model.parameters():
        if id(p) not in keep:
            p.grad = None


def _time_modes(step, sample, repeats: int, steps: int) -> dict:
    """Seconds per step of each mode, interleaved (round 0 warms up); every rank in step."""
    import torch.distributed as tdist

    times = {"ours": [], "ddp": []}
    for r in range(repeats + 1):
        for mode in ("ours", "ddp") if r % 2 else ("ddp", "ours"):
            archs = [sample() for _ in range(steps)]
            tdist.barrier()
            start = time.perf_counter()
            for arch in archs:
                step(mode, arch)
            tdist.barrier()
            if r:
                times[mode].append((time.perf_counter() - start) / steps)
    return times


def _worker(rank, world, port, path, space_name, shape):
    """One of ``world`` gloo processes; ``shape``: (batch, input size or None, timed repeats, steps per repeat)."""
    batch, input_size, repeats, steps = shape
    import torch.distributed as tdist

    from neas.space import EnsembleArch, SearchSpace
    from neas.supernet import Supernet

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    tdist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    space = SearchSpace.preset(space_name)
    if input_size:
        space = SearchSpace.from_dict({**space.to_dict(), "input_size": input_size})
    torch.manual_seed(0)
    ours_model, ddp_model = Supernet(space, 100), Supernet(space, 100)
    ddp = torch.nn.parallel.DistributedDataParallel(ddp_model, find_unused_parameters=True)
    opts = {
        "ours": torch.optim.SGD(ours_model.parameters(), lr=1e-3, momentum=0.9),
        "ddp": torch.optim.SGD(ddp_model.parameters(), lr=1e-3, momentum=0.9),
    }
    rng, gen = random.Random(0), torch.Generator().manual_seed(rank)
    x = torch.randn(batch, 3, space.input_size, space.input_size, generator=gen).contiguous(
        memory_format=torch.channels_last
    )
    y = torch.randint(100, (batch,), generator=gen)
    sent = []
    runs = {"ours": (ours_model, ours_model), "ddp": (ddp_model, ddp)}  # mode -> (model, what runs it)

    def step(mode, arch):
        model, net = runs[mode]
        loss = sum(F.cross_entropy(lg, y) for lg in net(x, arch))
        opts[mode].zero_grad(set_to_none=True)
        loss.backward()
        _reduce_used(mode, model, arch, sent)
        opts[mode].step()

    times = _time_modes(step, lambda: EnsembleArch.sample(space, rng), repeats, steps)
    if rank == 0:
        total = sum(p.numel() * p.element_size() for p in ours_model.parameters())
        torch.save(
            {
                "ours": statistics.median(times["ours"]),
                "ddp": statistics.median(times["ddp"]),
                "sent": statistics.mean(sent),
                "total": total,
            },
            path,
        )
    tdist.destroy_process_group()


def ddp_reduction(size: dict, space_name: str = "cifar") -> Result:
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "r.pt")
        imagenet = space_name == "imagenet"
        batch = (size["imagenet_batch"] if imagenet else size["batch"]) // 2
        mp.spawn(
            _worker,
            args=(2, port, path, space_name, (batch, size["imagenet_input"] if imagenet else None, size["repeats"], 3)),
            nprocs=2,
            join=True,
        )
        r = torch.load(path, weights_only=True)
    ratio = r["ddp"] / r["ours"]
    return Result(
        f"8. 2-process supernet step ({space_name})",
        "used-weight all-reduce",
        "DDP find_unused_parameters",
        r["ours"],
        r["ddp"],
        ">= 1.0",
        ratio,
        ratio >= 1.0,
        {"per_rank_batch": batch, "reduced_mb_per_step": r["sent"] / 2**20, "supernet_mb": r["total"] / 2**20},
    )
