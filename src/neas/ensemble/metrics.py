"""Ensemble and per-path top-1 / top-5 / loss on a dataset, and measured latency."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from neas.ensemble.model import EnsembleNet

__all__ = ["evaluate_ensemble", "measure_latency_ms"]


@torch.no_grad()
def evaluate_ensemble(net: EnsembleNet, batches, progress=None) -> dict:
    """Top-1, top-5 and cross-entropy of the ensemble (mean logits) and of each path, and how
    diverse the paths are: ``disagreement`` (fraction of images on which two paths' top-1
    predictions differ, averaged over pairs) and ``oracle_top1`` (some path is right)."""
    net.eval()
    k = net.arch.num_paths
    top5 = min(5, net.num_classes)
    sums = {"ensemble": [0.0, 0, 0]} | {f"path{j}": [0.0, 0, 0] for j in range(k)}  # loss, top1, top5
    total, differ, oracle = 0, 0, 0
    pairs = k * (k - 1) // 2
    for x, y in batches:
        logits = [l.float() for l in net.path_logits(x)]
        preds = torch.stack([l.argmax(1) for l in logits])
        differ += (preds[:, None] != preds[None]).sum().item() // 2  # every unordered pair of paths once
        oracle += (preds == y).any(0).sum().item()
        named = {"ensemble": torch.stack(logits).mean(0)} | {f"path{j}": l for j, l in enumerate(logits)}
        for name, l in named.items():
            sums[name][0] += F.cross_entropy(l, y, reduction="sum").item()
            best = l.topk(top5, dim=1).indices
            sums[name][1] += (best[:, 0] == y).sum().item()
            sums[name][2] += (best == y[:, None]).any(1).sum().item()
        total += len(y)
        if progress is not None:
            progress.update(1)
    if total == 0:
        raise ValueError("no images to evaluate")
    diversity = {"disagreement": differ / (total * pairs), "oracle_top1": oracle / total}
    return {name: {"top1": v[1] / total, "top5": v[2] / total, "loss": v[0] / total} for name, v in sums.items()} | {
        "diversity": diversity, "images": total}


def measure_latency_ms(net: EnsembleNet, device, batch_size: int = 1, repeats: int = 30, warmup: int = 5) -> float:
    """Median wall time of one forward pass of the whole ensemble (channels_last, eval mode)."""
    from neas.cost.latency import time_forward_ms

    size = net.space.input_size
    x = torch.randn(batch_size, net.space.in_channels, size, size, device=device).contiguous(memory_format=torch.channels_last)
    return time_forward_ms(net.eval(), x, repeats, warmup)
