"""Benchmark 9: ``--compile blocks`` — a supernet step with every (layer, op) block and head
compiled once (``Supernet.compile_blocks``) vs the same step eager, timed interleaved on a few
sampled ensembles after both have warmed up; the one-off compile time is printed beside it
(it must be won back over a run's steps).
"""

from __future__ import annotations

import copy
import random
import time

from benchmarks.bench_step import _setup, _step
from benchmarks.common import Result, interleaved
from neas import EnsembleArch

__all__ = ["compiled_blocks"]


def compiled_blocks(space_name: str, size: dict, device="cpu") -> Result:
    space, eager, x, y = _setup(space_name, size, device)
    compiled = copy.deepcopy(eager)
    compiled.compile_blocks()
    rng = random.Random(0)
    archs = [EnsembleArch.sample(space, rng) for _ in range(2)]
    start = time.perf_counter()
    for arch in archs:  # the first step of each ensemble compiles what it has not met yet
        _step(lambda x, a=arch: compiled(x, a), compiled.parameters(), x, y, device)()
    compile_s = time.perf_counter() - start
    ours = base = 0.0
    for arch in archs:
        t = interleaved(
            {
                "compiled": _step(lambda x, a=arch: compiled(x, a), compiled.parameters(), x, y, device),
                "eager": _step(lambda x, a=arch: eager(x, a), eager.parameters(), x, y, device),
            },
            size["repeats"],
            size["warmup"],
            device,
        )
        ours, base = ours + t["compiled"], base + t["eager"]
    ratio = base / ours
    steps_to_win = compile_s / max(base / len(archs) - ours / len(archs), 1e-9) if ratio > 1 else float("inf")
    return Result(
        f"9. compile blocks ({space_name})",
        "compiled blocks step",
        "eager step",
        ours / len(archs),
        base / len(archs),
        "> 1.0",
        ratio,
        ratio > 1.0,
        {"compile_s": compile_s, "steps_to_win_back": steps_to_win, "batch": x.shape[0]},
    )
