"""Benchmark 5: the retraining step of the plain ensemble with ``torch.compile`` vs eager
(both channels_last). Kept in the recipe only where it wins."""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from benchmarks.common import Result, interleaved
from neas import EnsembleArch, SearchSpace, build_ensemble

__all__ = ["compiled_retrain"]


def compiled_retrain(size: dict, device="cpu", space_name: str = "cifar") -> Result:
    space = SearchSpace.preset(space_name)
    arch = EnsembleArch.sample(space, 3)
    torch.manual_seed(0)
    eager = build_ensemble(space, arch, 10).to(device, memory_format=torch.channels_last).train()
    compiled_net = build_ensemble(space, arch, 10).to(device, memory_format=torch.channels_last).train()
    compiled_net.load_state_dict(eager.state_dict())
    x = torch.randn(size["batch"], 3, 32, 32, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (size["batch"],), device=device)

    def step_fn(net, forward):
        opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)

        def step():
            loss = sum(F.cross_entropy(lg, y) for lg in forward(x))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        return step

    forward = torch.compile(compiled_net.path_logits)
    start = time.perf_counter()
    step_fn(compiled_net, forward)()  # compiles
    compile_s = time.perf_counter() - start
    t = interleaved(
        {"compiled": step_fn(compiled_net, forward), "eager": step_fn(eager, eager.path_logits)},
        size["repeats"],
        size["warmup"],
        device,
    )
    ratio = t["eager"] / t["compiled"]
    return Result(
        "5. retrain step, torch.compile",
        "torch.compile",
        "eager",
        t["compiled"],
        t["eager"],
        "> 1.0 to keep",
        ratio,
        True,
        {"compile_s": compile_s, "keep_compile": ratio > 1.0},
    )
