"""Beyond calibration: how well an ensemble knows what it does not know.

Inputs are the paths' logits ``path_logits`` (K, N, C) and the labels (N,); the ensemble predicts
the softmax of the *mean* of the paths' logits, as :class:`~neas.ensemble.model.EnsembleNet` does.

- Out-of-distribution scores (:func:`ood_scores`) are oriented so that HIGHER means MORE LIKELY
  OUT-OF-DISTRIBUTION: ``msp`` is the *negated* max softmax probability; ``entropy``, ``energy``,
  ``mutual_information`` and ``disagreement`` already grow with uncertainty. Scores are computed in
  float64.
- Out-of-distribution detection (:func:`ood_metrics`): OOD is the positive class (as in
  torch-uncertainty). Scores are replaced by their dense ranks scaled to [0, 1] before torchmetrics
  sees them, so it never applies a sigmoid (which would saturate and tie large energies).
- Selective prediction (:func:`selective_metrics`): images are accepted in decreasing confidence,
  images of equal confidence together, so the risk-coverage curve has one point per distinct
  confidence (a block of tied confidences is one step: accepted or rejected as a whole). AURC is a
  right Riemann sum over that curve, ``sum_i risk_i * (cov_i - cov_{i-1})``, ``cov_0 = 0`` (without ties
  the mean over images of the selective risk at each image's rank, Geifman & El-Yaniv); AUGRC is the
  trapezoid rule over the generalized-risk curve with the point (0, 0) added, as Traub et al. (2024)
  define it and their fd-shifts code computes it, ``sum_i (gr_i + gr_{i-1}) / 2 * (cov_i - cov_{i-1})``,
  ``gr_0 = 0`` — which equals their closed form ``pi^2 / 2 + pi (1 - pi) (1 - AUROC_f)`` (pi: the error
  rate; AUROC_f: of the confidence telling right from wrong, ties counted half) exactly, ties included.
- Adaptive ECE (:func:`calibration_errors`): images sorted by confidence (stable), bin ``b`` of ``B``
  holds sorted positions ``[floor(b N / B), floor((b + 1) N / B))`` — equal mass, ties may straddle a
  bin edge; empty bins (N < B) are skipped.
"""

from __future__ import annotations

import torch
from torchmetrics.functional.classification import (
    binary_auroc,
    binary_average_precision,
    binary_roc,
    multiclass_calibration_error,
)

from neas.errors import NeasError

__all__ = [
    "CURVE_POINTS",
    "RISK_LEVEL",
    "accepted_at_risk",
    "calibration_errors",
    "ood_metrics",
    "ood_scores",
    "selective_metrics",
]

CURVE_POINTS = 200  # risk-coverage points kept for storage; metrics use the full curve
RISK_LEVEL = 0.05  # coverage at this selective risk: `coverage_at_5_risk`, the cascade's risk exit rule
_RISK_DENOMINATOR = 20  # 1 / RISK_LEVEL: risk <= 5 % tested in integers, wrong * 20 <= accepted


def _check_path_logits(path_logits: torch.Tensor) -> None:
    """Shapes: a caller's bug, not a user's input (a ValueError keeps its traceback)."""
    if path_logits.dim() != 3 or path_logits.shape[0] == 0 or path_logits.shape[1] == 0:
        raise ValueError(f"path_logits must have shape (K, N, C) with K, N > 0, got {tuple(path_logits.shape)}")


def _entropy(probs: torch.Tensor) -> torch.Tensor:
    """Natural-log entropy over the last axis; 0 log 0 = 0."""
    return -torch.special.xlogy(probs, probs).sum(-1)


def ood_scores(path_logits: torch.Tensor, temperature: float | None = None) -> dict[str, torch.Tensor]:
    """Per-image out-of-distribution scores of the ensemble; higher means more likely OOD.

    Args:
        path_logits: (K, N, C) logits of the K paths.
        temperature: a fitted scalar T that divides every logit; None means T = 1.

    Returns:
        (N,) float64 tensors: ``msp`` (minus the max softmax probability of the mean logits),
        ``entropy`` (of that softmax), ``energy`` (``-T logsumexp(mean / T)``, Liu et al. 2020) and,
        when K > 1, ``mutual_information`` (entropy of the mean of the paths' softmaxes minus the mean
        of their entropies, computed as the mean KL divergence of each path from that mean, so it is
        exactly 0 when the paths agree) and ``disagreement`` (the fraction of paths whose argmax
        differs from the ensemble's argmax).
    """
    _check_path_logits(path_logits)
    t = 1.0 if temperature is None else float(temperature)
    if not t > 0:
        raise NeasError(f"temperature must be positive, got {temperature!r}")
    scaled = path_logits.double() / t  # (K, N, C)
    mean = path_logits.mean(0).double() / t  # the model's mean, then scaled
    probs = mean.softmax(-1)
    scores = {
        "msp": -probs.max(-1).values,
        "entropy": _entropy(probs),
        "energy": -t * torch.logsumexp(mean, -1),
    }
    if path_logits.shape[0] > 1:
        path_probs = scaled.softmax(-1)  # (K, N, C)
        # mean of identical rows is the row itself exactly, so agreeing paths give MI == 0
        mean_probs = path_probs[0] + (path_probs - path_probs[0]).mean(0)
        tiny = torch.finfo(torch.float64).tiny
        kl = (path_probs * (path_probs.clamp_min(tiny).log() - mean_probs.clamp_min(tiny).log())).sum(-1)
        scores["mutual_information"] = kl.mean(0).clamp_min(0.0)
        scores["disagreement"] = (scaled.argmax(-1) != mean.argmax(-1)).double().mean(0)
    return scores


def _unit_ranks(values: torch.Tensor) -> torch.Tensor:
    """Dense ranks of ``values`` scaled to [0, 1] (float64): same order and ties, no sigmoid."""
    _, inverse = torch.unique(values, return_inverse=True)
    return inverse.double() / max(int(inverse.max()), 1)


def ood_metrics(score_in: torch.Tensor, score_out: torch.Tensor) -> dict:
    """How well a score (higher = more OOD) separates in-distribution from OOD images.

    OOD is the positive class. ``auroc``; ``aupr_out`` = average precision with OOD positive;
    ``aupr_in`` = average precision with in-distribution positive and the score negated; ``fpr95`` =
    the fraction of in-distribution images flagged at the highest threshold that still flags at least
    95% of the OOD images (the smallest FPR with TPR >= 0.95).

    Args:
        score_in: (N_in,) scores of in-distribution images.
        score_out: (N_out,) scores of OOD images.
    """
    if score_in.numel() == 0 or score_out.numel() == 0:
        raise NeasError(f"OOD metrics need both sets: {score_in.numel()} in-distribution, {score_out.numel()} OOD")
    ranks = _unit_ranks(torch.cat([score_in.flatten(), score_out.flatten()]).double())
    target = torch.cat([torch.zeros(score_in.numel()), torch.ones(score_out.numel())]).long()
    fpr, tpr, _ = binary_roc(ranks, target)
    reached = (tpr >= 0.95).nonzero()[0, 0]  # tpr ends at 1, so some point reaches 95%
    return {
        "auroc": float(binary_auroc(ranks, target)),
        "aupr_in": float(binary_average_precision(1.0 - ranks, 1 - target)),
        "aupr_out": float(binary_average_precision(ranks, target)),
        "fpr95": float(fpr[reached]),
    }


def _risk_coverage(confidence: torch.Tensor, correct: torch.Tensor) -> dict:
    """Accepted and wrong counts at each distinct confidence, highest first (int64 tensors)."""
    order = torch.sort(confidence.double(), descending=True, stable=True)
    wrong = (~correct.bool())[order.indices].long().cumsum(0)
    _, counts = torch.unique_consecutive(order.values, return_counts=True)
    accepted = counts.cumsum(0)  # images with confidence >= each distinct value
    return {"accepted": accepted, "wrong": wrong[accepted - 1], "n": len(confidence)}


def accepted_at_risk(confidence: torch.Tensor, correct: torch.Tensor) -> int:
    """How many images are accepted at the largest coverage whose selective risk is <= :data:`RISK_LEVEL`.

    Images are accepted in decreasing ``confidence``, images of equal confidence together (one point of
    the risk-coverage curve per distinct confidence, as :func:`selective_metrics` draws it); the answer is
    the largest number accepted at a point with ``wrong * 20 <= accepted`` (exact, in integers), 0 when
    no point is that safe. (The risk exit rule of :func:`neas.ensemble.cascade.fit_thresholds` counts
    the same for many candidate cascades at once.)

    Args:
        confidence: (N,) confidences (higher = accepted earlier).
        correct: (N,) whether each prediction is right.
    """
    rc = _risk_coverage(confidence.flatten(), correct.flatten())
    safe = rc["wrong"] * _RISK_DENOMINATOR <= rc["accepted"]
    return int(rc["accepted"][safe].max()) if bool(safe.any()) else 0


def _downsample(values: torch.Tensor, points: int = CURVE_POINTS) -> list[float]:
    index = torch.linspace(0, len(values) - 1, min(points, len(values))).round().long().unique()
    return [float(v) for v in values[index]]


def selective_metrics(confidence: torch.Tensor, correct: torch.Tensor) -> dict:
    """Risk-coverage of accepting images in decreasing ``confidence`` (ties accepted together).

    Args:
        confidence: (N,) confidence of each prediction (higher = accepted earlier).
        correct: (N,) whether each prediction is right.

    Returns:
        ``aurc`` (Geifman & El-Yaniv 2017: ``sum_i r_i (c_i - c_{i-1})`` over the distinct-confidence
        points, ``c_0 = 0``) and ``augrc`` (Traub et al. 2024, generalized risk g = the fraction of all
        images accepted and wrong: the trapezoid ``sum_i (g_i + g_{i-1}) / 2 (c_i - c_{i-1})``, ``g_0 = 0``,
        as fd-shifts integrates it); ``risk_at_80`` (selective risk at the first point whose
        coverage is >= 0.8); ``coverage_at_5_risk`` (largest coverage with selective risk <= 0.05, 0.0 if
        none); ``curve`` = ``{"coverage": [...], "risk": [...]}``, at most ``CURVE_POINTS`` points.
    """
    if confidence.numel() == 0 or confidence.shape != correct.shape:
        raise NeasError(f"need as many confidences as correctness flags (> 0), got {confidence.shape}, {correct.shape}")
    rc = _risk_coverage(confidence.flatten(), correct.flatten())
    accepted, wrong, n = rc["accepted"], rc["wrong"], rc["n"]
    coverage = accepted.double() / n
    risk = wrong.double() / accepted.double()
    steps = torch.diff(coverage, prepend=coverage.new_zeros(1))
    generalized = wrong.double() / n
    # Traub et al. 2024 / fd-shifts: trapezoid between consecutive points, from (0, 0)
    trapezoid = (generalized + torch.cat([generalized.new_zeros(1), generalized[:-1]])) / 2
    at_80 = (accepted * 5 >= 4 * n).nonzero()[0, 0]  # integer test: coverage >= 0.8 without rounding
    return {
        "aurc": float((risk * steps).sum()),
        "augrc": float((trapezoid * steps).sum()),
        "risk_at_80": float(risk[at_80]),
        "coverage_at_5_risk": accepted_at_risk(confidence, correct) / n,
        "curve": {"coverage": _downsample(coverage), "risk": _downsample(risk)},
    }


def _adaptive_ece(confidence: torch.Tensor, correct: torch.Tensor, n_bins: int) -> float:
    order = torch.sort(confidence, stable=True).indices
    conf, acc = confidence[order], correct[order].double()
    n = len(conf)
    total = 0.0
    for b in range(n_bins):
        lo, hi = b * n // n_bins, (b + 1) * n // n_bins
        if hi > lo:
            total += (hi - lo) / n * abs(float(acc[lo:hi].mean()) - float(conf[lo:hi].mean()))
    return total


def calibration_errors(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = 15) -> dict:
    """Adaptive (equal-mass) ECE and maximum calibration error of top-label confidence.

    Args:
        probs: (N, C) predicted probabilities (rows summing to 1).
        labels: (N,) true classes.
        n_bins: number of bins of both errors.

    Returns:
        ``adaptive_ece`` (Nguyen & O'Connor 2015, Ding et al. 2020; bins as in the module docstring) and
        ``mce`` (torchmetrics' top-label calibration error, ``n_bins`` equal-width bins, max norm).
    """
    if probs.dim() != 2 or probs.shape[0] == 0 or probs.shape[0] != labels.numel():
        raise NeasError(f"probs must be (N, C) with N = len(labels) > 0, got {tuple(probs.shape)}, {labels.numel()}")
    if n_bins < 1:
        raise NeasError(f"n_bins must be positive, got {n_bins}")
    probs = probs.double()
    confidence, predicted = probs.max(-1)
    mce = multiclass_calibration_error(probs, labels.long(), probs.shape[1], n_bins=n_bins, norm="max")
    return {
        "adaptive_ece": _adaptive_ece(confidence, predicted == labels, n_bins),
        "mce": float(mce),
    }
