"""What an ensemble is judged by, on one dataset: top-1, top-5, NLL, ECE and Brier score of the
ensemble (the mean of its paths' logits, as the model computes it), of every path, and of every
anytime sub-ensemble (its first j paths); how diverse the paths are; and measured latency.

- Predicted class: the highest logit, ties to the lowest class index (``argmax``) — one rule for
  top-1, top-5 (a stable sort), ECE, disagreement and the oracle.
- NLL: mean cross-entropy of the softmax of the logits (natural log).
- ECE: torchmetrics' top-label calibration error, 15 equal-width confidence bins, L1; the
  reliability diagram uses torchmetrics' bins exactly (``bucketize`` on ``linspace(0, 1, 16)``,
  so a confidence of exactly 1.0 sits in a 16th bin of its own).
- Brier: mean over images of the squared distance between the probability vector and the
  one-hot label, summed over classes (so it lies in [0, 2]).

Everything accumulates batch by batch, so a split of any size is scored in one pass.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassCalibrationError

from neas.cost.runtime import time_forward_ms
from neas.ensemble.model import EnsembleNet
from neas.nn.precision import full_precision

__all__ = ["ECE_BINS", "Scores", "evaluate_ensemble", "measure_latency_ms", "path_logits_on", "ranked_classes"]

ECE_BINS = 15


def ranked_classes(logits: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k`` most likely classes per row (B, k), best first, ties to the lower class index:
    column 0 is ``logits.argmax(1)`` (``topk`` orders ties arbitrarily)."""
    return torch.sort(logits, dim=1, descending=True, stable=True).indices[:, :k]


class Scores:
    """Running top-1, top-5, NLL, ECE, Brier (and a reliability diagram) of one predictor."""

    def __init__(self, num_classes: int, calibration: bool = True):
        self.num_classes, self.calibration = num_classes, calibration
        self.top5 = min(5, num_classes)
        self.n, self.top1_sum, self.top5_sum, self.nll_sum, self.brier_sum = 0, 0, 0, 0.0, 0.0
        self.ece = MulticlassCalibrationError(num_classes, n_bins=ECE_BINS, norm="l1") if calibration else None
        self.confidence, self.correct = [], []

    def update(self, logits: torch.Tensor, y: torch.Tensor) -> None:
        logits = full_precision(logits)
        probs = logits.softmax(1)
        best = ranked_classes(logits, self.top5)
        self.n += len(y)
        self.top1_sum += int((best[:, 0] == y).sum())
        self.top5_sum += int((best == y[:, None]).any(1).sum())
        self.nll_sum += float(F.cross_entropy(logits, y, reduction="sum"))
        self.brier_sum += float((probs - F.one_hot(y, self.num_classes).float()).pow(2).sum())
        if self.ece is not None:
            self.ece.update(probs.cpu(), y.cpu())
            self.confidence.append(probs.max(1).values.cpu())
            self.correct.append((best[:, 0] == y).cpu())

    def compute(self) -> dict:
        if self.n == 0:
            raise ValueError("no images to evaluate")
        out = {
            "top1": self.top1_sum / self.n,
            "top5": self.top5_sum / self.n,
            "nll": self.nll_sum / self.n,
            "brier": self.brier_sum / self.n,
        }
        if self.ece is not None:
            out["ece"] = float(self.ece.compute())
        return out

    def reliability(self) -> dict:
        """Per confidence bin: images, mean confidence and accuracy (the diagram), binned exactly as
        torchmetrics' ECE bins them: ``ECE_BINS`` equal-width bins closed on the left, and one more
        for a confidence of exactly 1.0."""
        conf, correct = torch.cat(self.confidence), torch.cat(self.correct).float()
        boundaries = torch.linspace(0, 1, ECE_BINS + 1, dtype=conf.dtype)
        index = torch.bucketize(conf, boundaries, right=True) - 1
        count = torch.bincount(index, minlength=ECE_BINS + 1)
        safe = count.clamp(min=1)
        return {
            "bins": ECE_BINS,
            "count": count.tolist(),
            "confidence": (torch.bincount(index, conf, ECE_BINS + 1) / safe).tolist(),
            "accuracy": (torch.bincount(index, correct, ECE_BINS + 1) / safe).tolist(),
        }


@torch.no_grad()
def path_logits_on(net: EnsembleNet, batches, progress=None, collect: list | None = None):
    """Yields ``(K path logits, labels)`` per batch, in eval mode (and appends each to ``collect``)."""
    net.eval()
    for x, y in batches:
        logits = [full_precision(lg) for lg in net.path_logits(x)]
        if collect is not None:
            collect.append((logits, y))
        yield logits, y
        if progress is not None:
            progress.update(1)


@torch.no_grad()
def evaluate_ensemble(
    net: EnsembleNet,
    batches,
    progress=None,
    *,
    order: list[int] | None = None,
    temperature: float | None = None,
    calibration: bool = True,
    collect: list | None = None,
) -> dict:
    """Scores the ensemble, each path and the anytime sub-ensembles on ``batches``.

    Args:
        order: the anytime order of the paths (best first); ``anytime[j-1]`` is the sub-ensemble of
            its first j paths, and ``anytime[K-1]`` is the whole ensemble. Default: path order.
        temperature: also score the ensemble's logits divided by it (``ensemble.calibrated``).
        calibration: ECE and reliability diagrams (off: the training loop's quick evaluation).
        collect: a list that receives every batch's ``(K path logits, labels)`` (on their device).

    Returns:
        ``ensemble``, ``path0``.. (top1, top5, nll, brier, ece), ``anytime`` (a list of K such
        dicts with their ``paths``), ``diversity`` (``disagreement``: fraction of images on which
        two paths' predictions differ, averaged over pairs; ``oracle_top1``: some path is right),
        ``reliability`` (per predictor) and ``images``.
    """
    k, c = net.num_paths, net.num_classes
    order = list(range(k)) if order is None else list(order)
    scores = {"ensemble": Scores(c, calibration)} | {f"path{j}": Scores(c, calibration) for j in range(k)}
    prefixes = {j: Scores(c, calibration) for j in range(1, k)}  # j = K is the ensemble itself
    calibrated = Scores(c, calibration) if temperature is not None else None
    total, differ, oracle = 0, 0, 0
    for logits, y in path_logits_on(net, batches, progress, collect):
        preds = torch.stack([lg.argmax(1) for lg in logits])
        differ += int((preds[:, None] != preds[None]).sum()) // 2  # every unordered pair of paths once
        oracle += int((preds == y).any(0).sum())
        mean = torch.stack(logits).mean(0)
        scores["ensemble"].update(mean, y)
        for j, lg in enumerate(logits):
            scores[f"path{j}"].update(lg, y)
        for j, s in prefixes.items():
            s.update(torch.stack([logits[i] for i in order[:j]]).mean(0), y)
        if calibrated is not None:
            calibrated.update(mean / temperature, y)
        total += len(y)
    if total == 0:
        raise ValueError("no images to evaluate")
    pairs = k * (k - 1) // 2
    result = {name: s.compute() for name, s in scores.items()}
    if calibrated is not None:
        result["ensemble"]["calibrated"] = {
            key: v for key, v in calibrated.compute().items() if key not in ("top1", "top5")
        }
    result["anytime"] = [{"paths": order[:j], **prefixes[j].compute()} for j in range(1, k)]
    result["anytime"].append({"paths": order, **result["ensemble"]})
    result["anytime"][-1].pop("calibrated", None)
    result["diversity"] = {"disagreement": differ / (total * pairs) if pairs else 0.0, "oracle_top1": oracle / total}
    if calibration:
        result["reliability"] = {name: s.reliability() for name, s in scores.items()}
    result["images"] = total
    return result


def measure_latency_ms(net: EnsembleNet, device, batch_size: int = 1, repeats: int = 30, warmup: int = 5) -> float:
    """Median wall time of one forward pass of the whole ensemble (channels_last, eval mode)."""
    size = net.space.input_size
    x = torch.randn(batch_size, net.space.in_channels, size, size, device=device)
    x = x.contiguous(memory_format=torch.channels_last)
    return time_forward_ms(net.eval(), x, repeats, warmup)
