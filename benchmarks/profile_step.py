"""Where a supernet training step spends its time: a torch.profiler table.

python -m benchmarks.profile_step [--space cifar] [--batch 32] [--rows 12]
"""

from __future__ import annotations

import argparse
import random

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from neas import EnsembleArch, SearchSpace, Supernet


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile_step")
    parser.add_argument("--space", default="cifar")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rows", type=int, default=12)
    args = parser.parse_args(argv)
    space = SearchSpace.preset(args.space)
    torch.manual_seed(0)
    net = Supernet(space, 10).to(memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(args.batch, 3, space.input_size, space.input_size).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (args.batch,))
    rng = random.Random(0)

    def step():
        loss = sum(F.cross_entropy(lg, y) for lg in net(x, EnsembleArch.sample(space, rng)))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
