"""``neas detect``: detection transfer (issue 27) — a RetinaNet whose backbone is a neas ensemble (or a
timm network), trained on a COCO-format split and scored with COCO box AP on another.

    neas synth-detection --out data/detect-demo
    neas detect --config configs/detect-demo.yaml
    torchrun --nproc_per_node 8 -m neas detect --data-dir /data/coco --arch neas-s \\
        --official-checkpoint neas_s.pth.tar --recipe coco --out runs/detect-neas-s

The paper's protocol is the ``coco`` recipe (:data:`neas.schemas.detect.DETECT_PRESETS`): SGD with
momentum and weight decay on every parameter (as torchvision's detection reference), a linear warm-up
per iteration, then the learning rate x ``lr_gamma`` after each epoch of ``lr_steps``. The loss is
the sum of RetinaNet's focal classification loss and its box regression loss. Writes
``model.safetensors`` + ``detector.json`` (:mod:`neas.detection.detector`), ``predictions.json``
(COCO results), ``eval.json`` (AP, AP50, AP75, APs, APm, APl, per class), ``metrics.jsonl`` and
``report/index.html``; ``--resume`` continues from the last epoch's checkpoint, bit-identically on CPU.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, DistributedSampler
from tqdm.auto import tqdm

from neas import dist
from neas.detection.coco import STAT_NAMES, coco_ap
from neas.detection.data import CocoSplit, DetectionDataset, collate, load_coco
from neas.detection.detector import PREDICTIONS, DetectorSpec, build_detector, load_detector, save_detector
from neas.detection.export import export_detector_onnx
from neas.detection.model import ensemble_body, load_backbone_net, timm_body
from neas.errors import NeasError
from neas.io import check_output
from neas.log import MetricLogger
from neas.options import parse_feature_mode
from neas.rundir import EVAL, MODEL, RunDir, releases_run_dir
from neas.schemas.detect import DetectConfig
from neas.space import EnsembleArch, resolve_arch_and_space
from neas.train.checkpoint import save_checkpoint
from neas.train.loop import Precision, epoch_seed, resume_run, seed_everything, train_epoch

__all__ = [
    "DetectConfig",
    "detect",
    "predict",
    "score",
    "subset",
    "format_eval",
    "main",
    "evaluate_detector",
    "export_detector",
]

log = logging.getLogger(__name__)

_WARMUP_FACTOR = 1e-3  # the warm-up starts at lr / 1000 (torchvision's and mmdetection's)


def subset(data: CocoSplit, count: "int | None") -> CocoSplit:
    """The first ``count`` images of ``data`` (by id) with their targets and ground truth; all when None."""
    if count is None or count >= len(data.images):
        return data
    images = data.images[:count]
    ids = {img["id"] for img in images}
    truth = data.ground_truth
    return dataclasses.replace(
        data,
        images=images,
        targets={i: t for i, t in data.targets.items() if i in ids},
        ground_truth={
            **truth,
            "images": [img for img in truth["images"] if img["id"] in ids],
            "annotations": [a for a in truth["annotations"] if a["image_id"] in ids],
        },
    )


def _setup_data(cfg: DetectConfig) -> tuple[CocoSplit, CocoSplit]:
    """The training and val splits (val checked to have the training split's categories), subsetted."""
    train = subset(load_coco(cfg.data_dir, cfg.train_split), cfg.max_train_images)
    val = subset(load_coco(cfg.data_dir, cfg.val_split, categories=train.categories), cfg.max_val_images)
    world = dist.get_world_size()
    if len(train.images) < cfg.batch_size * world:  # refused before the run directory exists
        raise NeasError(
            f"batch_size: {cfg.batch_size} x {world} process(es) is more than the {len(train.images)} training images; "
            f"use --batch-size {max(1, len(train.images) // world)} or less"
        )
    return train, val


def _check_backbone(cfg: DetectConfig) -> "tuple | None":
    """(arch, space) of a neas backbone, checked against ``feature_mode``; None for a timm backbone."""
    if cfg.backbone != "neas":
        return None
    arch, space = resolve_arch_and_space(cfg.arch, cfg.space)
    parse_feature_mode(cfg.feature_mode, arch.num_paths)  # before the data loads (EnsembleFeatures checks it too)
    return arch, space


def _setup_model(cfg: DetectConfig, train: CocoSplit) -> tuple[nn.Module, DetectorSpec]:
    """The detector with its starting weights (the backbone's given weights, the rest seeded) and its record."""
    seed_everything(cfg.seed)  # the initial weights are a function of the seed
    if cfg.backbone == "neas":
        net = load_backbone_net(
            cfg.arch,
            backbone_weights=cfg.backbone_weights,
            official_checkpoint=cfg.official_checkpoint,
            space=cfg.space,
        )
        body, arch, space, classes = (
            ensemble_body(net, cfg.feature_mode),
            net.arch.to_json(),
            net.space,
            net.num_classes,
        )
        space = space.to_dict()
    else:
        body, arch, space, classes = timm_body(cfg.timm_name, cfg.backbone_weights), None, None, None
    spec = DetectorSpec(
        backbone=cfg.backbone,
        arch=arch,
        space=space,
        backbone_classes=classes,
        feature_mode=cfg.feature_mode,
        categories=[{"id": c["id"], "name": c["name"]} for c in train.categories],
        min_size=cfg.min_size,
        max_size=cfg.max_size,
        anchor_sizes=list(cfg.anchor_sizes),
        fpn_channels=cfg.fpn_channels,
        head_norm=cfg.head_norm,
        train_min_sizes=cfg.train_min_sizes,
        frozen_bn=cfg.frozen_bn,
        score_thresh=cfg.score_thresh,
        detections_per_img=cfg.detections_per_img,
        data={
            "data_dir": str(Path(cfg.data_dir).resolve()),  # the run moves; its data stays where it is
            "train_split": cfg.train_split,
            "val_split": cfg.val_split,
            "max_val_images": cfg.max_val_images,
            "eval_batch_size": cfg.batch_size,
        },
    )
    return build_detector(spec, body), spec


def _setup_optimizer(cfg: DetectConfig, model: nn.Module, steps: int, world: int):
    """SGD (or AdamW) on every trainable parameter with one weight decay (torchvision's detection reference
    leaves norm layers no exception unless asked), and ``set_lr(step)``: linear warm-up, then steps by epoch."""
    lr = cfg.scaled_lr(world)
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adamw":
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)
    else:
        optimizer = torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)

    def set_lr(step: int) -> None:
        factor = cfg.lr_gamma ** sum(step // steps >= s for s in cfg.lr_steps)
        if step < cfg.warmup_iters:
            factor *= _WARMUP_FACTOR + (1 - _WARMUP_FACTOR) * step / cfg.warmup_iters
        for group in optimizer.param_groups:
            group["lr"] = lr * factor

    return optimizer, set_lr, lr


def _setup_loader(cfg: DetectConfig, train: CocoSplit, rank: int, world: int):
    """The training batches: a seeded shuffle per epoch (the same on every rank, each taking its share), with
    the dataset's seeded flips unless ``flip`` is off."""
    dataset = DetectionDataset(train, train=cfg.flip, seed=cfg.seed)  # train=True: the seeded flips
    sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed)
    loader = DataLoader(
        dataset, cfg.batch_size, sampler=sampler, num_workers=cfg.workers, collate_fn=collate, drop_last=True
    )
    return dataset, sampler, loader


def _to_device(images, targets, device) -> tuple[list, list]:
    images = [image.to(device, non_blocking=True) for image in images]
    targets = [{"boxes": t["boxes"].to(device), "labels": t["labels"].to(device)} for t in targets]
    return images, targets


@torch.no_grad()
def predict(model: nn.Module, data: CocoSplit, device, batch_size: int, workers: int = 0, desc: str = "") -> list:
    """The detections of ``model`` on ``data`` in COCO results format (``bbox`` = [x, y, w, h] in the
    original image's pixels: torchvision's RetinaNet maps its boxes back; ``category_id``: the COCO id)."""
    model.eval()
    dataset = DetectionDataset(data, train=False)
    loader = DataLoader(dataset, batch_size, shuffle=False, num_workers=workers, collate_fn=collate)
    ids = [c["id"] for c in data.categories]
    results = []
    for images, targets in tqdm(loader, desc=desc, leave=False, disable=None):
        outputs = model([image.to(device) for image in images])
        for out, target in zip(outputs, targets):
            for box, score, label in zip(out["boxes"].float().cpu().tolist(), out["scores"].tolist(), out["labels"]):
                x1, y1, x2, y2 = box
                results.append(
                    {
                        "image_id": target["image_id"],
                        "category_id": ids[int(label)],
                        "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
                        "score": round(float(score), 5),
                    }
                )
    return results


def score(data: CocoSplit, detections: list) -> dict:
    """COCO box AP of ``detections`` on ``data``'s ground truth, with the image count."""
    return {"split": data.split, "images": len(data.images), **coco_ap(data.ground_truth, detections)}


@dataclass
class _Detection:
    """What every epoch uses, set up once by :func:`detect`."""

    cfg: DetectConfig
    run: RunDir
    model: nn.Module
    wrapped: nn.Module  # the model a step runs (DDP-wrapped under torchrun)
    optimizer: torch.optim.Optimizer
    set_lr: object
    precision: Precision
    data: tuple  # (DetectionDataset, DistributedSampler, DataLoader) of the training split
    val: CocoSplit
    logger: MetricLogger

    def epoch(self, epoch: int) -> None:
        cfg, (dataset, sampler, loader) = self.cfg, self.data
        seed_everything(epoch_seed(cfg.seed, epoch, self.run.rank))
        dataset.set_epoch(epoch)
        sampler.set_epoch(epoch)
        parts: dict = {}

        def forward(images, targets, step):
            losses = self.wrapped(*_to_device(images, targets, self.run.device))
            for key, value in losses.items():
                parts[key] = parts.get(key, 0.0) + value.detach().float()
            return sum(losses.values()), []

        metrics = train_epoch(
            self.model,
            loader,
            forward,
            self.optimizer,
            self.precision,
            epoch=epoch,
            steps=len(loader),
            device=self.run.device,
            set_lr=self.set_lr,
            after_backward=self.clip if cfg.grad_clip else None,
            desc=f"epoch {epoch + 1}/{cfg.epochs}",
        )
        metrics.update(dist.all_reduce_mean({k: float(v) / len(loader) for k, v in parts.items()}, self.run.device))
        if cfg.eval_every and (epoch + 1) % cfg.eval_every == 0 and epoch + 1 < cfg.epochs:
            metrics.update(self.run.on_main(self.quick_eval) or {})
        self.checkpoint(epoch, metrics)

    def clip(self, step: int) -> None:
        """Clips the gradients' global norm (after unscaling them when an fp16 scaler is in use)."""
        self.precision.scaler.unscale_(self.optimizer)
        nn.utils.clip_grad_norm_(self.optimizer.param_groups[0]["params"], self.cfg.grad_clip)

    def quick_eval(self) -> dict:
        """AP and AP50 on the val split (rank 0)."""
        detections = predict(self.model, self.val, self.run.device, self.cfg.batch_size, self.cfg.workers, "val")
        result = coco_ap(self.val.ground_truth, detections)
        return {"val_AP": result["AP"], "val_AP50": result["AP50"]}

    def checkpoint(self, epoch: int, metrics: dict) -> None:
        if self.run.main:
            steps = len(self.data[2])
            self.logger.log((epoch + 1) * steps, epoch=epoch, **metrics)
            state = {"epoch": epoch, "seed": self.cfg.seed, "scaler": self.precision.state_dict()}
            save_checkpoint(self.run, f"epoch_{epoch:04d}", self.model, self.optimizer, state)
            val = f"  val AP50 {metrics['val_AP50']:.3f}" if "val_AP50" in metrics else ""
            log.info(
                f"epoch {epoch + 1}/{self.cfg.epochs}  loss {metrics['loss']:.4f}  lr {metrics['lr']:.4g}  "
                f"{metrics['images_per_s']:.1f} img/s{val}"
            )
        dist.barrier()


def _finish(job: _Detection, spec: DetectorSpec) -> None:
    """Rank 0: model.safetensors + detector.json, predictions.json, eval.json and the report."""
    from neas.report.html import build_detection_report

    cfg, run = job.cfg, job.run
    save_detector(job.model, spec, run.path)
    detections = predict(job.model, job.val, run.device, cfg.batch_size, cfg.workers, f"evaluate {cfg.val_split}")
    run.write_json(PREDICTIONS, detections, indent=None)
    result = {**score(job.val, detections), **_describe(spec)}
    run.write_json(EVAL, {**result, "epochs": cfg.epochs})
    log.info("%s", format_eval(result))
    build_detection_report(run.path)


def _start(run: RunDir, model, optimizer, precision: Precision) -> int:
    """The first epoch to train: 0, or the one after the checkpoint a resumed run continues from."""
    if not run.resuming:
        return 0
    state = resume_run(run, model, optimizer)
    precision.load_state_dict(state.get("scaler"))
    log.info("resuming %s after epoch %d", run.path, state["epoch"] + 1)
    return state["epoch"] + 1


def _wrap(model: nn.Module, device, world: int) -> nn.Module:
    """DDP under torchrun. Every parameter takes part in a step: ``ensemble_body`` prunes the modules
    its mode never runs (the classifier heads, other paths), so no unused-parameter search is needed."""
    if world == 1:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


@releases_run_dir
def detect(cfg: DetectConfig) -> Path:
    """Runs (or resumes) the detection training and its evaluation; returns the run directory."""
    device = dist.init(cfg.device)
    _check_backbone(cfg)
    train, val = _setup_data(cfg)  # refused before the run directory exists
    model, spec = _setup_model(cfg, train)
    memory = torch.channels_last if device.type == "cuda" and cfg.channels_last else torch.contiguous_format
    model = model.to(device, memory_format=memory)
    run = RunDir.open(cfg, "detect", device)
    data = _setup_loader(cfg, train, run.rank, run.world)
    optimizer, set_lr, lr = _setup_optimizer(cfg, model, len(data[2]), run.world)
    precision = Precision.of(device, cfg.amp)
    start = _start(run, model, optimizer, precision)
    wrapped = _wrap(model, device, run.world)
    job = _Detection(cfg, run, model, wrapped, optimizer, set_lr, precision, data, val, MetricLogger(run))
    if run.main:
        log.info(
            f"detect with {cfg.backbone} {cfg.arch if cfg.backbone == 'neas' else ''}: {len(train.images)} train / "
            f"{len(val.images)} val images, {spec.num_classes} classes, {len(data[2])} steps/epoch, lr {lr:.4g}, "
            f"recipe {cfg.recipe}, device {device} x{run.world}"
        )
    for epoch in range(start, cfg.epochs):
        job.epoch(epoch)
    run.on_main(lambda: _finish(job, spec))
    job.logger.close()
    dist.barrier()
    return run.path


def format_eval(result: dict) -> str:
    """The AP table of an ``eval.json``."""

    def pct(value) -> str:
        return "  n/a" if value is None else f"{100 * value:5.1f}"

    lines = [f"{result['split']}: {result['images']} images, COCO box AP (%)"]
    lines.append("  ".join(f"{name:>5}" for name in STAT_NAMES))
    lines.append("  ".join(pct(result[name]) for name in STAT_NAMES))
    per_class = result.get("per_class") or {}
    if per_class:
        lines.append("per class: " + ", ".join(f"{name} {pct(ap).strip()}" for name, ap in per_class.items()))
    return "\n".join(lines)


def main(cfg: DetectConfig, args) -> None:
    """``neas detect``: runs it, then prints eval.json's path and its AP table (rank 0)."""
    from neas.rundir import read_json

    run = detect(cfg)
    if dist.is_main_process():
        print(f"eval: {run / EVAL}")
        print(format_eval(read_json(run / EVAL, "detection evaluation")))
    dist.cleanup()


def evaluate_detector(checkpoint, device: str = "auto", split: "str | None" = None, data_dir=None, workers: int = 0):
    """``neas evaluate --checkpoint RUN`` for a detection run: its detector scored on ``split`` (default: the
    split its eval.json scored, with the same image subset and batch size, so it reproduces eval.json)."""
    model, spec = load_detector(checkpoint)
    data = spec.data
    device = dist.local_device(device)
    categories = spec.categories
    split = split or data["val_split"]
    images = load_coco(data_dir or data["data_dir"], split, categories=categories)
    images = subset(images, data.get("max_val_images") if split == data["val_split"] else None)
    detections = predict(model.to(device), images, device, data.get("eval_batch_size", 1), workers, f"evaluate {split}")
    return {**score(images, detections), **_describe(spec)}


def _describe(spec: DetectorSpec) -> dict:
    """The backbone fields of an eval.json."""
    arch = None if spec.arch is None else str(EnsembleArch.from_json(spec.arch))
    return {"backbone": spec.backbone, "arch": arch, "feature_mode": spec.feature_mode}


def export_detector(cfg) -> str:
    """``neas export --format onnx --checkpoint RUN`` for a detection run (``cfg``: an ``ExportCommand``):
    the detector as ONNX, checked against PyTorch on two val images (random ones when the data is gone)."""
    if cfg.format != "onnx":
        raise NeasError(
            f"a detection run exports as --format onnx (its model.safetensors already is the weights), got {cfg.format}"
        )
    if cfg.paths is not None or cfg.cascade:
        raise NeasError("--paths and --cascade are for classification ensembles, not a detection run")
    check_output(cfg.out, (cfg.checkpoint,), cfg.force, inside=(MODEL,))
    model, spec = load_detector(cfg.checkpoint)
    try:
        val = load_coco(spec.data["data_dir"], spec.data["val_split"], categories=spec.categories)
        images = [DetectionDataset(val, train=False)[i][0] for i in range(min(2, len(val.images)))]
        which = f"{len(images)} {spec.data['val_split']} images"
    except NeasError as exc:
        log.warning("the val split cannot be read (%s): verifying on random images instead", exc)
        generator = torch.Generator().manual_seed(0)
        images = [torch.rand(3, spec.min_size, spec.min_size, generator=generator) for _ in range(2)]
        which = "2 random images (the val split cannot be read)"
    check = export_detector_onnx(model, cfg.out, images, opset=cfg.opset)
    return (
        f"exported the detector as onnx to {cfg.out}; verified on {which}: max |difference| from "
        f"PyTorch {check['max_abs_diff_boxes']:.2e} px (boxes), {check['max_abs_diff_scores']:.2e} (scores)"
    )
