"""The small commands — ``arch``, ``space``, ``export``, ``report``, ``subimagenet``, ``carve-test``,
``synth-detection`` — each a function of its schema (:mod:`neas.schemas.commands`) that runs it and returns
what to print.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from neas.data.carve import carve_test_split
from neas.data.subimagenet import make_subimagenet
from neas.detection.predict import export_detector
from neas.ensemble.cascade_export import export_cascade
from neas.ensemble.cascade_onnx import export_cascade_onnx
from neas.ensemble.export import export
from neas.ensemble.io import load_model
from neas.errors import NeasError, show
from neas.io import check_output, check_output_dir
from neas.options import MAX_CLASSES
from neas.rundir import run_kind
from neas.runfiles import MODEL, SUPERNET
from neas.schemas.commands import (
    ArchCommand,
    CarveTestCommand,
    ExportCommand,
    ReportCommand,
    SpaceCommand,
    SubImageNetCommand,
    SynthDetectionCommand,
)
from neas.space import SearchSpace, resolve_arch_and_space
from neas.space.arch import arch_file_record

__all__ = ["arch", "carve_test", "export_ensemble", "report", "space", "subimagenet", "synth_detection"]


def _stored_num_classes(arch_spec: str) -> int:
    """The class count an arch file was searched for (a search's ``arch.json`` says), else ImageNet's."""
    stored = arch_file_record(arch_spec).get("num_classes", 1000)
    if not isinstance(stored, int) or isinstance(stored, bool) or not 1 <= stored <= MAX_CLASSES:
        raise NeasError(
            f"{arch_spec}: field 'num_classes' must be an integer in 1..{MAX_CLASSES}, got {show(stored, 40)}"
        )
    return stored


def arch(cfg: ArchCommand) -> str:
    """Runs ``neas arch``; returns what it prints."""
    from neas.report.describe import arch_report, arch_summary

    arch, space = resolve_arch_and_space(cfg.arch, cfg.space)
    if cfg.input_size is not None:  # the space's own size checks (an absurd size is refused, not allocated)
        space = dataclasses.replace(space, input_size=cfg.input_size)
    num_classes = cfg.num_classes or _stored_num_classes(cfg.arch)
    if cfg.json:
        return json.dumps(arch_summary(space, arch, num_classes, cfg.input_size))
    return arch_report(space, arch, num_classes, cfg.input_size, title=str(cfg.arch))


def space(cfg: SpaceCommand) -> str:
    """Runs ``neas space``; returns what it prints."""
    from neas.report.describe import space_report

    space = SearchSpace.resolve(cfg.space)
    if cfg.yaml:
        return space.to_yaml()
    return space_report(space) + "\n" + _cost_range(space, cfg.num_classes)


def _cost_range(space: SearchSpace, num_classes: int) -> str:
    """What a budget can be: the MACs and params its ensembles span (and, with K > 1, the cheapest path,
    the least a cascade costs per image)."""
    from neas.cost import cost_table
    from neas.search.constraints import cheapest_path_macs
    from neas.space import ShrunkSpace

    table, full = cost_table(space, num_classes), ShrunkSpace.full(space)
    (lo, hi), (plo, phi) = table.range(full, "macs"), table.range(full, "params")
    line = (
        f"ensembles ({num_classes} classes): {lo / 1e6:.3f}M-{hi / 1e6:.3f}M MACs, {plo / 1e6:.3f}M-{phi / 1e6:.3f}M "
        "params (a budget outside is refused)"
    )
    if space.num_paths > 1:
        line += f"; a cascade costs at least {cheapest_path_macs(table, full) / 1e6:.3f}M MACs per image"
    return line


def export_ensemble(cfg: ExportCommand) -> str:
    """Runs ``neas export``; returns what it prints."""
    if run_kind(cfg.checkpoint) == "detect":
        return export_detector(cfg)
    if cfg.format == "safetensors" and cfg.opset != ExportCommand.opset:  # the default
        raise NeasError(f"--opset {cfg.opset} has no effect with --format safetensors; drop it or use --format onnx")
    if cfg.cascade:
        return _export_cascade(cfg)
    if cfg.format == "timm":
        check_output_dir(cfg.out, (cfg.checkpoint, cfg.official_checkpoint), cfg.force, writes="--format timm")
    else:
        check_output(cfg.out, (cfg.checkpoint, cfg.official_checkpoint), cfg.force, inside=(MODEL, SUPERNET))
    net, info = load_model(cfg.checkpoint, cfg.official_checkpoint, cfg.arch)
    notes = []
    whole = cfg.paths is None or cfg.paths == net.arch.num_paths
    if not whole:
        if cfg.paths > net.arch.num_paths:
            raise NeasError(f"paths: the ensemble has {net.arch.num_paths} paths, got {cfg.paths}")
        chosen, total = info.order[: cfg.paths], net.arch.num_paths
        net = net.select(chosen)
        by = (info.path_order or {}).get("by", "path index")
        for field in ("temperature", "cascade"):
            if getattr(info, field) is not None:
                notes.append(f"the stored {field} was fitted for all paths and is not carried over")
        info = dataclasses.replace(
            info,
            space=net.space,
            arch=net.arch,
            temperature=None,
            cascade=None,
            path_order={"order": list(range(cfg.paths)), "by": f"paths {chosen} of the original, by {by}"},
        )
        notes.append(f"paths {chosen} of the {total}-path ensemble")
    if cfg.raw_logits and info.temperature is not None:
        notes.append(f"raw logits: the stored temperature {info.temperature_value:.3f} is left out")
        info = dataclasses.replace(info, temperature=None)
    temperature = info.temperature_value
    if cfg.format == "timm":
        diff = _export_timm(cfg, net, info, whole)
    else:
        diff = export(net, cfg.format, cfg.out, info=info, opset=cfg.opset, temperature=temperature)
    if temperature is not None:
        where = {"onnx": "in the graph", "timm": "applied by the timm model"}.get(cfg.format, "in the metadata")
        notes.append(f"temperature {temperature:.3f} {where}")
    return (
        f"exported {cfg.format} to {cfg.out}{' (' + '; '.join(notes) + ')' if notes else ''}; "
        f"verified on a batch: max |difference| from PyTorch {diff:.2e}"
    )


def _export_timm(cfg: ExportCommand, net, info, whole: bool) -> float:
    """``neas export --format timm``: the Hub-ready folder with its model card (neas.ensemble.hub); ``whole``:
    False for some of the run's paths (``--paths``), whose test numbers the run's records do not hold."""
    from neas.ensemble.hub import export_timm
    from neas.report.card import model_card

    if cfg.opset != ExportCommand.opset:
        raise NeasError(f"--opset {cfg.opset} has no effect with --format timm; drop it")
    name = Path(cfg.out).resolve().name
    card = model_card(cfg.checkpoint, net, info, name, cfg.license, whole)
    return export_timm(net, info, cfg.out, card)


def _export_cascade(cfg: ExportCommand) -> str:
    """``neas export --format onnx --cascade [--single-file]``: the stored cascade, one ONNX file per step
    (or one ONNX graph with the later steps inside If nodes)."""
    inputs = (cfg.checkpoint, cfg.official_checkpoint)
    if cfg.single_file:
        check_output(cfg.out, inputs, cfg.force, inside=(MODEL, SUPERNET))
    else:
        check_output_dir(cfg.out, inputs, cfg.force)
    net, info = load_model(cfg.checkpoint, cfg.official_checkpoint, cfg.arch)
    if info is None or info.cascade is None:
        raise NeasError(
            "--cascade needs thresholds fitted by `neas evaluate --cascade` stored in the model file; "
            f"{cfg.checkpoint or cfg.official_checkpoint} has none"
        )
    order, thresholds = list(info.cascade.order), ", ".join(f"{t:.3f}" for t in info.cascade.thresholds)
    # one temperature rule: the logits output divided by the stored temperature, as the ensemble's ONNX file
    temperature = None if cfg.raw_logits else info.temperature_value
    scaled = "raw logits" if temperature is None else f"logits divided by the temperature {temperature:.3f}"
    scaled = f"; {scaled}" if info.temperature is not None else ""
    what = f"the {len(order)}-step cascade (paths {order}, thresholds {thresholds}{scaled})"
    if not cfg.single_file:
        diff = export_cascade(net, info.cascade, cfg.out, info=info, opset=cfg.opset, temperature=temperature)
        return (
            f"exported {what} to {cfg.out}; "
            f"verified on random images: max |difference| from PyTorch's cascade {diff:.2e}, same stops"
        )
    checked = export_cascade_onnx(net, info.cascade, cfg.out, info=info, opset=cfg.opset, temperature=temperature)
    fitted, every = checked["fitted_images"], checked["every_step_images"]
    unreached = [j for j, n in enumerate(fitted, start=1) if n == 0]
    return (
        f"exported {what} as one ONNX graph to {cfg.out}; verified at batch 1 against PyTorch's cascade: "
        f"{sum(fitted)} random images with the fitted thresholds (stopping at steps 1..{len(order)}: "
        f"{', '.join(map(str, fitted))}"
        + (f"; none can stop at step {', '.join(map(str, unreached))} with them" if unreached else "")
        + f"), {sum(every)} with thresholds that stop images at every step; "
        f"max |difference| {checked['max_diff']:.2e}, same stops"
    )


def report(cfg: ReportCommand) -> str:
    """Runs ``neas report``; returns what it prints."""
    from neas.report import build_report

    return f"report: {build_report(cfg.run)}"


def subimagenet(cfg: SubImageNetCommand) -> str:
    """Runs ``neas subimagenet``; returns what it prints."""
    listing = make_subimagenet(cfg.imagenet, cfg.out, cfg.classes, cfg.train_per_class, cfg.val_per_class, cfg.seed)
    return f"subImageNet: {len(listing['classes'])} classes in {cfg.out} (listed in {cfg.out}/classes.json)"


def carve_test(cfg: CarveTestCommand) -> str:
    """Runs ``neas carve-test``; returns what it prints."""
    listing = carve_test_split(cfg.src, cfg.out, cfg.test_fraction, cfg.split)
    test = sum(len(v) for v in listing["test"].values())
    listed = f"{cfg.out}/split.json"
    return f"carved: {listing['train']} train / {test} test images in {cfg.out} (test files listed in {listed})"


def synth_detection(cfg: SynthDetectionCommand) -> str:
    """Runs ``neas synth-detection``; returns what it prints."""
    from neas.detection.synth import write_synthetic  # scikit-learn and PIL only when the command runs

    counts = write_synthetic(
        cfg.out, splits={"train2017": cfg.train_images, "val2017": cfg.val_images}, size=cfg.size, seed=cfg.seed
    )
    listed = ", ".join(f"{n} {split}" for split, n in counts.items())
    return f"synthetic detection set: {listed} images in {cfg.out} (COCO annotations in {cfg.out}/annotations/)"
