"""``neas evaluate``: what an ensemble is worth on a split — top-1, top-5, NLL, ECE and Brier
score of the ensemble and of every path, the anytime sub-ensembles with their costs, diversity,
MACs, params and measured latency; optionally a fitted temperature and corrupted copies of the
split — for a neas weights file (EMA weights when retrained with EMA) or a released NEAS-S/M/L
checkpoint.

    neas evaluate --checkpoint runs/retrain --split test --json
    neas evaluate --checkpoint runs/retrain --temperature fit --corruptions all --severities 1-5
    neas evaluate --official-checkpoint neas_m.pth.tar --arch neas-m \
        --data imagefolder --data-dir /data/imagenet --split val
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

from neas.data import BatchLoader, load_dataset
from neas.data.corruptions import parse_severities
from neas.data.datasets import check_same_classes
from neas.data.heldout import heldout_images, load_ood, split_source
from neas.detection.predict import evaluate_detector, format_eval
from neas.dist import local_device
from neas.ensemble.assess import EvalOptions, assess
from neas.ensemble.deployment import fit_on_heldout, heldout_description, path_logits, score_arrays
from neas.ensemble.io import EnsembleFile, load_model, update_ensemble_file
from neas.errors import NeasError
from neas.io import check_output, write_npz, write_text
from neas.records import CascadeRecord
from neas.rundir import run_kind
from neas.runfiles import MODEL, SUPERNET
from neas.schemas.evaluate import EvaluateConfig

__all__ = ["EvaluateConfig", "evaluate"]

log = logging.getLogger(__name__)


def _heldout_logits(cfg: EvaluateConfig, net, info: EnsembleFile, data, data_dir, device, what: str):
    """The (K, N, C) path logits and labels of the held-out part of the training split (the part a
    retraining with ``--holdout`` left out, seen as the test split is): what ``what`` is fitted on."""
    if cfg.official_checkpoint is not None or not info.holdout:
        raise NeasError(
            f"{what} needs the held-out part of the training split, and this model was trained on all of it; "
            "retrain with --holdout 0.1"
        )
    held = heldout_images(data, data_dir, info.holdout, net.space.input_size, cfg.decoding, info.preprocess.crop_pct)
    return path_logits(net.to(device), BatchLoader(held, cfg.batch_size, False, device=device).epoch(0))


def _temperature(cfg: EvaluateConfig, net, info: EnsembleFile, data, data_dir, device) -> dict | None:
    if cfg.temperature == "none":
        return None
    if cfg.temperature == "auto":
        return info.temperature
    logits, labels = _heldout_logits(cfg, net, info, data, data_dir, device, "--temperature fit")
    record = fit_on_heldout(net, logits, labels, heldout_description(info.holdout), order=info.order, temperature=True)
    log.info("stored the temperature in %s", update_ensemble_file(cfg.checkpoint, temperature=record["temperature"]))
    return record["temperature"]


def _cascade(cfg: EvaluateConfig, net, info: EnsembleFile, data, data_dir, device) -> CascadeRecord | None:
    """With ``--cascade``, thresholds fitted on the held-out part of the training split (never the reported
    split) and stored with the model; without, the model's stored cascade (if any)."""
    if not cfg.cascade:
        return info.cascade
    logits, labels = _heldout_logits(cfg, net, info, data, data_dir, device, "--cascade")
    where = heldout_description(info.holdout)
    record = fit_on_heldout(
        net,
        logits,
        labels,
        where,
        order=info.order,
        cascade_tolerance=cfg.cascade_tolerance,
        cascade_exit=cfg.cascade_exit,
    )
    if cfg.checkpoint is not None:
        log.info("stored the cascade in %s", update_ensemble_file(cfg.checkpoint, cascade=record["cascade"]))
    return record["cascade"]


def evaluate(cfg: EvaluateConfig) -> dict:
    net, info = load_model(cfg.checkpoint, cfg.official_checkpoint, cfg.arch)
    device = local_device(cfg.device)
    data = cfg.data or (info.data or {}).get("data")
    data_dir = cfg.data_dir or (info.data or {}).get("data_dir")
    if data is None:
        raise NeasError("--data is required for this checkpoint")
    if data == "digits" and cfg.data_dir is not None:  # the schema checks an explicit --data digits
        raise NeasError("--data-dir: the model's dataset, digits, is built in and reads no folder; drop --data-dir")
    if cfg.data_dir is None and data_dir is not None and not Path(data_dir).expanduser().is_dir():
        raise NeasError(
            f"data directory {data_dir}, recorded in the model file when it was trained, does not exist "
            "(a relative path is read from this directory); give the dataset's place with --data-dir"
        )
    if cfg.cascade and net.num_paths < 2:
        raise NeasError("--cascade needs an ensemble of at least 2 paths; this model has 1")
    crop_pct = info.preprocess.crop_pct  # the model's view of every image it is evaluated on (neas.data.preprocess)
    dataset = load_dataset(data, cfg.split, net.space.input_size, data_dir, crop_pct=crop_pct, **cfg.decoding)
    if dataset.num_classes != net.num_classes:
        raise NeasError(f"the model has {net.num_classes} classes but {data!r}/{cfg.split} has {dataset.num_classes}")
    if info.classes is not None:  # matched by name: a test folder with other classes is not scored by position
        check_same_classes(list(info.classes), dataset.classes, f"{data!r}/{cfg.split}")
    temperature = _temperature(cfg, net, info, data, data_dir, device)
    held = []  # the split's path logits and labels, and the OOD images' path logits
    options = EvalOptions(
        batch_size=cfg.batch_size,
        workers=cfg.workers,
        order=info.order,
        order_by=(info.path_order or {}).get("by", "path index"),
        temperature=temperature,
        corruptions=cfg.corruptions,
        severities=parse_severities(cfg.severities),
        corruption_seed=cfg.corruption_seed,
        latency=cfg.latency,
        desc=f"evaluate {cfg.split}",
        ood=load_ood(
            cfg.ood_data,
            cfg.ood_split,
            net.space.input_size,
            cfg.ood_data_dir,
            cfg.ood_download,
            cfg.decoding,
            crop_pct,
        ),
        ood_name=f"{cfg.ood_data}/{cfg.ood_split}",
        cascade=_cascade(cfg, net, info, data, data_dir, device),
    )
    result = assess(net, dataset, device, options, logits=held)
    result["mistakes"]["source"] = split_source(data, data_dir, cfg.split, net.space.input_size)
    if cfg.save_scores is not None:
        write_npz(cfg.save_scores, score_arrays(*held[:2], temperature and temperature["temperature"], held[2]))
    arch, view = net.arch.to_json(), info.preprocess.to_json()
    return {"split": cfg.split, "data": data, "weights": info.weights, **result, "arch": arch, "preprocessing": view}


def format_result(result: dict) -> str:
    """The human-readable table of an evaluation (``eval.json``)."""
    k = len(result["arch"]["paths"])
    lines = [f"{result['data']} / {result['split']}: {result['images']} images, {result['weights']} weights"]
    classes = len((result.get("per_class") or {}).get("classes") or []) or None
    top5 = classes is None or classes > 5  # with 5 classes or fewer, top-5 is 100 % by construction
    lines.append(f"{'':<10}{'top-1':>8}" + (f"{'top-5':>8}" if top5 else "") + f"{'NLL':>8}{'ECE':>8}{'Brier':>8}")

    def row(name, r):
        top = f"{name:<10}{100 * r['top1']:>7.2f}%" + (f"{100 * r['top5']:>7.2f}%" if top5 else "")
        return f"{top}{r['nll']:>8.4f}{100 * r['ece']:>7.2f}%{r['brier']:>8.4f}"

    for name in ["ensemble"] + [f"path{j}" for j in range(k)]:
        lines.append(row(name, result[name]))
    if "temperature" in result:
        t, c = result["temperature"], result["ensemble"]["calibrated"]
        lines.append(
            f"temperature {t['temperature']:.3f} ({t['fitted_on']}): ensemble NLL {result['ensemble']['nll']:.4f} -> "
            f"{c['nll']:.4f}, ECE {100 * result['ensemble']['ece']:.2f}% -> {100 * c['ece']:.2f}%"
        )
    if k > 1:
        d = result["diversity"]
        lines.append(
            f"paths disagree on {100 * d['disagreement']:.2f}% of the images; some path is right on "
            f"{100 * d['oracle_top1']:.2f}%"
        )
        order = result["anytime_order"]
        lines.append(f"anytime (paths by {order['by']}):")
        for entry in result["anytime"]:
            extra = f", {entry['latency_ms']:.2f} ms" if "latency_ms" in entry else ""
            lines.append(
                f"  first {len(entry['paths'])} {entry['paths']!s:<12} top-1 {100 * entry['top1']:.2f}%  NLL "
                f"{entry['nll']:.4f}  "
                f"ECE {100 * entry['ece']:.2f}%  {entry['macs'] / 1e6:.2f}M MACs{extra}"
            )
    if "corruptions" in result:
        c = result["corruptions"]
        lines.append(f"corruptions ({len(c['names'])} x severities {c['severities']}), mean:")
        for name in ["ensemble"] + [f"path{j}" for j in range(k)]:
            m = c["mean"][name]
            lines.append(f"  {name:<10} top-1 {100 * m['top1']:.2f}%  NLL {m['nll']:.4f}  ECE {100 * m['ece']:.2f}%")
    extra = (
        f", latency {result['latency_ms']:.2f} ms ({result['latency_device']}, batch 1)"
        if "latency_ms" in result
        else ""
    )
    lines.append(
        f"MACs {result['macs'] / 1e6:.2f}M, paper FLOPs {result['paper_flops'] / 1e6:.2f}M, params "
        f"{result['params'] / 1e6:.2f}M{extra}"
    )
    return "\n".join(lines)


_DETECTION_FIELDS = ("checkpoint", "split", "data_dir", "workers", "device")  # what a detection run's evaluation reads


def _check_detection_flags(cfg) -> None:
    """Refuses, in one line naming them, the options a detection run's evaluation would ignore: every
    field of the schema but :data:`_DETECTION_FIELDS` that is not at its default (``--ood-data``,
    ``--cascade``, ``--corruptions``, ``--temperature fit``, ``--data``, ``--save-scores``, ...;
    a field added to the schema later is refused too until the detection evaluation reads it)."""
    given = []
    for f in dataclasses.fields(cfg):
        if f.name in _DETECTION_FIELDS or (
            f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ):
            continue
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        if getattr(cfg, f.name) != default:
            flag = f.name.replace("_", "-")
            given.append(f"--no-{flag}" if default is True else f"--{flag}")
    if given:
        raise NeasError(
            f"{', '.join(given)}: for classification ensembles, not a detection run ({cfg.checkpoint}), "
            "which is scored with COCO box AP on its val split (--split, --data-dir, --workers and --device apply)"
        )


def _check_outputs(json_out: str | None, save_scores: str | None) -> None:
    """``--json`` and ``--save-scores`` are two files, each in an existing folder: checked before the work."""
    outputs = (("--json", json_out), ("--save-scores", save_scores))
    given = {flag: Path(out) for flag, out in outputs if out is not None and out != "-"}  # -: stdout
    if len(given) == 2 and len({out.resolve() for out in given.values()}) == 1:
        raise NeasError(f"--json and --save-scores are the same file ({json_out}); one would overwrite the other")
    for flag, out in given.items():
        if not out.resolve().parent.is_dir():
            raise NeasError(f"{flag} {out}: its folder {out.parent} does not exist; create it first")


def main(cfg, args) -> None:
    """`neas evaluate`: prints the result, or writes it as JSON (``--json``)."""
    inputs = (cfg.checkpoint, cfg.official_checkpoint)
    _check_outputs(args.json, cfg.save_scores)
    if args.json not in (None, "-"):
        check_output(args.json, inputs, args.force, "--json", inside=(MODEL, SUPERNET))
    if run_kind(cfg.checkpoint) == "detect":  # COCO box AP on its val split (or --split)
        _check_detection_flags(cfg)
        split = None if cfg.split == "test" else cfg.split  # the schema's default: the run's own val split
        result = evaluate_detector(cfg.checkpoint, cfg.device, split, cfg.data_dir, cfg.workers)
        show = format_eval
    else:
        if cfg.save_scores is not None:
            check_output(cfg.save_scores, inputs, args.force, "--save-scores", inside=(MODEL, SUPERNET))
        result, show = evaluate(cfg), format_result
    if args.json is not None:
        text = json.dumps(result, indent=1)
        if args.json == "-":
            return print(text)
        write_text(args.json, text + "\n")
    print(show(result))
