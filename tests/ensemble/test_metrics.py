import random

import torch
import torch.nn.functional as F

from neas.ensemble import build_ensemble
from neas.ensemble.metrics import evaluate_ensemble
from neas.space import EnsembleArch, SearchSpace


def test_evaluate_ensemble_against_a_direct_computation():
    space = SearchSpace.from_dict({**SearchSpace.preset("tiny").to_dict(), "num_paths": 3})
    net = build_ensemble(space, EnsembleArch.sample(space, random.Random(1)), 10).eval()
    x, y = torch.randn(24, 3, 32, 32), torch.randint(10, (24,))
    result = evaluate_ensemble(net, [(x[:10], y[:10]), (x[10:], y[10:])])  # batches of unequal size
    with torch.no_grad():
        logits = net.path_logits(x)
    mean = torch.stack(logits).mean(0)
    assert result["images"] == 24
    assert result["ensemble"]["top1"] == (mean.argmax(1) == y).double().mean().item()
    assert abs(result["ensemble"]["nll"] - F.cross_entropy(mean, y).item()) < 1e-5
    preds = [l.argmax(1) for l in logits]
    for j in range(3):
        assert result[f"path{j}"]["top1"] == (preds[j] == y).double().mean().item()
        assert result[f"path{j}"]["top5"] == (logits[j].topk(5, 1).indices == y[:, None]).any(1).double().mean().item()
    pairs = [(0, 1), (0, 2), (1, 2)]
    expected = sum((preds[i] != preds[j]).double().mean().item() for i, j in pairs) / 3
    assert abs(result["diversity"]["disagreement"] - expected) < 1e-9
    assert result["diversity"]["oracle_top1"] == torch.stack([p == y for p in preds]).any(0).double().mean().item()
    assert result["diversity"]["oracle_top1"] >= max(result[f"path{j}"]["top1"] for j in range(3))
