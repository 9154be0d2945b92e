"""Post-hoc temperature scaling (Guo et al., 2017): one scalar T that divides the ensemble's
logits, fitted by minimising the NLL on held-out images — the held-out part of the training
split, never the split that is reported."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from neas.errors import NeasError
from neas.nn.precision import full_precision

__all__ = ["ensemble_logits", "fit_temperature"]


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, bounds: tuple[float, float] = (0.05, 20.0)) -> dict:
    """The T in ``bounds`` that minimises NLL(softmax(logits / T), labels), by L-BFGS on log T.

    Returns ``temperature``, ``images`` and the held-out ``nll_before`` / ``nll_after``.
    """
    if len(labels) == 0:
        raise NeasError("no held-out images to fit a temperature on")
    logits, labels = full_precision(logits.detach()).cpu(), labels.cpu()
    log_t = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.5, max_iter=200, line_search_fn="strong_wolfe")
    lo, hi = (torch.tensor(b).log() for b in bounds)

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(logits / log_t.clamp(lo, hi).exp(), labels)
        loss.backward()
        return loss

    optimizer.step(closure)
    t = float(log_t.detach().clamp(lo, hi).exp())
    with torch.no_grad():
        before, after = F.cross_entropy(logits, labels).item(), F.cross_entropy(logits / t, labels).item()
    if after > before:  # never worse than no scaling on the images it was fitted on
        t, after = 1.0, before
    return {"temperature": t, "images": len(labels), "nll_before": before, "nll_after": after}


@torch.no_grad()
def ensemble_logits(net, batches) -> tuple[torch.Tensor, torch.Tensor]:
    """The ensemble's (mean) logits and the labels of every image in ``batches`` (eval mode)."""
    net.eval()
    logits, labels = [], []
    for x, y in batches:
        logits.append(full_precision(net(x)).cpu())
        labels.append(y.cpu())
    return torch.cat(logits), torch.cat(labels)
