"""Scoring candidates with supernet weights (DESIGN.md §7-8): BN recalibration, then ensemble
top-1 (mean of the path logits) on the held-out images.

Candidates that share a shared part (same split point and shared ops) reuse it: its BNs are
recalibrated once, and its activations on the R recalibration batches (train mode) and on the
held-out images (eval mode) are kept, so a candidate only runs its private layers and heads.
This gives exactly the numbers of recalibrating and evaluating each whole network on its own.
Every candidate is evaluated once (memoised).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch

from neas.search.bn import batch_norms, recalibrate_bn
from neas.space import EnsembleArch
from neas.supernet import Supernet

__all__ = ["Evaluation", "CandidateEvaluator"]


@dataclass(frozen=True)
class Evaluation:
    ensemble_acc: float  # top-1 of the mean logits on the held-out images
    path_acc: tuple[float, ...]  # top-1 of each path


def _reset(norms):
    momenta = [bn.momentum for bn in norms]
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the R batches
    return momenta


class CandidateEvaluator:
    """Evaluates ensembles of one supernet on fixed BN batches and held-out batches.

    Args:
        supernet: trained weights (left in eval mode; BN statistics are overwritten).
        bn_batches: R batches of training images for BN recalibration.
        val_batches: (images, labels) batches of the held-out part.
        reuse_shared: share the shared part between candidates (off: whole network each time).
        cache_size: shared parts kept (each holds its activations on every batch).
    """

    def __init__(self, supernet: Supernet, bn_batches, val_batches, reuse_shared: bool = True, cache_size: int = 4):
        self.supernet = supernet
        self.bn_batches = list(bn_batches)
        self.val_batches = list(val_batches)
        self.reuse_shared = reuse_shared
        self.cache_size = cache_size
        self.memo: dict[EnsembleArch, Evaluation] = {}
        self._shared: OrderedDict = OrderedDict()
        self._base = None  # stem + L0 activations: the same for every candidate
        self.shared_computed = 0  # how many shared parts were computed (for tests/benchmarks)

    # ---- the shared part -------------------------------------------------------------------
    @torch.no_grad()
    def _recalibrated(self, modules, run, bn_inputs, val_inputs):
        """Recalibrates the BNs of ``modules`` on ``bn_inputs``; returns ``run``'s outputs on the
        recalibration inputs (train mode) and on the held-out inputs (eval mode)."""
        sn = self.supernet
        norms = batch_norms(modules)
        momenta = _reset(norms)
        sn.train()
        bn_out = [run(x) for x in bn_inputs]
        for bn, m in zip(norms, momenta):
            bn.momentum = m
        sn.eval()
        return bn_out, [run(x) for x in val_inputs]

    def _stem(self):
        """Stem + L0 are the same in every candidate: recalibrated and run once."""
        if self._base is None:
            sn = self.supernet
            self._base = self._recalibrated(
                [sn.conv_stem, sn.bn1, sn.first_block], lambda x: sn.first_block(sn.bn1(sn.conv_stem(x))),
                self.bn_batches, [x for x, _ in self.val_batches],
            )
        return self._base

    @torch.no_grad()
    def _shared_part(self, arch: EnsembleArch):
        key = (arch.split, arch.shared)
        if key in self._shared:
            self._shared.move_to_end(key)
            return self._shared[key]
        sn = self.supernet
        blocks = [sn.block(i, op) for i, op in enumerate(arch.shared, start=1) if not op.is_skip]

        def run(h):
            for block in blocks:
                h = block(h)
            return h

        base_bn, base_val = self._stem()
        bn_acts, val_acts = self._recalibrated(blocks, run, base_bn, base_val)
        self.shared_computed += 1
        self._shared[key] = (bn_acts, val_acts)
        while len(self._shared) > self.cache_size:
            self._shared.popitem(last=False)
        return bn_acts, val_acts

    # ---- candidates -----------------------------------------------------------------------------
    def _path_modules(self, arch: EnsembleArch, k: int):
        sn = self.supernet
        blocks = [sn.block(i, op) for i, op in enumerate(arch.private(k), start=arch.split + 1) if not op.is_skip]
        return blocks + [sn.head_convs[k]]

    @torch.no_grad()
    def _evaluate_reusing(self, arch: EnsembleArch) -> Evaluation:
        sn, k_paths = self.supernet, arch.num_paths
        bn_acts, val_acts = self._shared_part(arch)
        modules = [m for k in range(k_paths) for m in self._path_modules(arch, k)]
        _, logits = self._recalibrated(modules, lambda h: [sn.forward_path(h, arch, k)[0] for k in range(k_paths)], bn_acts, val_acts)
        return self._score(arch, logits)

    @torch.no_grad()
    def _evaluate_whole(self, arch: EnsembleArch) -> Evaluation:
        sn = self.supernet
        recalibrate_bn(lambda x: sn(x, arch), sn.used_modules(arch), self.bn_batches, root=sn)
        return self._score(arch, (sn(x, arch) for x, _ in self.val_batches))

    def _score(self, arch: EnsembleArch, logits_per_batch) -> Evaluation:
        k_paths = arch.num_paths
        correct, ens, total = [0] * k_paths, 0, 0
        for logits, (_, y) in zip(logits_per_batch, self.val_batches):
            for k, l in enumerate(logits):
                correct[k] += int((l.argmax(1) == y).sum())
            ens += int((torch.stack(logits).float().mean(0).argmax(1) == y).sum())
            total += len(y)
        return Evaluation(ens / total, tuple(c / total for c in correct))

    def evaluate(self, arch: EnsembleArch) -> Evaluation:
        """The (memoised) evaluation of one candidate."""
        if arch not in self.memo:
            self.memo[arch] = self._evaluate_reusing(arch) if self.reuse_shared else self._evaluate_whole(arch)
        return self.memo[arch]

    def evaluate_many(self, archs: list[EnsembleArch], progress=None) -> list[Evaluation]:
        """Evaluates a batch of candidates, grouped by shared part; results in input order."""
        order = sorted(range(len(archs)), key=lambda i: (archs[i].split, tuple(map(str, archs[i].shared))))
        out: list = [None] * len(archs)
        for i in order:
            out[i] = self.evaluate(archs[i])
            if progress is not None:
                progress.update(1)
        return out
