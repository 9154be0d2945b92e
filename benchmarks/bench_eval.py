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
        child = (
            mutate(rng.choice(parents), shrunk, 0.1, 0.1, rng)
            if rng.random() < 0.75
            else EnsembleArch.sample(space, rng)
        )
        if child is not None and child not in out:
            out.append(child)
    return out


def candidates_sharing(space, n: int, groups: int = 4, seed: int = 0) -> list[EnsembleArch]:
    """``groups`` shared parts, each with ``n // groups`` candidates that differ in private layers."""
    rng, out = random.Random(seed), []
    for _ in range(groups):
        base = EnsembleArch.sample(
            space, rng, split=rng.randint(space.split[0], min(space.split[1], space.num_layers - 2))
        )
        members = {base}
        while len(members) < n // groups:
            other = EnsembleArch.sample(space, rng, split=base.split)
            members.add(EnsembleArch(base.split, tuple(base.shared + other.private(k) for k in range(base.num_paths))))
        out += sorted(members, key=str)
    return out


def candidate_evaluation(size: dict, device="cpu", space_name: str = "cifar", kind: str = "shared") -> Result:
    space = SearchSpace.preset(space_name)
    torch.manual_seed(0)
    supernet = Supernet(space, 10).to(device, memory_format=torch.channels_last).eval()
    gen = torch.Generator().manual_seed(0)

    def images(n):
        return torch.randn(n, 3, 32, 32, generator=gen).to(device).contiguous(memory_format=torch.channels_last)

    bn = [images(size["batch"]) for _ in range(2)]
    val = [(images(size["batch"]), torch.randint(0, 10, (size["batch"],), generator=gen).to(device)) for _ in range(4)]
    archs = (candidates_sharing if kind == "shared" else candidates_like_evolution)(space, size["candidates"])
    timings, accs = {}, {}
    for reuse in (True, False, True, False):  # interleaved: each side twice
        evaluator = CandidateEvaluator(supernet, bn, val, reuse_shared=reuse)
        start = time.perf_counter()
        accs[reuse] = [e.ensemble_acc for e in evaluator.evaluate_many(archs)]
        timings.setdefault(reuse, []).append((time.perf_counter() - start) / len(archs))
    ours, base = min(timings[True]), min(timings[False])
    identical = accs[True] == accs[False]
    ratio = base / ours
    name = "3. candidate eval (shared parts)" if kind == "shared" else "3b. candidate eval (evolution-like)"
    return Result(
        name,
        "prefix activations reused",
        "whole network per candidate",
        ours,
        base,
        ">= 2.0" if kind == "shared" else "info",
        ratio,
        identical and (ratio >= 2.0 or kind != "shared"),
        {
            "identical_accuracies": identical,
            "candidates": len(archs),
            "layers_computed_with_reuse": evaluator_layers(archs, supernet, bn, val),
        },
    )


def evaluator_layers(archs, supernet, bn, val) -> dict:
    evaluator = CandidateEvaluator(supernet, bn, val)
    evaluator.evaluate_many(archs)
    naive = sum(1 for a in archs for p in a.paths for op in p if not op.is_skip)
    return {"reused": evaluator.layers_computed, "whole_networks": naive}
