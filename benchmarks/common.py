"""Side-by-side timing: interleaved runs, warm-up, medians, and one printed line per benchmark."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import torch

__all__ = ["SIZES", "Result", "interleaved"]

# --size cpu: about a minute per benchmark on 2 CPU cores; --size imagenet: GPU-scale runs.
SIZES = {
    "cpu": {"batch": 32, "imagenet_input": 96, "imagenet_batch": 8, "repeats": 7, "warmup": 2, "candidates": 16},
    "imagenet": {
        "batch": 256,
        "imagenet_input": 224,
        "imagenet_batch": 128,
        "repeats": 20,
        "warmup": 5,
        "candidates": 50,
    },
}


@dataclass
class Result:
    name: str
    ours: str  # what the ratio's numerator measures
    baseline: str
    ours_s: float  # median seconds per unit of work
    baseline_s: float
    target: str  # e.g. ">= 0.95"
    ratio: float = 0.0  # baseline_s / ours_s: > 1 means ours is faster
    ok: bool = False
    extra: dict = field(default_factory=dict)

    def line(self) -> str:
        return (
            f"{self.name:<34} ours {self.ours_s * 1e3:9.2f} ms  baseline {self.baseline_s * 1e3:9.2f} ms  "
            f"ratio {self.ratio:6.3f}  target {self.target:<7} {'OK' if self.ok else 'MISS'}   ({self.ours} vs "
            f"{self.baseline})"
        )

    def to_json(self) -> dict:
        return asdict(self)


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def interleaved(fns: dict, repeats: int, warmup: int, device="cpu") -> dict[str, float]:
    """Median seconds of each callable, timed in alternating order round after round
    (:func:`neas.cost.runtime.interleaved_ms`, with a CUDA sync after each call)."""
    from neas.cost.runtime import interleaved_ms

    def synced(fn):
        def run():
            fn()
            _sync(device)

        return run

    return {
        name: ms / 1e3
        for name, ms in interleaved_ms({name: synced(fn) for name, fn in fns.items()}, repeats, warmup).items()
    }


def dump(results: list[Result], path: str, meta: dict) -> None:
    with open(path, "w") as f:
        json.dump({"meta": meta, "results": [r.to_json() for r in results]}, f, indent=1)
