"""``neas evaluate``: ensemble and per-path top-1/top-5 and loss on a split, with MACs, params
and measured latency — for a neas weights file (EMA weights when retrained with EMA) or a
released NEAS-S/M/L checkpoint.

    neas evaluate --checkpoint runs/retrain --split test --json
    neas evaluate --official-checkpoint neas_m.pth.tar --arch neas-m --data imagefolder --data-dir /data/imagenet --split val
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import torch
from tqdm import tqdm

from neas.config import option, validate_fields
from neas.cost import count_cost
from neas.data import BatchLoader, load_dataset
from neas.data.datasets import check_same_classes
from neas.dist import local_device
from neas.ensemble.io import load_model
from neas.ensemble.metrics import evaluate_ensemble, measure_latency_ms
from neas.errors import NeasError
from neas.options import DEVICE_HELP

__all__ = ["EvaluateConfig", "evaluate"]


@dataclass
class EvaluateConfig:
    """The schema of ``neas evaluate``."""

    checkpoint: "str | None" = option(None, "a neas weights file or retrain run directory")
    official_checkpoint: "str | None" = option(None, "a released NEAS .pth.tar file")
    arch: "str | None" = option(None, "with --official-checkpoint: neas-s, neas-m or neas-l")
    data: "str | None" = option(None, "dataset", default_help="the dataset the weights were trained on")
    data_dir: "str | None" = option(None, "dataset root")
    split: str = option("test", "the split to evaluate")
    batch_size: int = option(128, "images per batch", valid=">= 1")
    device: str = option("auto", DEVICE_HELP)
    latency: bool = option(True, "measure the latency")

    def __post_init__(self):
        validate_fields(self)


def evaluate(cfg: EvaluateConfig) -> dict:
    net, meta = load_model(cfg.checkpoint, cfg.official_checkpoint, cfg.arch)
    device = local_device(cfg.device)
    data = cfg.data or json.loads(meta.get("data", "{}")).get("data")
    data_dir = cfg.data_dir or json.loads(meta.get("data", "{}")).get("data_dir")
    if data is None:
        raise NeasError("--data is required for this checkpoint")
    dataset = load_dataset(data, cfg.split, net.space.input_size, data_dir)
    if dataset.num_classes != net.num_classes:
        raise NeasError(f"the model has {net.num_classes} classes but {data!r}/{cfg.split} has {dataset.num_classes}")
    if "classes" in meta:  # matched by name: a test folder with other classes is not scored by position
        check_same_classes(json.loads(meta["classes"]), dataset.classes, f"{data!r}/{cfg.split}")
    net = net.to(device, memory_format=torch.channels_last)
    loader = BatchLoader(dataset, cfg.batch_size, False, device=device)
    with tqdm(total=len(loader), desc=f"evaluate {cfg.split}", leave=False, disable=None) as bar:
        result = evaluate_ensemble(net, loader.epoch(0), bar)
    cost = count_cost(net.space, net.arch, net.num_classes)
    out = {"split": cfg.split, "data": data, "weights": meta.get("weights", "raw"), **result, **cost.to_json(), "arch": net.arch.to_json()}
    if cfg.latency:
        out["latency_ms"] = measure_latency_ms(net, device)
        out["latency_device"] = str(device)
    return out


def format_result(result: dict) -> str:
    k = len(result["arch"]["paths"])
    lines = [f"{result['data']} / {result['split']}: {result['images']} images, {result['weights']} weights"]
    lines.append(f"{'':<10}{'top-1':>8}{'top-5':>8}{'loss':>8}")
    for name in ["ensemble"] + [f"path{j}" for j in range(k)]:
        r = result[name]
        lines.append(f"{name:<10}{100 * r['top1']:>7.2f}%{100 * r['top5']:>7.2f}%{r['loss']:>8.4f}")
    if "diversity" in result and k > 1:
        d = result["diversity"]
        lines.append(f"paths disagree on {100 * d['disagreement']:.2f}% of the images; some path is right on {100 * d['oracle_top1']:.2f}%")
    extra = f", latency {result['latency_ms']:.2f} ms ({result['latency_device']}, batch 1)" if "latency_ms" in result else ""
    lines.append(f"MACs {result['macs'] / 1e6:.2f}M, paper FLOPs {result['paper_flops'] / 1e6:.2f}M, params {result['params'] / 1e6:.2f}M{extra}")
    return "\n".join(lines)
