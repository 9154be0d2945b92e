"""Scoring candidates with supernet weights (docs/DESIGN.md §7-8): BN recalibration, then ensemble
top-1, NLL and AURC (of the mean of the path logits) on the held-out images.

A path's activations after layer j depend only on its ops on L1..Lj (its *prefix*), and so do
the recalibrated statistics of the BNs on the way. The evaluator walks each path's pieces (stem,
L0, its layers: ``neas.space.layout``) and keeps a prefix tree of their activations — on the R
recalibration batches (train mode) and on the held-out images (eval mode) — so stem + L0 run once
for all candidates, a shared part runs once for all paths, and a
candidate reuses the longest prefix any earlier path computed (mutated children share most of
their parents' prefixes). This gives exactly the numbers of recalibrating and evaluating each
whole network on its own (tested). Every candidate is evaluated once (memoised).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch

from neas.cost import CostTable
from neas.ensemble.cascade import cross_fit
from neas.ensemble.uncertainty import selective_metrics
from neas.nn import recalibrate_bn, recalibrating
from neas.nn.precision import full_precision
from neas.search.settings import OBJECTIVES
from neas.space import LAYER, EnsembleArch, Piece, path_pieces, trunk_pieces
from neas.supernet import Supernet

__all__ = ["OBJECTIVES", "CandidateEvaluator", "CascadePricing", "Evaluation"]


@dataclass(frozen=True)
class CascadePricing:
    """How the search prices a candidate as a cascade (``neas.ensemble.cascade.cross_fit`` on the held-out
    images it scores): step MACs from ``table`` (the shared trunk once), the exit rule (``exit_rule``:
    accuracy or risk) and its ``tolerance`` in points (of top-1, or of the coverage at 5 % selective risk,
    below the full ensemble's), ``folds`` for the cross-fit."""

    table: CostTable
    tolerance: float = 0.5
    folds: int = 2
    exit_rule: str = "accuracy"


@dataclass(frozen=True)
class Evaluation:
    ensemble_acc: float  # top-1 of the mean logits on the held-out images
    path_acc: tuple[float, ...]  # top-1 of each path
    ensemble_nll: float = float("nan")  # mean cross-entropy of the mean logits
    ensemble_aurc: float = float("nan")  # area under the risk-coverage curve (max softmax of the mean logits)
    # priced as a cascade (CascadePricing): cross-fitted mean MACs per image; order, thresholds (fitted on
    # every held-out image), the cross-fitted top-1 and the folds; a single network's mean MACs are its MACs
    mean_macs: float | None = None
    cascade: dict | None = None

    def fitness(self, objective: str = "top1") -> float:
        """What the search maximises: top-1, minus the NLL, or minus the AURC."""
        if objective == "top1":
            return self.ensemble_acc
        return -self.ensemble_nll if objective == "nll" else -self.ensemble_aurc


class CandidateEvaluator:
    """Evaluates ensembles of one supernet on fixed BN batches and held-out batches.

    Args:
        supernet: trained weights (left in eval mode; BN statistics are overwritten).
        bn_batches: R batches of training images for BN recalibration.
        val_batches: (images, labels) batches of the held-out part.
        reuse_shared: reuse prefixes between paths and candidates (off: whole network each time).
        cache_bytes: memory for cached activations (least recently used prefixes are dropped).
        cascade: price every candidate as a cascade too (its ``mean_macs``); None: not.
    """

    def __init__(
        self,
        supernet: Supernet,
        bn_batches,
        val_batches,
        reuse_shared: bool = True,
        cache_bytes: int = 2 * 2**30,
        cascade: CascadePricing | None = None,
    ):
        self.supernet = supernet
        self.bn_batches = list(bn_batches)
        self.val_batches = list(val_batches)
        self.reuse_shared = reuse_shared
        self.cache_bytes = cache_bytes
        self.cascade = cascade
        self.memo: dict[EnsembleArch, Evaluation] = {}
        self._prefixes: OrderedDict = OrderedDict()  # weights of a path's first pieces -> (bn, val activations)
        self._bytes = 0
        self.layers_computed = 0  # (prefix, layer) computations, for tests and benchmarks

    @torch.no_grad()
    def _recalibrated(self, modules, run, bn_inputs, val_inputs):
        """Recalibrates the BNs of ``modules`` on ``bn_inputs``; returns ``run``'s outputs on the
        recalibration inputs (train mode) and on the held-out inputs (eval mode)."""
        with recalibrating(modules):
            bn_out = [run(x) for x in bn_inputs]
        return bn_out, [run(x) for x in val_inputs]

    def _store(self, key, value):
        self._prefixes[key] = value
        self._bytes += sum(t.numel() * t.element_size() for part in value for t in part)
        while self._bytes > self.cache_bytes and len(self._prefixes) > 1:
            _, old = self._prefixes.popitem(last=False)
            self._bytes -= sum(t.numel() * t.element_size() for part in old for t in part)

    def _prefix(self, pieces: tuple[Piece, ...]) -> tuple[list, list]:
        """Activations of the recalibration and held-out inputs after ``pieces``, the start of a path
        (stem, L0, then its layers up to some L{j}; a skip layer is no piece, so it adds no entry)."""
        if not pieces:
            return self.bn_batches, [x for x, _ in self.val_batches]
        key = tuple(p.weights for p in pieces)  # the same ops give the same activations, shared or private
        if key in self._prefixes:
            self._prefixes.move_to_end(key)
            return self._prefixes[key]
        parent = self._prefix(pieces[:-1])
        module = self.supernet.piece_module(pieces[-1])
        value = self._recalibrated([module], module, *parent)
        self.layers_computed += pieces[-1].kind == LAYER
        self._store(key, value)
        return value

    @torch.no_grad()
    def _evaluate_reusing(self, arch: EnsembleArch) -> Evaluation:
        logits = []
        for k in range(arch.num_paths):
            *body, head = trunk_pieces(arch) + path_pieces(arch, k)
            bn_acts, val_acts = self._prefix(tuple(body))
            head = self.supernet.piece_module(head)
            # only the head's last block has BNs; the rest stays in eval mode (no dropout)
            _, out = self._recalibrated([head.last_block], lambda h, head=head: head(h)[0], bn_acts, val_acts)
            logits.append(out)
        return self._score(arch, [list(per_batch) for per_batch in zip(*logits)])

    @torch.no_grad()
    def _evaluate_whole(self, arch: EnsembleArch) -> Evaluation:
        sn = self.supernet
        recalibrate_bn(lambda x: sn(x, arch), sn.used_modules(arch), self.bn_batches, root=sn)
        return self._score(arch, (sn(x, arch) for x, _ in self.val_batches))

    def _score(self, arch: EnsembleArch, logits_per_batch) -> Evaluation:
        k_paths = arch.num_paths
        correct, ens, nll, total = [0] * k_paths, 0, 0.0, 0
        confidence, right, kept = [], [], []
        for logits, (_, y) in zip(logits_per_batch, self.val_batches):
            if self.cascade is not None:
                kept.append([full_precision(lg).cpu() for lg in logits])
            for k, lg in enumerate(logits):
                correct[k] += int((lg.argmax(1) == y).sum())
            mean = full_precision(torch.stack(logits)).mean(0)
            ens += int((mean.argmax(1) == y).sum())
            nll += float(torch.nn.functional.cross_entropy(mean, y, reduction="sum"))
            confidence.append(mean.double().softmax(1).max(1).values.cpu())
            right.append((mean.argmax(1) == y).cpu())
            total += len(y)
        aurc = selective_metrics(torch.cat(confidence), torch.cat(right))["aurc"]
        scores = (ens / total, tuple(c / total for c in correct), nll / total, aurc)
        if self.cascade is None:
            return Evaluation(*scores)
        return Evaluation(*scores, *self._price(arch, kept))

    def _price(self, arch: EnsembleArch, kept: list) -> tuple[float, dict | None]:
        """The candidate's cross-fitted mean MACs as a cascade, and the cascade (None for one path)."""
        pricing = self.cascade
        if arch.num_paths == 1:
            return float(pricing.table.cost(arch).macs), None
        logits = torch.cat([torch.stack(per_batch) for per_batch in kept], 1)
        labels = torch.cat([y.cpu() for _, y in self.val_batches])
        fit = cross_fit(
            logits,
            labels,
            lambda order: pricing.table.step_costs(arch, order),
            pricing.tolerance / 100,
            pricing.folds,
            pricing.exit_rule,
        )
        keys = ("order", "thresholds", "top1", "folds")
        if pricing.exit_rule == "risk":
            keys += ("coverage_at_5_risk", "full_coverage_at_5_risk", "kept_full")
        cascade = {key: fit[key] for key in keys}
        return fit["mean_cost"], {**cascade, "tolerance": pricing.tolerance, "exit": pricing.exit_rule}

    def evaluate(self, arch: EnsembleArch) -> Evaluation:
        """The (memoised) evaluation of one candidate."""
        if arch not in self.memo:
            arch.validate(self.supernet.space)
            self.memo[arch] = self._evaluate_reusing(arch) if self.reuse_shared else self._evaluate_whole(arch)
        return self.memo[arch]

    def evaluate_many(self, archs: list[EnsembleArch], progress=None) -> list[Evaluation]:
        """Evaluates a batch of candidates, in prefix order (cache locality); results in input order."""
        order = sorted(range(len(archs)), key=lambda i: [tuple(map(str, p)) for p in archs[i].paths])
        out: list = [None] * len(archs)
        for i in order:
            out[i] = self.evaluate(archs[i])
            if progress is not None:
                progress.update(1)
        return out
