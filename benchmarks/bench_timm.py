"""Benchmark 6: training steps side by side against timm's mobile networks.

The released NEAS-M (``imagenet`` space) as a plain ensemble and as the supernet running it,
against timm's ``efficientnet_b0`` and ``mobilenetv3_large_100``, with one recipe (SGD with
momentum, channels_last, autocast on CUDA, the same batch and resolution), timed interleaved.
Networks of different sizes compare by MAC-throughput (images/s x MACs per image, MACs counted
the same way for all: ``torch.utils.flop_counter`` forward FLOPs / 2), relative to
``efficientnet_b0``: the printed ratio is ours / efficientnet_b0 (> 1: ours turns more MACs per
second).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from benchmarks.common import Result, interleaved
from neas import SearchSpace, Supernet, build_ensemble
from neas.space import resolve_arch_and_space
from neas.train.loop import autocast

__all__ = ["forward_macs", "versus_timm"]


def forward_macs(model: torch.nn.Module, x: torch.Tensor) -> float:
    """MACs per image of one forward pass (FLOP counter / 2), the same counter for every model."""
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x[:1])
    model.train()
    return counter.get_total_flops() / 2


def _step(model, forward, x, y, device):
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=4e-5)

    def step():
        with autocast(torch.device(device)):
            out = forward(x)
            outs = out if isinstance(out, (list, tuple)) else [out]
            loss = sum(F.cross_entropy(o.float(), y) for o in outs)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def versus_timm(size: dict, device="cpu") -> list[Result]:
    import timm

    arch, space = resolve_arch_and_space("neas-m", None)
    space = SearchSpace.from_dict({**space.to_dict(), "input_size": size["imagenet_input"]})
    batch = size["imagenet_batch"]
    torch.manual_seed(0)
    x = torch.randn(batch, 3, space.input_size, space.input_size, device=device).contiguous(
        memory_format=torch.channels_last
    )
    y = torch.randint(0, 1000, (batch,), device=device)

    def prep(m):
        return m.to(device, memory_format=torch.channels_last).train()

    supernet = prep(Supernet(space, 1000))
    plain = prep(build_ensemble(space, arch, 1000))
    models = {
        "efficientnet_b0": prep(timm.create_model("efficientnet_b0", num_classes=1000)),
        "mobilenetv3_large_100": prep(timm.create_model("mobilenetv3_large_100", num_classes=1000)),
        "NEAS-M plain ensemble": plain,
    }
    steps = {name: _step(m, m, x, y, device) for name, m in models.items()}
    steps["NEAS-M plain ensemble"] = _step(plain, plain.path_logits, x, y, device)
    steps["NEAS-M on the supernet"] = _step(supernet, lambda x: supernet(x, arch), x, y, device)
    macs = {name: forward_macs(m, x) for name, m in models.items()}
    macs["NEAS-M on the supernet"] = macs["NEAS-M plain ensemble"]
    t = interleaved(steps, size["repeats"], size["warmup"], device)
    per_gmac = {name: t[name] / (batch * macs[name] / 1e9) for name in steps}  # seconds per GMAC trained
    base = "efficientnet_b0"
    results = []
    for name, target in (
        ("NEAS-M plain ensemble", ">= 0.9"),
        ("NEAS-M on the supernet", ">= 0.85"),
        ("mobilenetv3_large_100", "-"),
    ):
        ratio = per_gmac[base] / per_gmac[name]
        results.append(
            Result(
                f"6. ms per GMAC trained: {name}",
                name,
                base,
                per_gmac[name],
                per_gmac[base],
                target,
                ratio,
                target == "-" or ratio >= float(target.split()[-1]),
                {
                    "batch": batch,
                    "input": space.input_size,
                    "images_per_s": batch / t[name],
                    "baseline_images_per_s": batch / t[base],
                    "macs": macs[name],
                    "baseline_macs": macs[base],
                    "unit": "seconds per GMAC trained",
                },
            )
        )
    return results
