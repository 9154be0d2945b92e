"""Benchmark: one RetinaNet training step, NEAS-S backbone against timm's mobilenetv3_large_100.

    python -m benchmarks.bench_detection            # 256x256, batch 2, 7 interleaved repeats
    python -m benchmarks.bench_detection --quick    # 128x128, 2 repeats: a smoke run

Issue 27, item 8. Both detectors are ``neas.detection.model.build_retinanet`` (FPN P3-P7 of width
256, torchvision's heads and anchors) from scratch, differing only in the body: the released NEAS-S
as a plain ensemble (``mode="mean"``, maps at strides 8/16/32 after layers 8, 16 and 20) or
``mobilenetv3_large_100`` (``features_only``, the same strides). One step is forward (losses) +
backward + SGD with momentum on a batch of random images with 3 random boxes each, the images at
the detector's own size (no resize), weights and body input in channels_last; the two steps are
timed interleaved, median.

Printed: both step times, their ratio (mobilenet / NEAS-S: > 1 means NEAS-S's step is faster), and
the ratio of step time per backbone MAC (per-GMAC mobilenet / per-GMAC NEAS-S: > 1 means the NEAS-S
detector spends less time per backbone MAC). Backbone MACs are of the body alone on one image: NEAS-S's
from the project's cost model (``neas.cost``: stem + L0 + shared layers once + each path's layers,
the heads removed), checked against ``torch.utils.flop_counter.FlopCounterMode`` / 2, which also
gives mobilenet's. The step time includes the FPN and the heads, the same work for both except the
FPN's lateral 1x1 convs (160 input channels for either C5 since issue 40: mobilenet's 960 conv is
left out, as NEAS-S's is), so the per-MAC ratio charges that shared work to the backbone MACs.
"""

from __future__ import annotations

import argparse
import json
import platform

import torch

from benchmarks.common import Result, interleaved
from neas.cost import cost_table
from neas.detection.model import build_retinanet, describe_backbone, ensemble_body, load_backbone_net, timm_body

__all__ = ["SIZES", "detection_step"]

SIZES = {
    "full": {"input": 256, "batch": 2, "repeats": 7, "warmup": 2},
    "quick": {"input": 128, "batch": 2, "repeats": 2, "warmup": 1},
}
NUM_CLASSES = 10
BASELINE = "mobilenetv3_large_100"


class _ChannelsLast(torch.nn.Module):
    """A body fed channels_last input (RetinaNet's transform batches the images contiguously)."""

    def __init__(self, body: torch.nn.Module):
        super().__init__()
        self.body = body

    def forward(self, x):
        return self.body(x.contiguous(memory_format=torch.channels_last))


def _batch(size: dict, seed: int = 0):
    """``batch`` random images with 3 random boxes each (at least 8 pixels a side)."""
    gen = torch.Generator().manual_seed(seed)
    s, images, targets = size["input"], [], []
    for _ in range(size["batch"]):
        images.append(torch.rand(3, s, s, generator=gen))
        xy = torch.rand(3, 2, generator=gen) * (s - 16)
        wh = 8 + torch.rand(3, 2, generator=gen) * (s - 8 - xy)
        boxes = torch.cat([xy, (xy + wh).clamp(max=s)], 1)
        targets.append({"boxes": boxes, "labels": torch.randint(0, NUM_CLASSES, (3,), generator=gen)})
    return images, targets


def _step(model, images, targets):
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-4)

    def step():
        losses = model(images, targets)
        opt.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        opt.step()

    return step


def _neas_s(size: dict):
    """The NEAS-S detector and its body's MACs from the cost model (the heads never run)."""
    net = load_backbone_net("neas-s", num_classes_hint=NUM_CLASSES)
    table = cost_table(net.space, NUM_CLASSES, size["input"])
    macs = table.cost(net.arch).macs - net.num_paths * table.head.macs
    body, channels = ensemble_body(net, "mean")
    return body, channels, macs


def detection_step(size: dict) -> Result:
    """One detection training step (CPU) of the NEAS-S detector against the mobilenet one."""
    torch.manual_seed(0)
    neas_body, neas_channels, neas_macs = _neas_s(size)
    bodies = {"NEAS-S": (neas_body, neas_channels), BASELINE: timm_body(BASELINE)}
    models, macs = {}, {}
    for name, (body, channels) in bodies.items():
        macs[name] = describe_backbone(body, size["input"])["macs"]  # FlopCounterMode / 2
        model = build_retinanet(
            _ChannelsLast(body), channels, NUM_CLASSES, min_size=size["input"], max_size=size["input"]
        )
        models[name] = model.to(memory_format=torch.channels_last).train()
    images, targets = _batch(size)
    t = interleaved({name: _step(m, images, targets) for name, m in models.items()}, size["repeats"], size["warmup"])
    per_gmac = {name: t[name] / (macs[name] / 1e9) for name in t}  # seconds per backbone GMAC (per image)
    return Result(
        "detection step: RetinaNet NEAS-S vs mobilenetv3",
        "NEAS-S RetinaNet step",
        f"{BASELINE} RetinaNet step",
        t["NEAS-S"],
        t[BASELINE],
        "-",
        t[BASELINE] / t["NEAS-S"],
        True,
        {
            "input": size["input"],
            "batch": size["batch"],
            "neas_macs": neas_macs,
            "neas_macs_counter": macs["NEAS-S"],
            "baseline_macs": macs[BASELINE],
            "per_backbone_mac_ratio": per_gmac[BASELINE] / per_gmac["NEAS-S"],
            "neas_s_per_gmac": per_gmac["NEAS-S"],
            "baseline_s_per_gmac": per_gmac[BASELINE],
            "macs_from": "NEAS-S: neas.cost (checked against FlopCounterMode / 2); mobilenet: FlopCounterMode / 2",
        },
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_detection")
    parser.add_argument("--quick", action="store_true", help="128x128, 2 repeats: a smoke run")
    parser.add_argument("--repeats", type=int, help="interleaved repeats (default 7, quick 2)")
    parser.add_argument("--json", help="also write the result to this file")
    args = parser.parse_args(argv)
    size = dict(SIZES["quick" if args.quick else "full"])
    if args.repeats:
        size["repeats"] = args.repeats
    print(f"detection benchmark: torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.machine()}")
    r = detection_step(size)
    e = r.extra
    print(r.line())
    print(
        f"  step: NEAS-S {r.ours_s * 1e3:.1f} ms, {BASELINE} {r.baseline_s * 1e3:.1f} ms (batch {e['batch']}, "
        f"{e['input']}x{e['input']}); step-time ratio {BASELINE}/NEAS-S {r.ratio:.3f}"
    )
    print(
        f"  backbone MACs per image: NEAS-S {e['neas_macs'] / 1e6:.1f} M (cost model; counter "
        f"{e['neas_macs_counter'] / 1e6:.1f} M), {BASELINE} {e['baseline_macs'] / 1e6:.1f} M (counter)"
    )
    print(
        f"  step time per backbone GMAC: NEAS-S {e['neas_s_per_gmac']:.3f} s, {BASELINE} "
        f"{e['baseline_s_per_gmac']:.3f} s; ratio {BASELINE}/NEAS-S {e['per_backbone_mac_ratio']:.3f}"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"size": size, "result": r.to_json()}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
