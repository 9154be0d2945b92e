"""What the report says in words before its figures (issue 39): the data, the result in one line
with its binomial 95 % CI, and flags computed from the run's records.

Every number comes from a record: ``config.yaml`` (the dataset), the search's ``arch.json`` (the
space's input size, the held-out score), the retraining's ``eval.json`` (test images, scores,
per-class accuracy, the temperature and the images it was fitted on) and its metric lines (the
optimizer steps).
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from pathlib import Path

from neas.data.preprocess import Preprocessing
from neas.errors import NeasError
from neas.fields import load_yaml
from neas.log import MetricLogger
from neas.records import ArchRecord, EvalRecord
from neas.runfiles import CONFIG, EVAL, PipelineLayout

__all__ = ["FEW_STEPS", "FEW_TEMPERATURE_IMAGES", "HELD_OUT_GAP", "Flag", "flags", "header", "wilson_ci"]

FEW_STEPS = 300  # a retraining shorter than this many optimizer steps is flagged
FEW_TEMPERATURE_IMAGES = 500  # a temperature fitted on fewer held-out images is flagged
HELD_OUT_GAP = 0.10  # held-out top-1 this far (10 points) above test, and above test's CI, is flagged

# how each dataset's images reach the model's input size (neas.data.datasets)
_RESIZE = {
    "digits": "8x8 digits resized once to {s} x {s} (bilinear, antialiased)",
    "cifar10": "resized once to {s} x {s} (bilinear, antialiased)",
    "cifar100": "resized once to {s} x {s} (bilinear, antialiased)",
    "svhn": "resized once to {s} x {s} (bilinear, antialiased)",
    "imagefolder": "evaluation: {evaluation}; training: augmented from the whole short side",
}


def wilson_ci(correct: float, n: int, z: float = 1.959964) -> tuple[float, float]:
    """The Wilson score 95 % interval of a proportion: ``correct`` successes out of ``n`` (a fraction
    times ``n`` is fine); (0, 1) when ``n`` is 0. It always holds the proportion itself: at 0 or 1 the
    formula's bound can miss it by a rounding error (``wilson_ci(10, 10)`` computed 1 - 1e-16), which
    would give an error bar a negative length."""
    if n <= 0:
        return 0.0, 1.0
    p = min(max(correct / n, 0.0), 1.0)
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return min(p, max(0.0, centre - half)), max(p, min(1.0, centre + half))


@dataclass(frozen=True)
class Flag:
    """One warning line of the report: ``name`` (stable, for tests) and the sentence."""

    name: str
    text: str


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def _retrain_steps(run: Path) -> int | None:
    """The optimizer steps the retraining ran (its last metric line's step), None when it logged none."""
    lines = [m for m in MetricLogger.read(PipelineLayout(run).retrain) if "step" in m]
    return int(lines[-1]["step"]) if lines else None


def _below_path(result: EvalRecord, n: int) -> Flag | None:
    best = max(range(len(result.paths)), key=lambda j: result.path_top1[j], default=None)
    if best is None or result.top1 >= result.path_top1[best]:
        return None
    return Flag(
        "ensemble_below_path",
        f"The ensemble ({_pct(result.top1)}) scores below its best path, path {best} "
        f"({_pct(result.path_top1[best])}), on the {n} test images: averaging the paths does not help here.",
    )


def _held_out_above_test(chosen: ArchRecord | None, result: EvalRecord, n: int) -> Flag | None:
    if chosen is None or chosen.supernet_acc is None:
        return None
    gap, high = chosen.supernet_acc - result.top1, wilson_ci(result.top1 * n, n)[1]
    if gap < HELD_OUT_GAP or chosen.supernet_acc <= high:
        return None
    return Flag(
        "held_out_above_test",
        f"Held-out top-1 with supernet weights ({_pct(chosen.supernet_acc)}) is {100 * gap:.1f} points above "
        f"test ({_pct(result.top1)}, 95 % CI up to {_pct(high)}): the retraining may be too short, or the "
        "held-out images easier than test.",
    )


def _few_temperature_images(result: EvalRecord) -> Flag | None:
    fitted = result.get("temperature") or {}
    if fitted.get("images") is None or fitted["images"] >= FEW_TEMPERATURE_IMAGES:
        return None
    return Flag(
        "few_temperature_images",
        f"The temperature {fitted.get('temperature', float('nan')):.3f} was fitted on only {fitted['images']} "
        f"held-out images (fewer than {FEW_TEMPERATURE_IMAGES}): its calibrated scores are noisy and may be "
        "worse than none.",
    )


def _short_retrain(run: Path | None) -> Flag | None:
    steps = _retrain_steps(run) if run is not None else None
    if steps is None or steps >= FEW_STEPS:
        return None
    return Flag(
        "short_retrain",
        f"The retraining ran {steps} optimizer steps in all (fewer than {FEW_STEPS}): the test score is "
        "likely far from what this ensemble can reach; retrain longer.",
    )


def flags(run: Path | None, chosen: ArchRecord | None, result: EvalRecord | None) -> list[Flag]:
    """The report's flags: ensemble below its best path on test, held-out far above test, a short
    retraining, a temperature fitted on few images."""
    found = [_short_retrain(run)]
    if result is not None:
        n = int(result.get("images") or 0)
        found += [_below_path(result, n), _held_out_above_test(chosen, result, n), _few_temperature_images(result)]
    return [f for f in found if f is not None]


def _data_lines(run: Path, chosen: ArchRecord | None, result: EvalRecord | None) -> list[str]:
    """The data: dataset, classes, images per split, input size and the resize rule, as recorded."""
    config = load_yaml(run / CONFIG) if (run / CONFIG).is_file() else {}
    name = str(config.get("data", "unknown"))
    where = f" ({html.escape(str(config['data_dir']))})" if config.get("data_dir") else ""
    lines = [f"<li>data: <b>{html.escape(name)}</b>{where}</li>"]
    per_class = (result.get("per_class") or {}) if result else {}
    classes = per_class.get("classes") or []
    if classes:
        shown = ", ".join(map(str, classes[:20])) + (", ..." if len(classes) > 20 else "")
        lines.append(f"<li>{len(classes)} classes: {html.escape(shown)}</li>")
    splits = []
    if result is not None and result.get("train_images"):  # the whole training split, held-out part included
        splits.append(f"train: {result.get('train_images')}")
    if result is not None and result.get("images"):
        splits.append(f"{result.get('split', 'test')}: {result.get('images')}")
    fitted = (result.get("temperature") or {}) if result else {}
    if fitted.get("images"):
        uses = "temperature, anytime order" + (", cascade" if result.get("cascade") else "")
        splits.append(f"held out of train ({uses}): {fitted['images']}")
    if splits:
        lines.append(f"<li>images: {html.escape('; '.join(splits))}</li>")
    size = ((chosen.get("space") or {}).get("input_size")) if chosen else None
    if size:
        rule = _RESIZE.get(name, "as the dataset loader decodes it").format(s=size, evaluation=_evaluation_view(result))
        lines.append(f"<li>input {size} x {size}; {html.escape(rule)}</li>")
    return lines


def _evaluation_view(result: EvalRecord | None) -> str:
    """The evaluation transform the retraining recorded (eval.json's ``preprocessing``, the model's own)."""
    recorded = result.get("preprocessing") if result is not None else None
    if recorded is None:
        return "timm's resize and centre crop (not recorded by this older run)"
    try:
        return Preprocessing.from_json(recorded, EVAL).describe()
    except NeasError as exc:
        return f"unreadable ({exc})"


def _verdict(result: EvalRecord) -> str:
    """The result in one line: test top-1 with its Wilson 95 % CI, vs the best path and chance."""
    n = int(result.get("images") or 0)
    low, high = wilson_ci(result.top1 * n, n)
    classes = len((result.get("per_class") or {}).get("classes") or [])
    chance = f"; chance {_pct(1 / classes)}" if classes else ""
    best = f"; best path {_pct(max(result.path_top1))}" if result.paths else ""
    return (
        f"<p class='verdict'>Test top-1 of the ensemble: <b>{_pct(result.top1)}</b> "
        f"(95 % CI {_pct(low)} – {_pct(high)}, Wilson, n = {n} images{best}{chance})</p>"
    )


def header(run: Path, chosen: ArchRecord | None, result: EvalRecord | None) -> list[str]:
    """The report's first section: the data, the verdict with its CI, and the flags."""
    parts = ["<h2>Data</h2><ul>" + "".join(_data_lines(run, chosen, result)) + "</ul>"]
    if result is not None:
        parts.append(_verdict(result))
    raised = flags(run, chosen, result)
    if raised:
        items = "".join(f"<li class='flag' data-flag='{f.name}'>⚠ {html.escape(f.text)}</li>" for f in raised)
        parts.append(f"<h3>Flags</h3><ul class='flags'>{items}</ul>")
    return parts
