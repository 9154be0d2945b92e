"""Measured latency: a per-(layer, op) table timed on the machine in use (docs/DESIGN.md §5).

Each piece (stem + L0, every layer's every op, one head) is timed alone on an input of the
shape it sees in the network, as the median of repeated runs after warm-up. An ensemble's
latency is the sum of its pieces, counting shared layers once; the K paths are summed
(``sequential``, one device running them in turn) or max-ed (``parallel``).
"""

from __future__ import annotations

import json
import logging
import platform
import statistics
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from neas.config import option, validate_fields
from neas.cost.table import walk_pieces
from neas.errors import NeasError
from neas.nn import make_classifier, make_conv_head, make_last_block, pool_classify
from neas.options import DEVICE_HELP
from neas.space import EnsembleArch, SearchSpace

__all__ = ["LatencyTable", "measure_latency_table", "time_forward_ms", "LatencyTableCommand"]


class _Head(nn.Module):
    def __init__(self, space: SearchSpace, num_classes: int):
        super().__init__()
        self.last_block, self.conv_head = make_last_block(space), make_conv_head(space)
        self.classifier, self.dropout = make_classifier(space, num_classes), space.dropout

    def forward(self, x):
        return pool_classify(self.last_block(x), self.conv_head, self.classifier, self.dropout, False)[0]


def time_forward_ms(module, x: torch.Tensor, repeats: int = 20, warmup: int = 3) -> float:
    """Median wall time (ms) of ``repeats`` timed calls of ``module(x)`` without gradients, after
    ``warmup`` calls (``torch.utils.benchmark.Timer``: it synchronises CUDA around each)."""
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # importing the Timer warns about CUDA_HOME on CPU builds
    from torch.utils.benchmark import Timer

    timer = Timer("module(x)", globals={"module": module, "x": x}, num_threads=torch.get_num_threads())
    with torch.no_grad():
        timer.timeit(warmup)
        return statistics.median(timer.timeit(1).median for _ in range(repeats)) * 1e3


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu:{platform.processor() or platform.machine()}:{torch.get_num_threads()}threads"


@dataclass
class LatencyTable:
    """Latency in milliseconds of each piece of a space on one device and batch size."""

    space_name: str
    device: str
    batch_size: int
    input_size: int
    fixed_ms: float
    layers_ms: list[dict[str, float]]  # [layer][op name]
    head_ms: float

    def latency_ms(self, arch: EnsembleArch, mode: str = "sequential") -> float:
        shared = self.fixed_ms + sum(self.layers_ms[i][str(op)] for i, op in enumerate(arch.shared))
        paths = [
            sum(self.layers_ms[arch.split + j][str(op)] for j, op in enumerate(arch.private(k))) + self.head_ms
            for k in range(arch.num_paths)
        ]
        return shared + (sum(paths) if mode == "sequential" else max(paths))

    def bounds(self, shrunk, mode: str = "sequential") -> tuple[float, float]:
        """Bounds on the latency of the ensembles of a shrunk space: exact for ``sequential`` paths
        (latency adds up layer by layer); for ``parallel`` ones, the slowest path is at least the
        mean of the paths and at most their sum."""
        space, k = shrunk.space, shrunk.space.num_paths
        lows, highs = [], []
        for s in space.split_points:
            shared_lo = shared_hi = private_lo = private_hi = 0.0
            for spec in space.layers:
                entry = self.layers_ms[spec.index - 1]
                if spec.index <= s:
                    times = [entry[str(op)] for op in shrunk.shared_ops(spec.index)]
                    shared_lo, shared_hi = shared_lo + min(times), shared_hi + max(times)
                else:
                    times = [sum(entry[str(op)] for op in combo) for combo in shrunk.layer_combinations(spec.index)]
                    private_lo, private_hi = private_lo + min(times), private_hi + max(times)
            base = self.fixed_ms
            if mode == "sequential":
                lows.append(base + shared_lo + private_lo + k * self.head_ms)
                highs.append(base + shared_hi + private_hi + k * self.head_ms)
            else:
                lows.append(base + shared_lo + private_lo / k + self.head_ms)
                highs.append(base + shared_hi + private_hi + self.head_ms)
        return min(lows), max(highs)

    def to_json(self) -> dict:
        return dict(self.__dict__)

    def save(self, path: "str | Path") -> None:
        from neas.train.checkpoint import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_json(), indent=1) + "\n")

    @staticmethod
    def load(path: "str | Path") -> "LatencyTable":
        try:
            return LatencyTable(**json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError, TypeError) as exc:
            raise NeasError(f"{path}: not a latency table ({exc})") from None


def measure_latency_table(
    space: SearchSpace,
    num_classes: int = 1000,
    device: "str | torch.device" = "cpu",
    batch_size: int = 1,
    repeats: int = 20,
    warmup: int = 3,
    progress=None,
) -> LatencyTable:
    """Times every piece of ``space`` on ``device`` (channels_last, eval mode)."""
    device = torch.device(device)
    fmt = torch.channels_last

    def prep(m):
        return m.to(device, memory_format=fmt).eval()

    x = torch.randn(batch_size, space.in_channels, space.input_size, space.input_size, device=device).contiguous(memory_format=fmt)

    def measure(modules, x):
        module = prep(nn.Sequential(*modules))
        ms = time_forward_ms(module, x, repeats, warmup)
        with torch.no_grad():
            out = module(x)
        if progress is not None and len(modules) == 1:
            progress.update(1)
        return ms, out

    fixed_ms, layers, x = walk_pieces(space, x, measure, 0.0)
    layers = [{str(op): ms for op, ms in entry.items()} for entry in layers]
    head_ms = time_forward_ms(prep(_Head(space, num_classes)), x, repeats, warmup)
    return LatencyTable(space.name, device_name(device), batch_size, space.input_size, fixed_ms, layers, head_ms)


def check_table(table: LatencyTable, space: SearchSpace) -> LatencyTable:
    if len(table.layers_ms) != space.num_layers or any(
        set(entry) != {str(op) for op in spec.ops} for entry, spec in zip(table.layers_ms, space.layers)
    ):
        raise NeasError(f"latency table of space {table.space_name!r} does not fit space {space.name!r}")
    return table


@dataclass
class LatencyTableCommand:
    """measure the per-(layer, op) latency table of a space on this machine"""

    space: str = option(None, "search space preset or YAML file", required=True)
    out: str = option(None, "JSON file to write", required=True)
    num_classes: int = option(1000, "classifier outputs", valid=">= 1")
    batch_size: int = option(1, "images per timed forward", valid=">= 1")
    repeats: int = option(20, "timed runs per piece (the median is kept)", valid=">= 1")
    device: str = option("auto", DEVICE_HELP)
    force: bool = option(False, "overwrite an existing --out")

    def __post_init__(self):
        validate_fields(self)

    def __call__(self) -> str:
        from tqdm import tqdm

        from neas.dist import local_device
        from neas.space import SearchSpace
        from neas.train.checkpoint import check_output

        check_output(self.out, (self.space,), self.force)
        space = SearchSpace.resolve(self.space)
        total = sum(1 for spec in space.layers for op in spec.ops if not op.is_skip)
        with tqdm(total=total, desc="latency table", disable=None) as bar:
            table = measure_latency_table(space, self.num_classes, local_device(self.device), self.batch_size, self.repeats, progress=bar)
        table.save(self.out)
        return f"latency table of {space.name!r} on {table.device}: {self.out}"
