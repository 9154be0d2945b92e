"""Benchmark 3: candidate evaluation (BN recalibration + held-out accuracy) reusing shared parts
vs recalibrating and evaluating every candidate's whole network; the accuracies must be equal."""

from __future__ import annotations

import random
import time

import torch

from benchmarks.common import Result
from neas import EnsembleArch, SearchSpace, ShrunkSpace, Supernet
from neas.search.evolution import mutate
from neas.search.fitness import CandidateEvaluator

__all__ = ["candidate_evaluation", "candidates_like_evolution"]


def candidates_like_evolution(space, n: int, seed: int = 0) -> list[EnsembleArch]:
    """What a generation looks like after the first: parents and their layer mutations (which
    mostly keep the shared part), plus some random members."""
    rng, shrunk = random.Random(seed), ShrunkSpace.full(space)
    parents = [EnsembleArch.sample(space, rng) for _ in range(max(2, n // 6))]
    out = list(parents)
    while len(out) < n:
        child = mutate(rng.choice(parents), shrunk, 0.1, 0.1, rng) if rng.random() < 0.75 else EnsembleArch.sample(space, rng)
        if child is not None and child not in out:
            out.append(child)
    return out


def candidate_evaluation(size: dict, device="cpu", space_name: str = "cifar") -> Result:
    space = SearchSpace.preset(space_name)
    torch.manual_seed(0)
    supernet = Supernet(space, 10).to(device, memory_format=torch.channels_last).eval()
    gen = torch.Generator().manual_seed(0)

    def images(n):
        return torch.randn(n, 3, 32, 32, generator=gen).to(device).contiguous(memory_format=torch.channels_last)

    bn = [images(size["batch"]) for _ in range(2)]
    val = [(images(size["batch"]), torch.randint(0, 10, (size["batch"],), generator=gen).to(device)) for _ in range(4)]
    archs = candidates_like_evolution(space, size["candidates"])
    timings, accs = {}, {}
    for reuse in (True, False, True, False):  # interleaved: each side twice
        evaluator = CandidateEvaluator(supernet, bn, val, reuse_shared=reuse)
        start = time.perf_counter()
        accs[reuse] = [e.ensemble_acc for e in evaluator.evaluate_many(archs)]
        timings.setdefault(reuse, []).append((time.perf_counter() - start) / len(archs))
    ours, base = min(timings[True]), min(timings[False])
    identical = accs[True] == accs[False]
    ratio = base / ours
    return Result("3. candidate evaluation", "shared parts reused", "whole network per candidate", ours, base, ">= 2.0",
                  ratio, ratio >= 2.0 and identical,
                  {"identical_accuracies": identical, "candidates": len(archs),
                   "distinct_shared_parts": len({(a.split, a.shared) for a in archs})})
