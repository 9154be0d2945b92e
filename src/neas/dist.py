"""The only module that speaks torch.distributed (DDP under torchrun; NCCL on GPU, gloo on CPU).

Usage: ``torchrun --nproc_per_node N -m neas train-supernet ...``. Outside torchrun every
function degrades to the single-process answer.
"""

from __future__ import annotations

import datetime
import os
from typing import Any

import torch
import torch.distributed as dist
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

from neas.errors import NeasError

__all__ = [
    "all_gather_object",
    "all_reduce_grads",
    "all_reduce_max",
    "all_reduce_mean",
    "barrier",
    "broadcast_module",
    "broadcast_object",
    "cleanup",
    "get_rank",
    "get_world_size",
    "init",
    "is_main_process",
    "local_device",
]


def init(device: str = "auto") -> torch.device:
    """Initialises the process group when launched by torchrun; returns this rank's device."""
    dev = local_device(device)
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        if dev.type == "cuda":
            torch.cuda.set_device(dev)

        # long enough for rank 0's evaluation at the end of a retraining (corruptions, latency) while the others wait
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(hours=4))
    return dev


def local_device(device: str = "auto") -> torch.device:
    """``auto`` (CUDA when there is a GPU, else CPU), ``cpu``, ``cuda`` or ``cuda:N``, checked."""

    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise NeasError(f"device: {device!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if dev.type not in ("cpu", "cuda"):
        raise NeasError(f"device: {device!r} is not supported; use auto, cpu, cuda or cuda:N")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise NeasError(f"device: {device!r} asked for, but this machine has no CUDA GPU; use cpu or auto")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise NeasError(f"device: {device!r}, but there are {torch.cuda.device_count()} GPUs")
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return dev


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def get_rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_gather_object(obj: Any) -> list:
    if not dist.is_initialized():
        return [obj]
    out = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_reduce_mean(values: dict[str, float], device: torch.device | None = None) -> dict[str, float]:
    """Averages a dict of scalars over ranks."""
    if not dist.is_initialized() or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return {k: v / get_world_size() for k, v in zip(keys, t.tolist())}


def all_reduce_max(t: torch.Tensor) -> torch.Tensor:
    """The element-wise maximum of ``t`` over ranks (``t`` itself in one process)."""
    if not dist.is_initialized():
        return t
    out = t.clone()
    dist.all_reduce(out, op=dist.ReduceOp.MAX)
    return out


def all_reduce_grads(params: list[torch.nn.Parameter]) -> int:
    """Averages the gradients of ``params`` over ranks in one coalesced all-reduce (a parameter
    without a gradient contributes zeros and gets the average); returns the bytes reduced.

    The supernet's replacement for DDP: every rank samples the same ensemble, so it knows before
    the backward pass which parameters it used, and reduces exactly those — no graph walk for
    unused parameters, no all-reduce of the rest of the supernet.
    """
    if not dist.is_initialized() or not params:
        return 0

    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = _flatten_dense_tensors(grads)
    dist.all_reduce(flat)
    flat /= get_world_size()
    for p, synced in zip(params, _unflatten_dense_tensors(flat, grads)):
        p.grad = synced
    return flat.numel() * flat.element_size()


def broadcast_module(module: torch.nn.Module, src: int = 0) -> None:
    """Copies rank ``src``'s parameters and buffers to every rank (what DDP does when it wraps)."""
    if not dist.is_initialized():
        return
    for t in [*module.parameters(), *module.buffers()]:
        dist.broadcast(t.data, src=src)
