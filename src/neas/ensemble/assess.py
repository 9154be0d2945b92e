"""The full evaluation of a trained ensemble — what ``neas evaluate`` prints and what ``eval.json``
holds, written by one function for both ``neas evaluate`` and ``neas retrain``:

- the scores of :func:`neas.ensemble.metrics.evaluate_ensemble` (ensemble, paths, diversity,
  reliability diagrams) and of :mod:`neas.ensemble.deployment` (selective prediction, adaptive ECE /
  MCE, OOD detection, the cascade). Every block holds raw numbers (T = 1); with a temperature the
  ensemble's block adds ``calibrated``: the same numbers of its logits divided by T (``ensemble.calibrated``,
  ``ood.ensemble.calibrated``; top-1 and top-5 are unchanged by T and not repeated);
- ``anytime``: for j = 1..K the sub-ensemble of the first j paths of the anytime order (best
  held-out path first), with its scores, MACs / paper FLOPs / params (shared part once, as the
  cost model counts it) and measured latency;
- ``corruptions``: per corruption and severity, and averaged, the scores of the ensemble and of
  each path on corrupted copies of the split;
- the whole ensemble's costs and latency;
- ``per_class`` and ``confusion``: the ensemble's (mean of the path logits) per-class top-1 and
  confusion matrix on the split, from the logits already collected;
- ``mistakes``: its most confident wrong predictions with every path's vote (the report's grid; the
  recipe adds ``source``, what the split is, so the report can show the images).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
from tqdm import tqdm

from neas.cost import count_cost
from neas.data import BatchLoader
from neas.data.corruptions import Corruption
from neas.ensemble import deployment
from neas.ensemble.metrics import evaluate_ensemble, measure_latency_ms
from neas.ensemble.model import EnsembleNet
from neas.errors import NeasError
from neas.records import CascadeRecord

__all__ = ["MISTAKES", "EvalOptions", "assess", "class_scores", "mistakes"]

log = logging.getLogger(__name__)

_CORRUPTION_KEYS = ("top1", "nll", "ece")


@dataclass(frozen=True)
class EvalOptions:
    """How :func:`assess` scores an ensemble, and what it scores beyond the split itself."""

    batch_size: int = 256
    workers: int = 0
    order: list[int] | None = None  # the anytime order (default: path index order), recorded with order_by
    order_by: str = "path index"
    # a fitted temperature (neas.ensemble.calibration.fit_temperature's record): recorded, and the
    # ensemble's calibrated scores added
    temperature: dict | None = None
    corruptions: list[str] | None = None  # corrupted copies of the split to score (none by default)
    severities: list[int] | None = None
    corruption_seed: int = 0
    latency: bool = True  # measure every anytime sub-ensemble's latency
    desc: str = "evaluate"  # the progress bar's
    ood: Any = None  # out-of-distribution images (a dataset seen as the split is), named ood_name: "ood"
    ood_name: str = "ood"
    cascade: CascadeRecord | None = None  # a fitted cascade (neas.ensemble.deployment.fit_cascade) to report


def assess(net: EnsembleNet, data, device, options: EvalOptions = EvalOptions(), logits: list | None = None) -> dict:
    """Everything ``eval.json`` reports about ``net`` on ``data`` (see the module docstring), as
    ``options`` say; ``logits``, when given, receives the split's ``(K, N, C)`` path logits and
    ``(N,)`` labels (CPU), and the OOD images' path logits when there are some."""
    o = options
    batch_size, workers, order, temperature, latency = o.batch_size, o.workers, o.order, o.temperature, o.latency
    k = net.num_paths
    order = list(range(k)) if not order else list(order)
    net = net.to(device, memory_format=torch.channels_last).eval()
    loader = BatchLoader(data, batch_size, False, device=device, workers=workers)
    t = temperature["temperature"] if temperature else None
    batches = []
    with tqdm(total=len(loader), desc=o.desc, leave=False, disable=None) as bar:
        result = evaluate_ensemble(net, loader.epoch(0), bar, order=order, temperature=t, collect=batches)
    path_logits, labels = deployment.stack_logits(batches)
    del batches
    result.update(class_scores(path_logits, labels, getattr(data, "classes", None)))
    result["mistakes"] = mistakes(path_logits, labels, getattr(data, "files", None) or getattr(data, "paths", None))
    if temperature:
        result["temperature"] = temperature
    result["anytime_order"] = {"order": order, "by": o.order_by}
    _costs(result, net, order, device, latency)
    out_logits = None
    if o.ood is not None:
        loader = BatchLoader(o.ood, batch_size, False, device=device, workers=workers)
        out_logits = deployment.path_logits(net, loader.epoch(0))[0]
    _beyond_calibration(result, path_logits, labels, t, out_logits, o.ood_name, o.cascade)
    if logits is not None:
        logits.extend([path_logits, labels, out_logits])
    if o.corruptions:
        severities = o.severities or [1, 2, 3, 4, 5]
        result["corruptions"] = corruption_scores(
            net, data, device, o.corruptions, severities, o.corruption_seed, batch_size, workers
        )
    return result


def class_scores(path_logits: torch.Tensor, labels: torch.Tensor, classes=None) -> dict:
    """``per_class`` (each class's name, test images and ensemble top-1, None for a class with no images)
    and ``confusion`` (rows: true class, columns: the ensemble's prediction; image counts) of the
    ensemble, the mean of the ``(K, N, C)`` path logits, on the ``(N,)`` labels."""
    c = path_logits.shape[-1]
    predicted = path_logits.mean(0).argmax(-1)
    matrix = torch.bincount(labels * c + predicted, minlength=c * c).reshape(c, c)
    images = matrix.sum(1)
    names = [str(name) for name in classes] if classes is not None and len(classes) == c else [str(i) for i in range(c)]
    return {
        "per_class": {
            "classes": names,
            "images": images.tolist(),
            "top1": [int(matrix[i, i]) / int(n) if n else None for i, n in enumerate(images.tolist())],
        },
        "confusion": {"rows": "true class", "columns": "predicted class", "matrix": matrix.tolist()},
    }


MISTAKES = 12  # misclassified images the report shows with the paths' votes


def mistakes(path_logits: torch.Tensor, labels: torch.Tensor, files=None, count: int = MISTAKES) -> dict:
    """``mistakes``: the ensemble's most confident wrong predictions (up to ``count``, ties by index), each
    with its index in the split, its file when the split has files, its label, the ensemble's prediction
    and confidence, and each path's vote (prediction and confidence); ``of``: the misclassified images."""
    probs = path_logits.double().softmax(-1)  # (K, N, C)
    confidence, predicted = path_logits.mean(0).double().softmax(-1).max(-1)
    wrong = (predicted != labels).nonzero().flatten()
    ranked = sorted(wrong.tolist(), key=lambda i: (-float(confidence[i]), i))[:count]
    path_conf, path_pred = probs.max(-1)  # (K, N)
    images = [
        {
            "index": i,
            "file": None if files is None else os.path.abspath(files[i]),  # the report reads it from anywhere
            "label": int(labels[i]),
            "ensemble": int(predicted[i]),
            "confidence": float(confidence[i]),
            "paths": path_pred[:, i].tolist(),
            "path_confidence": path_conf[:, i].tolist(),
        }
        for i in ranked
    ]
    return {"of": len(wrong), "order": "most confident first", "images": images}


def _costs(result: dict, net: EnsembleNet, order: list[int], device, latency: bool) -> None:
    """MACs / paper FLOPs / params (and measured latency) of every anytime sub-ensemble and of the whole."""
    for j, entry in enumerate(result["anytime"], start=1):
        sub = net.select(order[:j])
        entry.update(count_cost(sub.space, sub.arch, net.num_classes).to_json())
        if latency:
            entry["latency_ms"] = measure_latency_ms(sub, device)
    result.update(count_cost(net.space, net.arch, net.num_classes).to_json())
    if latency:
        result["latency_ms"] = result["anytime"][-1]["latency_ms"]
        result["latency_device"] = str(device)


def _beyond_calibration(result: dict, path_logits, labels, t, out_logits, ood_name: str, cascade) -> None:
    """Adds selective prediction and adaptive ECE / MCE to every predictor, and ``ood`` and ``cascade``
    when there are OOD images and a fitted cascade (:mod:`neas.ensemble.deployment`); raw numbers in
    each block, the ensemble's at temperature ``t`` beside the calibrated NLL / ECE / Brier."""
    for name, extra in deployment.selective_report(path_logits, labels, t).items():
        calibrated = extra.pop(deployment.CALIBRATED, None)
        result[name].update(extra)
        if calibrated is not None:
            result[name].setdefault(deployment.CALIBRATED, {}).update(calibrated)
    if out_logits is not None:
        result["ood"] = {
            "data": ood_name,
            "images": out_logits.shape[1],
            "positive": "out-of-distribution; every score is higher for images more likely out of distribution",
            **deployment.ood_report(path_logits, out_logits, t),
            "histograms": deployment.ood_histograms(path_logits, out_logits),
        }
    if cascade is not None:
        if list(cascade.order) != result["anytime_order"]["order"]:
            raise NeasError(f"cascade: its order {list(cascade.order)} is not the model's anytime order")
        ordered = path_logits[list(cascade.order)]
        result["cascade"] = deployment.cascade_report(ordered, labels, cascade, result["anytime"])


def corruption_scores(
    net: EnsembleNet,
    data,
    device,
    names: list[str],
    severities: list[int],
    seed: int,
    batch_size: int,
    workers: int,
) -> dict:
    """Top-1, NLL and ECE of the ensemble and each path per (corruption, severity), and their means."""

    if net.space.input_size < 32:
        raise NeasError(
            f"corruptions need images of at least 32x32 pixels; space {net.space.name!r} takes {net.space.input_size}"
        )
    workers = min(workers, os.cpu_count() or 1)
    members = ["ensemble"] + [f"path{j}" for j in range(net.num_paths)]
    results = {}
    with tqdm(total=len(names) * len(severities), desc="corruptions", leave=False, disable=None) as bar:
        for name in names:
            results[name] = {}
            for severity in severities:
                loader = BatchLoader(
                    data, batch_size, False, device=device, workers=workers, corruption=Corruption(name, severity, seed)
                )
                scores = evaluate_ensemble(net, loader.epoch(0))
                results[name][str(severity)] = {m: {key: scores[m][key] for key in _CORRUPTION_KEYS} for m in members}
                bar.update(1)
    cells = [cell for per_name in results.values() for cell in per_name.values()]
    mean = {m: {key: sum(c[m][key] for c in cells) / len(cells) for key in _CORRUPTION_KEYS} for m in members}
    by_severity = {
        str(s): {
            m: {key: sum(results[n][str(s)][m][key] for n in names) / len(names) for key in _CORRUPTION_KEYS}
            for m in members
        }
        for s in severities
    }
    log.info(
        "corruptions: mean ensemble top-1 %.2f%% over %d corruptions x %d severities",
        100 * mean["ensemble"]["top1"],
        len(names),
        len(severities),
    )
    return {
        "names": names,
        "severities": severities,
        "seed": seed,
        "images": len(data),
        "results": results,
        "mean": mean,
        "by_severity": by_severity,
        "library": "imagecorruptions (imagecorruptions-imaug), ImageNet-C parameters",
    }
