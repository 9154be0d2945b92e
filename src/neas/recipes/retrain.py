"""Retrain the found ensemble from scratch with the released models' recipe (docs/DESIGN.md §9),
or fine-tune trained weights (``--init``, :mod:`neas.ensemble.pretrained`).

    neas retrain --arch runs/search/arch.json --data digits --out runs/retrain
    neas retrain --arch runs/search/arch.json --init runs/retrain --recipe finetune --data imagefolder \\
        --data-dir my_images --out runs/finetune
    torchrun --nproc_per_node 8 -m neas retrain --arch neas-m --data imagefolder \\
        --data-dir /data/imagenet --recipe imagenet --out runs/neas-m

Built from timm's parts: RMSpropTF, cosine schedule with warm-up, weight decay without
biases/BN, label smoothing, dropout, RandAugment, random erasing, EMA (whose weights are the
ones reported and exported). The loss is the sum of the per-path losses; the shared trunk's
gradient is divided by K. Writes ``model.safetensors``, ``eval.json``, ``metrics.jsonl``.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
from timm.layers import freeze_batch_norm_2d, unfreeze_batch_norm_2d
from timm.loss import LabelSmoothingCrossEntropy
from timm.optim import RMSpropTF, param_groups_weight_decay
from timm.scheduler import CosineLRScheduler
from timm.utils import ModelEmaV3

from neas import dist
from neas.data import Augment, BatchLoader, Training, holdout_split, load_dataset
from neas.data.corruptions import parse_severities
from neas.data.datasets import check_same_classes, evaluation_view, preprocessing_of
from neas.data.heldout import load_ood, split_source
from neas.ensemble import build_ensemble
from neas.ensemble.assess import EvalOptions, assess
from neas.ensemble.cascade import RiskUnreachable
from neas.ensemble.deployment import anytime_order, fit_on_heldout, heldout_description, path_logits
from neas.ensemble.io import save_ensemble
from neas.ensemble.metrics import evaluate_ensemble
from neas.ensemble.pretrained import InitWeights, check_init, load_init, read_init
from neas.errors import NeasError
from neas.io import read_json
from neas.nn.precision import full_precision
from neas.rundir import RunDir, releases_run_dir
from neas.runfiles import EVAL, MODEL
from neas.schemas.retrain import RetrainConfig
from neas.space import resolve_arch_and_space
from neas.train.loop import Precision, TrainStep, seed_everything, train_epoch
from neas.train.recipe import TrainingRecipe, check_global_batch, run_training, scaled_lr

__all__ = ["RetrainConfig", "retrain"]

log = logging.getLogger(__name__)


class _PathLogits(nn.Module):
    """DDP wraps this, so every path's logits come out of one forward."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net.path_logits(x)


def _setup_data(cfg: RetrainConfig, space):
    """(training split without its held-out part, evaluation split, held-out part or None);
    ``eval_split`` picks the test split or the held-out part."""
    train = load_dataset(cfg.data, "train", space.input_size, cfg.data_dir, cfg.download, **cfg.decoding)
    crop = preprocessing_of(train, space.input_size).crop_pct  # the model's evaluation view (neas.data.preprocess)
    test = (
        None
        if cfg.eval_split == "holdout"
        else load_dataset(cfg.data, "test", space.input_size, cfg.data_dir, cfg.download, crop_pct=crop, **cfg.decoding)
    )
    if test is not None:
        check_same_classes(train.classes, test.classes, f"{cfg.data} test split")
    held_out = None
    if cfg.holdout:
        keep, held = holdout_split(train.labels, cfg.holdout)
        train, held_out = train.subset(keep), evaluation_view(train, held, crop)  # held out: seen as the test split is
        test = test if test is not None else held_out
    check_global_batch(len(train), cfg.batch_size, dist.get_world_size())  # before the run directory exists
    return train, test, held_out


def _setup_loaders(cfg: RetrainConfig, space, train, test, device, rank: int, world: int):
    augment = Augment(
        pad=max(1, space.input_size // 8),
        flip=cfg.data != "digits",
        randaugment=None if cfg.randaugment == "none" else cfg.randaugment,
        erase_prob=cfg.erase_prob,
    )
    loader = BatchLoader(train, cfg.batch_size, Training(cfg.seed, augment, rank, world), device, workers=cfg.workers)
    return loader, BatchLoader(test, cfg.batch_size * 2, False, device=device, workers=cfg.workers)


def _setup_optimizer(cfg: RetrainConfig, net, steps: int, world: int):
    """The released recipe: RMSpropTF, no weight decay on biases and BN, cosine schedule with warm-up."""
    lr = scaled_lr(cfg.lr_per_2048, 2048, cfg.batch_size, world)
    optimizer = RMSpropTF(param_groups_weight_decay(net, cfg.weight_decay), lr=lr, alpha=0.9, eps=1e-3, momentum=0.9)
    scheduler = CosineLRScheduler(
        optimizer,
        t_initial=steps * cfg.epochs,
        warmup_t=steps * cfg.warmup_epochs,
        warmup_lr_init=lr * 1e-3,
        lr_min=lr * 1e-3,
        t_in_epochs=False,
    )
    return optimizer, scheduler, lr


def _setup_forward(cfg: RetrainConfig, net, steps: int, device, world: int):
    """The module a step runs: every path's logits from one forward, compiled and DDP-wrapped as configured."""
    wrapped = _PathLogits(net)
    # torch.compile: 1.13x faster steps on 2 CPU cores but ~2 minutes to compile (docs/PERFORMANCE.md),
    # so "auto" compiles only runs long enough to win it back
    if cfg.compile == "on" or (cfg.compile == "auto" and steps * cfg.epochs >= 5000):
        log.info("compiling the training forward with torch.compile")
        wrapped = torch.compile(wrapped)
    if world > 1:
        wrapped = torch.nn.parallel.DistributedDataParallel(
            wrapped, device_ids=[device.index] if device.type == "cuda" else None
        )
    return wrapped


def _setup_init(cfg: RetrainConfig, space, arch, classes: list[str]) -> InitWeights | None:
    """The ``--init`` weights, checked against the network to be trained before the run directory
    exists: a network of the same shapes is built on the meta device (no memory, no draw from the seed)."""
    if not cfg.init:
        return None
    weights = read_init(cfg.init)
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        probe = build_ensemble(space, arch, len(classes))
    check_init(weights, space, probe.state_dict(), classes)
    return weights


def _setup_model(cfg: RetrainConfig, space, arch, classes: list[str], init: InitWeights | None, device):
    """The network trained: fresh (a function of the seed), then the ``--init`` weights, then frozen BN."""
    seed_everything(cfg.seed)  # the initial weights are a function of the seed
    net = build_ensemble(space, arch, len(classes))
    if init is not None:
        log.info(load_init(net, init, classes))
    if cfg.frozen_bn:  # the frozen copies run: an ensemble finds its modules in its tree
        net = freeze_batch_norm_2d(net)
    return net.to(device, memory_format=torch.channels_last)


def _order_and_temperature(cfg: RetrainConfig, net, held_out, device) -> tuple[dict, RiskUnreachable | None]:
    """The anytime order of the paths (by top-1 on the held-out part; without one, by the search's
    held-out supernet top-1 in the arch file; else index order) and, when configured, the fitted
    temperature and cascade — all stored with the model; and why the cascade could not be fitted (its
    risk rule had no coverage to keep: the rest is fitted and stored without it), else None."""
    if held_out is not None and cfg.eval_split == "test":
        # one pass over the held-out part: its path logits serve the order, the temperature and the cascade
        logits, labels = path_logits(net, BatchLoader(held_out, cfg.batch_size * 2, False, device=device).epoch(0))
        where = heldout_description(cfg.holdout)
        fit = functools.partial(fit_on_heldout, net, logits, labels, where)
        fitted = fit(temperature=cfg.temperature in ("fit", "auto"))  # the order and temperature, fitted once
        rule = {"order": fitted["path_order"]["order"], "cascade_exit": cfg.cascade_exit}
        try:  # the cascade in that order; without it (nothing to keep), the rest is stored as fitted
            return (fitted | fit(**rule, cascade_tolerance=cfg.cascade_tolerance)) if cfg.cascade else fitted, None
        except RiskUnreachable as exc:
            return fitted, exc
    acc = _search_path_acc(cfg.arch)
    if acc:
        order = {"order": anytime_order(acc), "by": "supernet held-out top-1 in the search", "path_top1": acc}
        return {"path_order": order}, None
    return {"path_order": {"order": list(range(net.arch.num_paths)), "by": "path index"}}, None


def _search_path_acc(arch_spec: str) -> list[float] | None:
    path = Path(arch_spec)
    if not path.is_file():
        return None
    try:
        acc = read_json(path, "arch file").get("path_acc")
    except NeasError:
        return None
    return [float(a) for a in acc] if isinstance(acc, list) else None


def _test_metrics(report, test_loader, num_paths: int) -> dict:
    """The quick per-epoch test numbers (no calibration, no latency)."""
    result = evaluate_ensemble(report, test_loader.epoch(0), calibration=False)
    return {
        "test_top1": result["ensemble"]["top1"],
        "test_top5": result["ensemble"]["top5"],
        "test_nll": result["ensemble"]["nll"],
        **{f"test_top1_path{j}": result[f"path{j}"]["top1"] for j in range(num_paths)},
    }


def _finish(cfg: RetrainConfig, run: RunDir, report, data: tuple, device) -> None:
    """Writes ``model.safetensors`` (with its anytime order, temperature and cascade) and ``eval.json`` (rank 0);
    ``data``: the training split, the evaluated split, the held-out part (or None) and the OOD images (or None)."""
    train_full, test, held_out, ood = data
    if cfg.frozen_bn:  # back to BatchNorm2d (the same statistics and affine): the file's layout
        report = unfreeze_batch_norm_2d(report)
    fitted, unfitted = _order_and_temperature(cfg, report, held_out, device)
    info = save_ensemble(
        report,
        run / MODEL,
        classes=tuple(train_full.classes),
        weights="ema" if cfg.ema_decay > 0 else "raw",
        data={"data": cfg.data, "data_dir": cfg.resolved_data_dir},  # `neas evaluate` from anywhere
        recipe=cfg.recipe,
        holdout=cfg.holdout,
        preprocessing=preprocessing_of(train_full, report.space.input_size),
        **fitted,
    )
    if unfitted is not None:  # the training is kept: the cascade can be fitted later by `neas evaluate`
        raise NeasError(
            f"{unfitted}; the trained model is saved without a cascade (and not evaluated) in {run / MODEL}: "
            f"fit one by the top-1 rule with `neas evaluate --checkpoint {run.path} --cascade`"
        )
    options = EvalOptions(
        batch_size=cfg.batch_size * 2,
        workers=cfg.workers,
        order=info.order,
        order_by=info.path_order["by"],
        temperature=info.temperature,
        corruptions=cfg.corruptions,
        severities=parse_severities(cfg.severities),
        corruption_seed=cfg.corruption_seed,
        desc=f"evaluate {cfg.eval_split}",
        ood=ood,
        ood_name=f"{cfg.ood_data}/{cfg.ood_split}",
        cascade=info.cascade,
    )
    result = assess(report, test, device, options)
    holdout = cfg.holdout if cfg.eval_split == "holdout" else None
    source = split_source(cfg.data, cfg.data_dir, cfg.eval_split, report.space.input_size, holdout)
    result["mistakes"]["source"] = source  # the report shows the misclassified images from it
    view = info.preprocess.to_json()  # the record of how every image was seen, and how many it trained on
    run.write_json(EVAL, {"split": cfg.eval_split, **result, "preprocessing": view, "train_images": len(train_full)})
    log.info(
        "test: ensemble top-1 %.2f%%  (%s)",
        100 * result["ensemble"]["top1"],
        ", ".join(f"path{j} {100 * result[f'path{j}']['top1']:.2f}%" for j in range(report.arch.num_paths)),
    )


@dataclass
class _Retraining(TrainingRecipe):
    """A retraining as :func:`neas.train.recipe.run_training` runs it: set up by :func:`retrain`."""

    cfg: RetrainConfig
    run: RunDir
    model: nn.Module  # the ensemble trained
    ema: ModelEmaV3 | None
    optimizer: torch.optim.Optimizer
    scheduler: CosineLRScheduler
    precision: Precision
    loader: BatchLoader
    test_loader: BatchLoader
    data: tuple  # (training split, evaluated split, held-out part or None, OOD images or None)
    banner: str
    forward: object = None  # (x, y, step) -> (loss, path logits), made by start()

    @property
    def steps(self) -> int:
        return len(self.loader)

    @property
    def report(self) -> nn.Module:
        """The network that is evaluated and saved: the EMA's when there is one."""
        return self.ema.module if self.ema is not None else self.model

    def extra_modules(self) -> dict:
        return {"ema": self.ema.module} if self.ema is not None else {}

    def start(self, first_epoch: int) -> str:
        cfg = self.cfg
        wrapped = _setup_forward(cfg, self.model, self.steps, self.run.device, self.run.world)
        criterion = (
            LabelSmoothingCrossEntropy(cfg.label_smoothing) if cfg.label_smoothing > 0 else nn.CrossEntropyLoss()
        )

        def forward(x, y, step):
            logits = wrapped(x)
            return sum(criterion(full_precision(out), y) for out in logits), logits

        self.forward = forward
        return self.banner

    def train_one_epoch(self, epoch: int) -> dict:
        after_step = (lambda step: self.ema.update(self.model, step=step)) if self.ema is not None else None
        step = TrainStep(
            self.forward, self.optimizer, self.precision, self.scheduler.step_update, after_step=after_step
        )
        desc = f"epoch {epoch + 1}/{self.cfg.epochs}"
        return train_epoch(
            self.model, self.loader.epoch(epoch), step, epoch=epoch, steps=self.steps, device=self.run.device, desc=desc
        )

    def evaluate(self, epoch: int) -> dict:
        if (epoch + 1) % self.cfg.eval_every == 0 or epoch + 1 == self.cfg.epochs:
            return _test_metrics(self.report, self.test_loader, self.model.arch.num_paths)
        return {}

    def epoch_line(self, epoch: int, metrics: dict) -> str:
        test = f"  test top-1 {100 * metrics['test_top1']:.2f}%" if "test_top1" in metrics else ""
        return (
            f"epoch {epoch + 1}/{self.cfg.epochs}  loss {metrics['loss']:.4f}  lr {metrics['lr']:.4g}  "
            f"{metrics['images_per_s']:.0f} img/s{test}"
        )

    def finish(self) -> None:
        _finish(self.cfg, self.run, self.report, self.data, self.run.device)


@releases_run_dir
def retrain(cfg: RetrainConfig) -> Path:
    """Runs (or resumes) the retraining; returns the run directory."""
    device = dist.init(cfg.device)
    arch, space = resolve_arch_and_space(cfg.arch, cfg.space)
    if cfg.cascade and arch.num_paths < 2:
        raise NeasError(f"cascade: needs an ensemble of at least 2 paths; {cfg.arch} has 1")
    space = dataclasses.replace(space, dropout=cfg.dropout)
    train_full, test, held_out = _setup_data(cfg, space)
    # refused before the run directory exists
    init = _setup_init(cfg, space, arch, list(train_full.classes))
    crop = preprocessing_of(train_full, space.input_size).crop_pct
    ood = load_ood(
        cfg.ood_data, cfg.ood_split, space.input_size, cfg.ood_data_dir, cfg.ood_download, cfg.decoding, crop
    )
    run = RunDir.open(cfg, "retrain", device)
    loader, test_loader = _setup_loaders(cfg, space, train_full, test, device, run.rank, run.world)
    net = _setup_model(cfg, space, arch, list(train_full.classes), init, device)
    optimizer, scheduler, lr = _setup_optimizer(cfg, net, len(loader), run.world)
    ema = ModelEmaV3(net, decay=cfg.ema_decay, use_warmup=True) if cfg.ema_decay > 0 else None
    banner = (
        f"retrain {arch} in space {space.name!r}: {len(train_full)} train / {len(test)} test images, "
        f"{train_full.num_classes} classes, {len(loader)} steps/epoch, lr {lr:.4g}, recipe {cfg.recipe}, "
        f"device {device} x{run.world}"
        + (f", init {init.path}" if init is not None else "")
        + (", frozen BN" if cfg.frozen_bn else "")
    )
    data = (train_full, test, held_out, ood)
    precision = Precision.of(device, cfg.amp)
    run_training(_Retraining(cfg, run, net, ema, optimizer, scheduler, precision, loader, test_loader, data, banner))
    return run.path
