"""What deployers of an ensemble need beyond calibration, as ``eval.json`` reports it (issue 28).

From the paths' logits on a split (K, N, C), computed once by :func:`neas.ensemble.assess.assess`:

- :func:`selective_report`: per predictor (the ensemble, every path) the risk-coverage curve, AURC,
  AUGRC, risk at 80 % coverage, coverage at 5 % risk (confidence = max softmax probability), adaptive
  ECE and MCE; the ensemble's mean mutual information and disagreement (:mod:`neas.ensemble.uncertainty`
  computes each number);
- :func:`ood_report`: with the logits of out-of-distribution images, AUROC, AUPR-in, AUPR-out and
  FPR@95TPR of every score (OOD is the positive class; higher score = more likely OOD), for the
  ensemble (MSP, entropy, energy, mutual information, path disagreement) and every path (MSP,
  entropy, energy);

One temperature convention for every number (issue 40): a predictor's block holds its raw numbers
(T = 1); with a fitted temperature the ensemble's block also holds ``calibrated``, the same numbers of
the ensemble's logits divided by T (``eval.json``: ``ensemble`` / ``ensemble.calibrated``,
``ood.ensemble`` / ``ood.ensemble.calibrated``; ``--save-scores``: ``ensemble_*`` /
``ensemble_calibrated_*``). Paths are never scaled: the temperature was fitted for the ensemble.
- :func:`cascade_report`: a fitted confidence-gated cascade (:mod:`neas.ensemble.cascade`) on the
  split: top-1, mean MACs and latency per image, where images stop, and the whole curve;
- :func:`score_arrays`: the per-image numbers behind all of it (``--save-scores``);
- :func:`fit_on_heldout`: what is fitted on the held-out part of the training split, never on the
  reported split, from one pass over it: the anytime order of the paths, the temperature and the
  cascade (``neas retrain`` and ``neas evaluate`` both call it).
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from neas.cost import count_cost
from neas.ensemble.calibration import fit_temperature
from neas.ensemble.cascade import NEVER, cascade_curve, cascade_predict, cascade_summary, fit_thresholds
from neas.ensemble.metrics import Scores, path_logits_on, ranked_classes
from neas.ensemble.model import EnsembleNet
from neas.ensemble.uncertainty import calibration_errors, ood_metrics, ood_scores, selective_metrics
from neas.nn.precision import full_precision
from neas.records import CascadeRecord

__all__ = [
    "anytime_order",
    "cascade_report",
    "fit_cascade",
    "fit_on_heldout",
    "held_out_order",
    "heldout_description",
    "ood_histograms",
    "ood_report",
    "path_logits",
    "score_arrays",
    "selective_report",
    "stack_logits",
]

log = logging.getLogger(__name__)

HISTOGRAM_BINS = 30
FEW_IMAGES = 500  # a temperature fitted on fewer held-out images is applied with a warning
CALIBRATED = "calibrated"  # the key of the ensemble's temperature-scaled numbers, beside its raw ones


def stack_logits(batches: list[tuple[list[torch.Tensor], torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(K, N, C) float32 path logits and (N,) labels on the CPU from per-batch ``(K logits, labels)``."""
    logits = torch.cat([torch.stack([full_precision(lg).cpu() for lg in paths], 0) for paths, _ in batches], 1)
    return logits, torch.cat([y.cpu() for _, y in batches])


@torch.no_grad()
def path_logits(net: EnsembleNet, batches) -> tuple[torch.Tensor, torch.Tensor]:
    """(K, N, C) path logits and (N,) labels of every image in ``batches`` (eval mode, on the CPU)."""
    return stack_logits(list(path_logits_on(net.eval(), batches)))


def _predictors(path_logits: torch.Tensor, temperature: float | None) -> dict[str, torch.Tensor]:
    """Each predictor's logits: the ensemble's mean, every path's, and with a temperature
    ``ensemble_calibrated``, the mean over it."""
    mean = path_logits.mean(0)
    out = {"ensemble": mean}
    out.update({f"path{j}": lg for j, lg in enumerate(path_logits)})
    if temperature is not None:
        out[f"ensemble_{CALIBRATED}"] = mean / temperature
    return out


def _nest(blocks: dict[str, dict]) -> dict[str, dict]:
    """``ensemble_calibrated``'s block moved to ``ensemble.calibrated``: the convention of the module docstring."""
    calibrated = blocks.pop(f"ensemble_{CALIBRATED}", None)
    if calibrated is not None:
        blocks["ensemble"][CALIBRATED] = calibrated
    return blocks


def _uncertainty(path_logits: torch.Tensor, temperature: float | None) -> dict:
    scores = ood_scores(path_logits, temperature)
    return {
        "mutual_information": float(scores["mutual_information"].mean()),
        "disagreement": float(scores["disagreement"].mean()),
    }


def selective_report(path_logits: torch.Tensor, labels: torch.Tensor, temperature: float | None = None) -> dict:
    """Per predictor: ``selective`` (selective_metrics), ``adaptive_ece``, ``mce``; and the
    ensemble's ``uncertainty`` (mean mutual information and disagreement with K > 1); all raw, and with a
    ``temperature`` the ensemble's at T under ``ensemble.calibrated``."""
    out = {}
    for name, logits in _predictors(path_logits, temperature).items():
        probs = logits.double().softmax(-1)
        confidence, predicted = probs.max(-1)
        out[name] = {
            "selective": selective_metrics(confidence, predicted == labels),
            **calibration_errors(probs, labels),
        }
    if path_logits.shape[0] > 1:
        out["ensemble"]["uncertainty"] = _uncertainty(path_logits, None)
        if temperature is not None:
            out[f"ensemble_{CALIBRATED}"]["uncertainty"] = _uncertainty(path_logits, temperature)
    return _nest(out)


def _scores(path_logits: torch.Tensor, temperature: float | None) -> dict[str, dict[str, torch.Tensor]]:
    """Every OOD score of the ensemble (raw, and at the temperature as ``ensemble_calibrated``) and of
    each path (a path alone: MSP, entropy, energy)."""
    out = {"ensemble": ood_scores(path_logits)}
    out.update({f"path{j}": ood_scores(path_logits[j : j + 1]) for j in range(path_logits.shape[0])})
    if temperature is not None:
        out[f"ensemble_{CALIBRATED}"] = ood_scores(path_logits, temperature)
    return out


def ood_report(in_logits: torch.Tensor, out_logits: torch.Tensor, temperature: float | None = None) -> dict:
    """Per predictor and score: ``auroc``, ``aupr_in``, ``aupr_out``, ``fpr95`` (out-of-distribution positive);
    raw, and with a ``temperature`` the ensemble's at T under ``ensemble.calibrated``."""
    inside, outside = _scores(in_logits, temperature), _scores(out_logits, temperature)
    return _nest(
        {
            name: {score: ood_metrics(values, outside[name][score]) for score, values in scores.items()}
            for name, scores in inside.items()
        }
    )


def ood_histograms(in_logits: torch.Tensor, out_logits: torch.Tensor) -> dict:
    """Per ensemble score (raw, as ``ood.ensemble``): ``edges`` and the ``in`` / ``out`` counts of a shared
    histogram (the report's plot)."""
    inside, outside = ood_scores(in_logits), ood_scores(out_logits)
    out = {}
    for score, values in inside.items():
        both = torch.cat([values, outside[score]]).numpy()
        edges = np.histogram_bin_edges(both, HISTOGRAM_BINS)
        out[score] = {
            "edges": edges.tolist(),
            "in": np.histogram(values.numpy(), edges)[0].tolist(),
            "out": np.histogram(outside[score].numpy(), edges)[0].tolist(),
        }
    return out


def fit_cascade(
    net: EnsembleNet,
    order: list[int],
    logits: torch.Tensor,
    labels: torch.Tensor,
    tolerance_points: float,
    where: str,
    exit_rule: str = "accuracy",
) -> CascadeRecord:
    """The cascade's thresholds (``fit_thresholds``) on held-out images' ``(K, N, C)`` path ``logits`` — never the
    reported split — for the paths in ``order``, at each sub-ensemble's MACs, keeping top-1 (``exit_rule``
    accuracy) or the coverage at 5 % selective risk (risk) within ``tolerance_points`` of the full ensemble's
    (stopping confidence: raw softmax). The risk rule where the full ensemble covers none of these images
    at 5 % risk: :class:`~neas.ensemble.cascade.RiskUnreachable`."""
    subs = [net.select(order[:j]) for j in range(1, len(order) + 1)]
    macs = [float(count_cost(sub.space, sub.arch, net.num_classes).macs) for sub in subs]
    thresholds = fit_thresholds(logits[list(order)], labels, macs, tolerance_points / 100, exit_rule=exit_rule)
    return CascadeRecord(
        order=tuple(order),
        thresholds=tuple(thresholds),
        tolerance=tolerance_points,
        temperature=None,
        fitted_on=f"{where}, {len(labels)} images",
        exit_rule=exit_rule,
    )


def heldout_description(holdout: float) -> str:
    """How records name what they were fitted on."""
    return f"held-out part of the training split ({holdout:g} of it)"


def anytime_order(path_acc: list[float] | None) -> list[int]:
    """Paths by held-out top-1, best first (ties: lower index first); index order without scores."""
    if not path_acc:
        return []
    return sorted(range(len(path_acc)), key=lambda k: (-path_acc[k], k))


def held_out_order(path_logits: torch.Tensor, labels: torch.Tensor) -> tuple[list[int], list[float]]:
    """The anytime order from each path's top-1 on held-out images (their ``(K, N, C)`` path logits),
    and those accuracies."""
    acc = [int((ranked_classes(lg, 1)[:, 0] == labels).sum()) / len(labels) for lg in path_logits]
    return anytime_order(acc), acc


def fit_on_heldout(
    net: EnsembleNet,
    logits: torch.Tensor,
    labels: torch.Tensor,
    where: str,
    *,
    order: list[int] | None = None,
    temperature: bool = False,
    cascade_tolerance: float | None = None,
    cascade_exit: str = "accuracy",
) -> dict:
    """What is fitted on held-out images, from their ``(K, N, C)`` path ``logits``: ``path_order`` (by each
    path's top-1; only when no ``order`` is given), ``temperature`` (of the ensemble's mean logits, when asked)
    and ``cascade`` (in the order, by the ``cascade_exit`` rule at ``cascade_tolerance`` points, when a
    tolerance is given); each record says ``where``."""
    out: dict = {}
    if order is None:
        order, acc = held_out_order(logits, labels)
        out["path_order"] = {"order": order, "by": "held-out top-1 at retraining", "path_top1": acc}
    if temperature:
        record = fit_temperature(logits.mean(0), labels)
        out["temperature"] = {**record, "fitted_on": where}
        if len(labels) < FEW_IMAGES:
            log.warning(
                "the temperature is fitted on %d held-out images only (fewer than %d): it is applied, but it may "
                "make the test NLL worse; hold out more (--holdout) or evaluate with --temperature none",
                len(labels),
                FEW_IMAGES,
            )
        log.info(
            "temperature %.3f: held-out NLL %.4f -> %.4f on %d images",
            record["temperature"],
            record["nll_before"],
            record["nll_after"],
            record["images"],
        )
    if cascade_tolerance is not None:
        out["cascade"] = fit_cascade(net, order, logits, labels, cascade_tolerance, where, cascade_exit)
        log.info("cascade thresholds %s (%s)", [round(t, 4) for t in out["cascade"].thresholds], where)
    return out


def cascade_report(
    logits_in_order: torch.Tensor,
    labels: torch.Tensor,
    cascade: CascadeRecord,
    steps: list[dict],
) -> dict:
    """The fitted cascade on a split: ``top1``, ``nll`` and ``ece`` of its output (the logits of the
    sub-ensemble each image stopped at, at T = 1 like the ``ensemble`` block's), ``mean_macs`` and
    ``mean_latency_ms`` per image (an image stopping at step j costs the sub-ensemble of the first j paths,
    ``steps[j - 1]``: anytime-K's ``macs`` and ``latency_ms``), ``stop_fraction`` per step and
    ``stop_top1``, the top-1 of the images that stop there (None where none does), the full ensemble's
    ``full_top1`` and ``macs``, the exit rule the thresholds were fitted by (``exit``) and the coverage at
    5 % selective risk of the cascade (its exit confidences) and of the full ensemble
    (``coverage_at_5_risk``, ``full_coverage_at_5_risk``), and ``curve``: top-1 vs mean MACs with one
    threshold shared by all steps."""
    t = cascade.temperature
    macs = [float(s["macs"]) for s in steps]
    summary = cascade_summary(logits_in_order, labels, list(cascade.thresholds), macs, temperature=t)
    full = cascade_summary(logits_in_order, labels, [NEVER] * (len(macs) - 1), macs, temperature=t)
    logits, stops = cascade_predict(logits_in_order, list(cascade.thresholds), t)
    scores = Scores(logits_in_order.shape[-1])
    scores.update(logits, labels)
    output = scores.compute()
    right = (logits.argmax(-1) == labels).double()
    stop_top1 = [float(right[stops == j].mean()) if bool((stops == j).any()) else None for j in range(1, len(macs) + 1)]
    out = {
        "thresholds": list(cascade.thresholds),
        "order": list(cascade.order),
        "tolerance_points": cascade.tolerance,
        "exit": cascade.exit_rule,
        "fitted_on": cascade.fitted_on,
        "top1": summary["top1"],
        "nll": output["nll"],
        "ece": output["ece"],
        "mean_macs": summary["mean_cost"],
        "stop_fraction": summary["stop_fraction"],
        "stop_top1": stop_top1,
        "coverage_at_5_risk": summary["coverage_at_5_risk"],
        "full_top1": full["top1"],
        "full_coverage_at_5_risk": full["coverage_at_5_risk"],
        "macs": macs[-1],
    }
    if all("latency_ms" in s for s in steps):
        out["mean_latency_ms"] = float(sum(f * s["latency_ms"] for f, s in zip(summary["stop_fraction"], steps)))
        out["latency_ms"] = steps[-1]["latency_ms"]
    out["curve"] = [
        {"threshold": p["threshold"], "top1": p["top1"], "mean_macs": p["mean_cost"]}
        for p in cascade_curve(logits_in_order, labels, macs, temperature=t)
    ]
    return out


def score_arrays(
    path_logits: torch.Tensor,
    labels: torch.Tensor,
    temperature: float | None = None,
    ood_logits: torch.Tensor | None = None,
) -> dict[str, np.ndarray]:
    """The per-image numbers behind the report, for ``--save-scores``: ``labels``; per predictor
    ``<name>_pred`` and ``<name>_confidence``; per predictor and OOD score ``in_<name>_<score>`` and,
    with OOD images, ``out_<name>_<score>``. Predictors: ``ensemble`` and ``path<j>`` (raw) and, with a
    ``temperature``, ``ensemble_calibrated`` (the ensemble at T)."""
    arrays = {"labels": labels.numpy()}
    for name, logits in _predictors(path_logits, temperature).items():
        confidence, predicted = logits.double().softmax(-1).max(-1)
        arrays[f"{name}_pred"], arrays[f"{name}_confidence"] = predicted.numpy(), confidence.numpy()
    sets = {"in": path_logits} | ({"out": ood_logits} if ood_logits is not None else {})
    for where, logits in sets.items():
        for name, scores in _scores(logits, temperature).items():
            arrays.update({f"{where}_{name}_{score}": v.numpy() for score, v in scores.items()})
    return arrays
