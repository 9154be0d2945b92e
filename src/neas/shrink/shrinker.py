"""One round of search-space shrinking (Algorithm 1, lines 4-6; docs/DESIGN.md §6).

Sample Z ensembles from the current shrunk space, score each on the probe set after BN
recalibration, score every surviving combination of every layer that can be private
(``diversity``: the DPP score; ``quality``: the DPP score with S = I; ``accuracy``: the
baseline), and drop the k lowest across those layers, never leaving a layer without a
combination. A layer at or below the smallest split point is shared in every ensemble: no
sample tells anything about its combinations, and
dropping one would not change which ensembles exist, so it is never scored nor dropped.
"""

from __future__ import annotations

import itertools
import logging

import torch

from neas import dist
from neas.nn import recalibrate_bn
from neas.nn.precision import full_precision
from neas.shrink.score import accuracy_scores, diversity_scores, quality_scores
from neas.shrink.settings import ShrinkSettings
from neas.shrink.statistics import ProbeSample, layer_statistics
from neas.space import EnsembleArch, ShrunkSpace
from neas.supernet import Supernet

__all__ = ["probe_arch", "select_drops", "shrink_round"]

log = logging.getLogger(__name__)


@torch.no_grad()
def probe_arch(
    supernet: Supernet,
    arch: EnsembleArch,
    bn_batches: list[tuple[torch.Tensor, torch.Tensor]],
    probe_batches: list[tuple[torch.Tensor, torch.Tensor]],
) -> ProbeSample:
    """Recalibrates ``arch``'s BNs, then measures path accuracies and feature distances."""
    recalibrate_bn(lambda x: supernet(x, arch), supernet.used_modules(arch), (x for x, _ in bn_batches), root=supernet)
    k = arch.num_paths
    correct, ens_correct, total = torch.zeros(k), 0.0, 0
    dist_sum = {pq: 0.0 for pq in itertools.combinations(range(k), 2)}
    for x, y in probe_batches:
        logits, feats = supernet(x, arch, return_features=True)
        for j, lg in enumerate(logits):
            correct[j] += (lg.argmax(1) == y).sum().item()
        ens_correct += (full_precision(torch.stack(logits)).mean(0).argmax(1) == y).sum().item()
        for p, q in dist_sum:
            dist_sum[(p, q)] += (
                torch.linalg.vector_norm(full_precision(feats[p]) - full_precision(feats[q]), dim=1).sum().item()
            )
        total += len(y)
    return ProbeSample(
        arch,
        [float(c) / total for c in correct],
        ens_correct / total,
        {pq: d / total for pq, d in dist_sum.items()},
    )


def select_drops(scored: dict[int, list[tuple[tuple, float]]], k: int) -> dict[int, list[tuple]]:
    """The k lowest-scoring combinations over all layers, keeping >= 1 per layer.

    Args:
        scored: ``{layer index: [(combination, score), ...]}`` of the surviving combinations.
    """
    remaining = {index: len(items) for index, items in scored.items()}
    ranked = sorted(
        ((score, index, order, combo) for index, items in scored.items() for order, (combo, score) in enumerate(items)),
        key=lambda t: (t[0], t[1], t[2]),
    )
    drops: dict[int, list[tuple]] = {}
    for _score, index, _, combo in ranked:
        if sum(len(v) for v in drops.values()) >= k:
            break
        if remaining[index] <= 1:
            continue
        drops.setdefault(index, []).append(combo)
        remaining[index] -= 1
    return drops


def _probe_samples(
    supernet: Supernet,
    shrunk: ShrunkSpace,
    settings: ShrinkSettings,
    bn_batches: list,
    probe_batches: list,
    generator,
    progress=None,
) -> list[ProbeSample]:
    """Z ensembles sampled from ``shrunk``, each probed. Every rank draws the same Z archs, probes
    its share, and all gather the results, so every rank derives the same drops from the same numbers."""
    archs = [EnsembleArch.sample(supernet.space, generator, shrunk) for _ in range(settings.samples)]
    rank, world = dist.get_rank(), dist.get_world_size()
    mine = []
    for i in range(rank, len(archs), world):
        mine.append((i, probe_arch(supernet, archs[i], bn_batches, probe_batches)))
        if progress is not None:
            progress.update(world)
    return [s for _, s in sorted((item for part in dist.all_gather_object(mine) for item in part), key=lambda t: t[0])]


def _score_layers(
    stats, shrunk: ShrunkSpace, samples: list[ProbeSample], mode: str, always_shared: int
) -> dict[int, list[tuple[tuple, float]]]:
    """``{layer index: [(combination, score), ...]}`` of the surviving combinations of every layer
    that can be private, scored by ``mode``."""
    scored = {}
    for layer in stats:
        if layer.index <= always_shared:
            continue
        combos = list(shrunk.layer_combinations(layer.index))
        if mode == "diversity":
            scores = diversity_scores(layer, combos)
        elif mode == "quality":
            scores = quality_scores(layer, combos)
        else:
            scores = accuracy_scores(layer.index, samples, combos)
        scored[layer.index] = list(zip(combos, scores))
    return scored


def _layer_record(layer, always_shared: int, scored: dict, drops: dict) -> dict:
    """One layer's statistics and its combinations' scores, as the round's record holds them."""
    return {
        "layer": f"L{layer.index}",
        "ops": [str(o) for o in layer.ops],
        "always_shared": layer.index <= always_shared,
        "S": layer.S.round(6).tolist(),
        "S_min_eigenvalue": round(layer.S_min_eigenvalue, 6),
        "r": layer.r.round(6).tolist(),
        "pair_counts": layer.pair_counts.astype(int).tolist(),
        "op_counts": layer.op_counts.astype(int).tolist(),
        "scores": [
            {"ops": [str(o) for o in combo], "score": score, "dropped": combo in drops.get(layer.index, [])}
            for combo, score in scored.get(layer.index, [])
        ],
    }


def _round_record(
    settings: ShrinkSettings,
    before: ShrunkSpace,
    after: ShrunkSpace,
    stats,
    samples: list[ProbeSample],
    scored: dict,
    drops: dict,
    always_shared: int,
) -> dict:
    """The round's record (JSON): settings, combinations before and after, drops, per-layer statistics, samples."""
    return {
        "mode": settings.mode,
        "settings": {
            "drop": settings.drop,
            "until": settings.until,
            "samples": settings.samples,
            "beta": settings.beta,
            "gamma": settings.gamma,
        },
        "combinations_before": before.num_combinations,
        "combinations_after": after.num_combinations,
        "dropped": [
            {"layer": f"L{index}", "ops": [str(o) for o in combo], "score": dict(scored[index])[combo]}
            for index, combos in sorted(drops.items())
            for combo in combos
        ],
        "layers": [_layer_record(layer, always_shared, scored, drops) for layer in stats],
        "samples": [s.to_json() for s in samples],
    }


def shrink_round(
    supernet: Supernet,
    shrunk: ShrunkSpace,
    settings: ShrinkSettings,
    bn_batches: list,
    probe_batches: list,
    generator,
    progress=None,
) -> tuple[ShrunkSpace, dict]:
    """Runs one shrinking round; returns the new shrunk space and the round's record (JSON)."""
    space = supernet.space
    samples = _probe_samples(supernet, shrunk, settings, bn_batches, probe_batches, generator, progress)
    stats = layer_statistics(space, samples, settings.beta, settings.gamma)
    always_shared = space.split[0]  # L1..L{split min} are shared in every ensemble
    scored = _score_layers(stats, shrunk, samples, settings.mode, always_shared)
    drops = select_drops(scored, settings.drop)
    new = shrunk.without(drops)
    record = _round_record(settings, shrunk, new, stats, samples, scored, drops, always_shared)
    log.debug("shrink: %d -> %d combinations", shrunk.num_combinations, new.num_combinations)
    return new, record
