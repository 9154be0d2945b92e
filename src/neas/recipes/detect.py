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

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, DistributedSampler

from neas import dist
from neas.detection.coco import coco_ap
from neas.detection.data import CocoSplit, DetectionDataset, collate, load_coco
from neas.detection.detector import DetectorSpec, build_detector, save_detector
from neas.detection.model import ensemble_body, load_backbone_net, timm_body
from neas.detection.predict import describe, format_eval, predict, score, subset
from neas.ensemble.settings import parse_feature_mode
from neas.errors import NeasError
from neas.nn.precision import full_precision
from neas.outputs import resumes
from neas.rundir import RunDir, releases_run_dir
from neas.runfiles import EVAL, PREDICTIONS
from neas.schemas.detect import DetectConfig
from neas.space import resolve_arch_and_space
from neas.train.loop import Precision, TrainStep, seed_everything, train_epoch
from neas.train.recipe import TrainingRecipe, check_global_batch, run_training

__all__ = ["DetectConfig", "detect"]

log = logging.getLogger(__name__)

_WARMUP_FACTOR = 1e-3  # the warm-up starts at lr / 1000 (torchvision's and mmdetection's)


def _setup_data(cfg: DetectConfig) -> tuple[CocoSplit, CocoSplit]:
    """The training and val splits (val checked to have the training split's categories), subsetted."""
    train = subset(load_coco(cfg.data_dir, cfg.train_split), cfg.max_train_images)
    val = subset(load_coco(cfg.data_dir, cfg.val_split, categories=train.categories), cfg.max_val_images)
    check_global_batch(len(train.images), cfg.batch_size, dist.get_world_size())  # before the run directory exists
    _check_scorable(val, cfg.max_val_images)
    return train, val


def _check_scorable(val: CocoSplit, max_images: int | None) -> None:
    """A val split that COCO AP can score: some image, some object that is not a crowd region (else every
    number is n/a after the whole training)."""
    scored = f"the first {max_images} images of " if max_images is not None else ""
    if not val.images:
        raise NeasError(f"{val.annotation_file}: val_split {val.split!r} has no images; nothing would be scored")
    if not any(not a.get("iscrowd", 0) for a in val.ground_truth["annotations"]):
        raise NeasError(
            f"{val.annotation_file}: {scored}val_split {val.split!r} holds no objects (crowd regions aside); every "
            "AP would be n/a"
        )


def _check_backbone(cfg: DetectConfig) -> tuple | None:
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
        last_conv=False,  # C5: the last stage's output (a timm network's final 1x1 conv left out)
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


@dataclass
class _Detection(TrainingRecipe):
    """Detection training as :func:`neas.train.recipe.run_training` runs it: set up by :func:`detect`."""

    cfg: DetectConfig
    run: RunDir
    model: nn.Module
    optimizer: torch.optim.Optimizer
    set_lr: object
    precision: Precision
    data: tuple  # (DetectionDataset, DistributedSampler, DataLoader) of the training split
    val: CocoSplit
    spec: DetectorSpec
    banner: str
    wrapped: nn.Module | None = None  # the model a step runs (DDP-wrapped under torchrun), made by start()

    @property
    def steps(self) -> int:
        return len(self.data[2])

    def start(self, first_epoch: int) -> str:
        self.wrapped = _wrap(self.model, self.run.device, self.run.world)
        return self.banner

    def train_one_epoch(self, epoch: int) -> dict:
        cfg, (dataset, sampler, loader) = self.cfg, self.data
        dataset.set_epoch(epoch)
        sampler.set_epoch(epoch)
        parts: dict = {}

        def forward(images, targets, step):
            losses = self.wrapped(*_to_device(images, targets, self.run.device))
            for key, value in losses.items():
                parts[key] = parts.get(key, 0.0) + full_precision(value.detach())
            return sum(losses.values()), []

        clip = self.clip if cfg.grad_clip else None
        step = TrainStep(forward, self.optimizer, self.precision, self.set_lr, after_backward=clip)
        desc = f"epoch {epoch + 1}/{cfg.epochs}"
        metrics = train_epoch(
            self.model, loader, step, epoch=epoch, steps=len(loader), device=self.run.device, desc=desc
        )
        metrics.update(dist.all_reduce_mean({k: float(v) / len(loader) for k, v in parts.items()}, self.run.device))
        return metrics

    def clip(self, step: int) -> None:
        """Clips the gradients' global norm (after unscaling them when an fp16 scaler is in use)."""
        self.precision.scaler.unscale_(self.optimizer)
        nn.utils.clip_grad_norm_(self.optimizer.param_groups[0]["params"], self.cfg.grad_clip)

    def evaluate(self, epoch: int) -> dict:
        """AP and AP50 on the val split, every ``eval_every`` epochs before the last (which eval.json scores)."""
        cfg = self.cfg
        if not (cfg.eval_every and (epoch + 1) % cfg.eval_every == 0 and epoch + 1 < cfg.epochs):
            return {}
        detections = predict(self.model, self.val, self.run.device, cfg.batch_size, cfg.workers, "val")
        result = coco_ap(self.val.ground_truth, detections)
        return {"val_AP": result["AP"], "val_AP50": result["AP50"]}

    def epoch_line(self, epoch: int, metrics: dict) -> str:
        val = f"  val AP50 {metrics['val_AP50']:.3f}" if "val_AP50" in metrics else ""
        return (
            f"epoch {epoch + 1}/{self.cfg.epochs}  loss {metrics['loss']:.4f}  lr {metrics['lr']:.4g}  "
            f"{metrics['images_per_s']:.1f} img/s{val}"
        )

    def finish(self) -> None:
        """model.safetensors + detector.json, predictions.json, eval.json and the report."""
        from neas.report.html import build_detection_report

        cfg, run = self.cfg, self.run
        save_detector(self.model, self.spec, run.path)
        detections = predict(self.model, self.val, run.device, cfg.batch_size, cfg.workers, f"evaluate {cfg.val_split}")
        run.write_json(PREDICTIONS, detections, indent=None)
        result = {**score(self.val, detections), **describe(self.spec)}
        run.write_json(EVAL, {**result, "epochs": cfg.epochs})
        log.info("%s", format_eval(result))
        build_detection_report(run.path)


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
    resume = resumes(cfg.out, cfg.resume)  # --resume of a directory not there yet just starts it
    run = RunDir.open(cfg, "detect", device, resume=resume)
    data = _setup_loader(cfg, train, run.rank, run.world)
    optimizer, set_lr, lr = _setup_optimizer(cfg, model, len(data[2]), run.world)
    banner = (
        f"detect with {cfg.backbone} {cfg.arch if cfg.backbone == 'neas' else ''}: {len(train.images)} train / "
        f"{len(val.images)} val images, {spec.num_classes} classes, {len(data[2])} steps/epoch, lr {lr:.4g}, "
        f"recipe {cfg.recipe}, device {device} x{run.world}"
    )
    precision = Precision.of(device, cfg.amp)
    run_training(_Detection(cfg, run, model, optimizer, set_lr, precision, data, val, spec, banner))
    return run.path
