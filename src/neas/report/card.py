"""The model card of an exported ensemble: ``README.md`` of ``neas export --format timm`` (issue 38, item 2).

YAML front matter for the Hugging Face Hub (``library_name: timm``, tags, license, datasets, metrics and a
``model-index`` with the test scores), then the body: how to load and feed the model (its recorded
preprocessing), the architecture (the ``neas arch`` diagram), costs with the measured latency and its
device, test top-1 / NLL / ECE / Brier before and after the temperature, the OOD, selective-prediction,
cascade and corruption numbers when the evaluation has them, and the search's provenance: space, budget,
seeds, supernet / shrinking / evolution / retraining settings, data and split sizes, and the ``neas
compare`` answer when the run belongs to a comparison.

Every number comes from a record the run wrote, located from the exported weights file
(:func:`locate`): the retraining's ``eval.json`` and ``config.yaml``, the search's ``arch.json`` and
``config.yaml``, the supernet's ``config.yaml`` and shrinking rounds, ``neas run``'s ``config.yaml``, and a
surrounding ``compare.json``. None is trusted: every value read is checked (type, range, finiteness) and a
bad one is a :class:`~neas.errors.NeasError` naming the file and the field; text is escaped for Markdown.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import yaml

from neas.cost import count_cost
from neas.ensemble.io import EnsembleFile, model_file
from neas.errors import NeasError, show
from neas.fields import load_yaml
from neas.io import read_json
from neas.records import EvalRecord, check_temperature, read_arch, read_eval
from neas.report.compare import answer
from neas.report.describe import arch_report
from neas.runfiles import ARCH, COMPARE, CONFIG, EVAL, MARKER, SHRINK_ROUNDS, PipelineLayout

__all__ = ["Sources", "locate", "model_card"]

SUPERNET_KEYS = (
    "epochs",
    "batch_size",
    "lr",
    "warmup_epochs",
    "shrink",
    "shrink_every",
    "shrink_drop",
    "shrink_until",
    "shrink_samples",
    "shrink_beta",
    "shrink_gamma",
    "bn_batches",
    "probe_images",
    "holdout",
    "decode",
    "seed",
)
SEARCH_KEYS = (
    "strategy",
    "objective",
    "pareto",
    "population",
    "parents",
    "generations",
    "mutations",
    "crossovers",
    "p_split",
    "p_layer",
    "evaluations",
    "split",
    "bn_batches",
    "seed",
)
RETRAIN_KEYS = (
    "recipe",
    "epochs",
    "batch_size",
    "lr_per_2048",
    "warmup_epochs",
    "weight_decay",
    "label_smoothing",
    "dropout",
    "randaugment",
    "erase_prob",
    "ema_decay",
    "holdout",
    "temperature",
    "decode",
    "seed",
)


# ---- reading records, checked ----------------------------------------------------------------------------


def _text(value, limit: int = 80) -> str:
    """A value from a file, safe inside Markdown: one line, no table or code delimiters, at most ``limit``."""
    text = " ".join(str(value).split())
    for bad, good in (("|", "/"), ("`", "'"), ("<", "&lt;"), (">", "&gt;")):
        text = text.replace(bad, good)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _num(record: dict | None, key: str, where: str, low: float = -math.inf, high: float = math.inf) -> float | None:
    """``record[key]``: None when absent (or null); else a finite number in [low, high], or NeasError."""
    value = (record or {}).get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise NeasError(f"{where}: field {key!r} must be a number in [{low:g}, {high:g}], got {show(value, 60)}")
    return float(value)


def _block(record: dict | None, key: str, where: str) -> dict | None:
    value = (record or {}).get(key)
    if value is not None and not isinstance(value, dict):
        raise NeasError(f"{where}: field {key!r} must be an object, got {type(value).__name__}")
    return value


def _scalar(value, where: str, key: str) -> str:
    """A config value as shown: a number, a word, a flag, null, or a short list of those."""
    if isinstance(value, list) and len(value) <= 8:
        return "[" + ", ".join(_scalar(v, where, key) for v in value) + "]"
    if value is None or isinstance(value, (bool, str)):
        return _text(value, 60)
    if isinstance(value, (int, float)) and math.isfinite(value):
        return f"{value:g}" if isinstance(value, float) else str(value)
    raise NeasError(f"{where}: field {key!r} must be a number, a word or a short list, got {show(value, 60)}")


def _settings(path: Path | None, keys: tuple[str, ...]) -> str | None:
    """``key value, ...`` of a stage's ``config.yaml``, for the keys it has."""
    if path is None or not path.is_file():
        return None
    config = load_yaml(path)
    return ", ".join(f"{k} {_scalar(config[k], str(path), k)}" for k in keys if config.get(k) is not None)


@dataclass(frozen=True)
class Sources:
    """The records behind an exported model, where they exist (None where not)."""

    model: Path
    retrain: Path | None = None  # the retraining run directory
    run: Path | None = None  # the `neas run` directory around it
    arch: Path | None = None  # the search's arch.json
    supernet: Path | None = None  # the supernet run directory
    compare: Path | None = None  # compare.json of a comparison the run belongs to


def _resolve(recorded, bases: list[Path]) -> Path | None:
    """A path a config recorded (relative to the directory the command ran in), found from ``bases``."""
    if not isinstance(recorded, str) or not recorded:
        return None
    for base in bases:
        candidate = base / recorded
        if candidate.exists():
            return candidate
    return None


def _run_cwd(run: Path) -> list[Path]:
    """Where a run's recorded relative paths point: the directory it ran in (its marker's ``cwd``), else here."""
    marker = run / MARKER
    cwd = read_json(marker, "run marker").get("cwd") if marker.is_file() else None
    return [Path(cwd), Path.cwd()] if isinstance(cwd, str) else [Path.cwd()]


def locate(source: str | Path) -> Sources:
    """The records around the weights ``source`` names (a file, a retraining or a ``neas run`` directory)."""
    model = model_file(source)
    retrain = model.parent if (model.parent / EVAL).is_file() else None
    if retrain is None:
        return Sources(model)
    run = retrain.parent if PipelineLayout(retrain.parent).retrain.name == retrain.name else None
    if run is not None and not (run / CONFIG).is_file():
        run = None
    config = load_yaml(retrain / CONFIG) if (retrain / CONFIG).is_file() else {}
    arch = _resolve(config.get("arch"), _run_cwd(retrain))
    if arch is None and run is not None and (PipelineLayout(run).search / ARCH).is_file():
        arch = PipelineLayout(run).search / ARCH
    supernet = None
    if arch is not None and arch.is_file():
        supernet = _resolve(read_arch(arch).get("supernet"), _run_cwd(arch.parent))
    if supernet is None and run is not None and PipelineLayout(run).supernet.is_dir():
        supernet = PipelineLayout(run).supernet
    top = run or retrain
    compare = top.parent / COMPARE if (top.parent / COMPARE).is_file() else None
    return Sources(model, retrain, run, arch if arch and arch.is_file() else None, supernet, compare)


# ---- the card's parts ---------------------------------------------------------------------------------------


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f} %"


def _fmt(x: float | None, spec: str = ".4f", scale: float = 1.0) -> str:
    return "n/a" if x is None else format(x * scale, spec)


def _score_row(name: str, block: dict | None, where: str) -> str:
    top1 = _num(block, "top1", where, 0, 1)
    nll, ece = _num(block, "nll", where, 0), _num(block, "ece", where, 0, 1)
    brier = _num(block, "brier", where, 0, 2)
    cells = [_pct(top1), _fmt(nll), _pct(ece), _fmt(brier)]
    return f"| {name} | " + " | ".join(cells) + " |"


def _scores(result: EvalRecord, where: str, k: int) -> list[str]:
    """Test top-1 / NLL / ECE / Brier of the ensemble (raw and at the temperature) and of every path."""
    split, n = _text(result.get("split", "test"), 20), _num(result.raw, "images", where, 0)
    lines = [
        f"## Test results ({split} split, {n:.0f} images)" if n else "## Test results",
        "",
        "| predictor | top-1 | NLL | ECE | Brier |",
        "|---|---|---|---|---|",
        _score_row("ensemble (raw logits)", result.ensemble, where),
    ]
    fitted = _block(result.raw, "temperature", where)
    calibrated = _block(result.ensemble, "calibrated", where)
    if fitted is not None and calibrated is not None:
        t = check_temperature(fitted.get("temperature"), f"{where}: temperature")
        lines.append(_score_row(f"ensemble at temperature {t:.3f}", {**calibrated, "top1": result.top1}, where))
    lines += [_score_row(f"path {j}", block, where) for j, block in enumerate(result.paths[:k])]
    if fitted is not None:
        images = _num(fitted, "images", f"{where}: temperature", 0)
        before, after = _num(fitted, "nll_before", where, 0), _num(fitted, "nll_after", where, 0)
        held = f" on {images:.0f} held-out images" if images else ""
        change = f" (held-out NLL {_fmt(before)} -> {_fmt(after)})" if before is not None else ""
        lines += ["", f"The temperature was fitted{held} of the training split{change}; the model applies it."]
    return [*lines, ""]


def _beyond(result: EvalRecord, where: str) -> list[str]:
    """Selective prediction, OOD detection, the cascade and corruptions, when the evaluation has them."""
    lines = []
    selective = _block(result.ensemble, "selective", where)
    if selective:
        aurc, risk = _num(selective, "aurc", where, 0, 1), _num(selective, "risk_at_80", where, 0, 1)
        cover = _num(selective, "coverage_at_5_risk", where, 0, 1)
        lines.append(
            f"- selective prediction: AURC {_fmt(aurc)}, error among the 80 % most confident {_pct(risk)}, "
            f"coverage at 5 % error {_pct(cover)}"
        )
    ood = _block(result.raw, "ood", where)
    if ood:
        scores = _block(ood, "ensemble", f"{where}: ood") or {}
        parts = [
            f"{_text(name, 30)} AUROC {_fmt(_num(s, 'auroc', where, 0, 1), '.3f')}, "
            f"FPR95 {_pct(_num(s, 'fpr95', where, 0, 1))}"
            for name, s in scores.items()
            if isinstance(s, dict) and "auroc" in s
        ]
        lines.append(f"- out-of-distribution ({_text(ood.get('data', '?'), 40)}): " + "; ".join(parts))
    cascade = _block(result.raw, "cascade", where)
    if cascade:
        top1, mean = _num(cascade, "top1", where, 0, 1), _num(cascade, "mean_macs", where, 0)
        lines.append(
            f"- early-exit cascade: top-1 {_pct(top1)} at {_fmt(mean, '.3f', 1e-6)}M MACs per image on average"
        )
    corruptions = _block(result.raw, "corruptions", where)
    if corruptions:
        mean = _block(_block(corruptions, "mean", where), "ensemble", where)
        names = corruptions.get("names") if isinstance(corruptions.get("names"), list) else []
        lines.append(
            f"- mean over {len(names)} corruptions: top-1 {_pct(_num(mean, 'top1', where, 0, 1))}, "
            f"NLL {_fmt(_num(mean, 'nll', where, 0))}, ECE {_pct(_num(mean, 'ece', where, 0, 1))}"
        )
    return ["## Beyond top-1", "", *lines, ""] if lines else []


def _cost_lines(net, info: EnsembleFile, result: EvalRecord | None, where: str) -> list[str]:
    """MACs, paper FLOPs, params (the record's, else counted) and the measured latency with its device."""
    cost = count_cost(net.space, net.arch, net.num_classes)
    costs = result.costs if result is not None and result.costs else cost.to_json()
    lines = [
        "## Cost",
        "",
        f"- {costs['macs'] / 1e6:.3f}M MACs, {costs['paper_flops'] / 1e6:.3f}M FLOPs (the paper's convention), "
        f"{costs['params'] / 1e6:.3f}M parameters at {info.preprocess.input_size} x {info.preprocess.input_size}",
    ]
    latency = _num(result.raw, "latency_ms", where, 0) if result is not None else None
    if latency is not None:
        device = _text(result.get("latency_device", "unknown device"), 60)
        lines.append(f"- latency {latency:.2f} ms per image (batch 1), measured on {device} when it was evaluated")
    else:
        lines.append("- latency: not measured")
    return [*lines, ""]


def _data_lines(sources: Sources, info: EnsembleFile, result: EvalRecord | None) -> list[str]:
    """The data and split sizes, as recorded."""
    data = info.data or {}
    lines = [f"- data: {_text(data.get('data') or 'unknown')}, {info.num_classes} classes"]
    if info.classes:
        shown = ", ".join(_text(c, 30) for c in info.classes[:20]) + (", ..." if len(info.classes) > 20 else "")
        lines.append(f"- classes: {shown}")
    where = str(sources.retrain / EVAL) if sources.retrain else "eval"
    sizes = []
    if result is not None:
        train = _num(result.raw, "train_images", where, 0)
        if train is not None:
            sizes.append(f"{train:.0f} training images")
        fitted = _block(result.raw, "temperature", where) or {}
        held = _num(fitted, "images", where, 0)
        if held:
            sizes.append(f"{held:.0f} held out of the training split ({info.holdout:g} of it)")
        test = _num(result.raw, "images", where, 0)
        if test:
            sizes.append(f"{test:.0f} {_text(result.get('split', 'test'), 20)} images")
    if sources.arch is not None:
        calibration = _block(read_arch(sources.arch).raw, "calibration", str(sources.arch)) or {}
        bn, score = _num(calibration, "bn_images", str(sources.arch), 0), _num(calibration, "score_images", "", 0)
        if score:
            sizes.append(
                f"the search scored candidates on {score:.0f} held-out images after BN recalibration on {bn:.0f}"
            )
    if sizes:
        lines.append("- images: " + "; ".join(sizes))
    lines.append(f"- preprocessing of an image file: {info.preprocess.describe()}")
    if data.get("data") in _ARRAYS:
        lines.append(f"- {_ARRAYS[data['data']]}")
    return lines


def _shrinking(supernet: Path) -> str | None:
    """How many shrinking rounds ran and the combinations before the first and after the last."""
    rounds = sorted((supernet / SHRINK_ROUNDS).glob("round_*.json"))
    if not rounds:
        return None
    first = read_json(rounds[0], "shrinking round", ("combinations_before",))
    last = read_json(rounds[-1], "shrinking round", ("combinations_after",))
    before = _num(first, "combinations_before", str(rounds[0]), 0)
    after = _num(last, "combinations_after", str(rounds[-1]), 0)
    return f"{len(rounds)} shrinking round(s): {_fmt(before, '.0f')} -> {_fmt(after, '.0f')} operation combinations"


def _search_lines(sources: Sources) -> list[str]:
    """The space, the budget, the search's settings and its held-out score of the chosen ensemble."""
    if sources.arch is None:
        return ["- search: not recorded beside these weights (a retraining of a given arch, or a file moved alone)"]
    record, where = read_arch(sources.arch), str(sources.arch)
    constraints = _block(record.raw, "constraints", where) or {}
    budget = ", ".join(f"{_text(k, 30)} {_scalar(v, where, k)}" for k, v in constraints.items()) or "none"
    acc = record.supernet_acc
    evaluations = _num(record.raw, "evaluations", where, 0)
    lines = [f"- budget: {budget}"]
    settings = _settings(sources.arch.parent / CONFIG, SEARCH_KEYS)
    if settings:
        lines.append(f"- evolution search: {settings}")
    done = f"{evaluations:.0f} ensembles evaluated; " if evaluations else ""
    lines.append(f"- chosen: {done}held-out top-1 with supernet weights {_pct(acc)}")
    return lines


def _provenance(sources: Sources, info: EnsembleFile) -> list[str]:
    """How the ensemble was found: the space, budget, seeds and every stage's settings, as recorded."""
    space = info.space
    lines = [
        "## How it was found",
        "",
        f"- search space: {_text(space.name)} ({space.num_layers} searchable layers, ops "
        f"{', '.join(str(o) for o in space.ops)}, K = {space.num_paths} paths, split points "
        f"{space.split[0]}-{space.split[1]}, input {space.input_size} px)",
    ]
    if sources.run is not None:
        run = load_yaml(sources.run / CONFIG)
        lines.append(f"- pipeline: `neas run`, seed {_scalar(run.get('seed'), str(sources.run / CONFIG), 'seed')}")
    if sources.supernet is not None:
        settings = _settings(sources.supernet / CONFIG, SUPERNET_KEYS)
        lines.append(f"- supernet training and shrinking: {settings or 'settings not recorded'}")
        shrinking = _shrinking(sources.supernet)
        if shrinking:
            lines.append(f"- {shrinking}")
    lines += _search_lines(sources)
    retrain = _settings(sources.retrain / CONFIG, RETRAIN_KEYS) if sources.retrain else None
    if retrain:
        lines.append(f"- retraining from scratch: {retrain}; weights: {_text(info.weights)}")
    return lines


def _compare_lines(sources: Sources, top: Path) -> list[str]:
    """The answer of the ``neas compare`` this run belongs to, in words (report/compare.py's)."""
    if sources.compare is None:
        return []
    record = read_json(sources.compare, "comparison", ("differences", "rows"))
    where = str(sources.compare)
    for row, diffs in (record.get("differences") or {}).items():
        top1 = _block(diffs if isinstance(diffs, dict) else None, "top1", f"{where}: differences.{row}") or {}
        for key, low, high in (("mean", -1, 1), ("lo", -1, 1), ("hi", -1, 1), ("sd", 0, 2), ("n", 1, 1e6)):
            _num(top1, key, f"{where}: differences.{row}.top1", low, high)
        if top1.get("mean") is None or top1.get("n") is None or not isinstance(top1.get("verdict"), str):
            raise NeasError(f"{where}: differences.{row}.top1 needs 'mean', 'n' and 'verdict'")
        if not isinstance((record.get("rows") or {}).get(row), dict):
            raise NeasError(f"{where}: field 'rows' has no entry {row!r}")
    said = [_text(line, 300) for line in answer(record)]
    return [
        "",
        f"This run is `{_text(top.name, 60)}` of a `neas compare` ({_text(sources.compare.parent)}):",
        "",
        *[f"- {line}" for line in said],
    ]


_HUB_DATASETS = ("cifar10", "cifar100", "svhn")
# datasets neas reads as arrays (neas.data.datasets): how their images reached the input size
_ARRAYS = {
    "digits": "digits: scikit-learn's 8 x 8 arrays, resized once to the input size (bilinear, antialiased)",
    **{
        name: f"{name}: torchvision's arrays resized once to the input size (bilinear, antialiased; unchanged at "
        "32 px), or an image-folder copy seen by the rule above"
        for name in ("cifar10", "cifar100", "svhn")
    },
}  # dataset names that are also Hub dataset ids


# the model-index's unit, stated in the front matter (a YAML comment) and the README
FRONT_MATTER_UNITS = "metric values are plain fractions: accuracy and ECE in [0, 1] (0.95 = 95 %), NLL in nats"


def _front_matter(name: str, info: EnsembleFile, result: EvalRecord | None, license: str, where: str) -> str:
    """The Hub's YAML header: library, license, tags, datasets, metrics and the test scores as a model-index."""
    data = str((info.data or {}).get("data") or "")
    meta = {
        "library_name": "timm",
        "license": license,
        "pipeline_tag": "image-classification",
        "tags": ["image-classification", "timm", "neas", "ensemble", "neural-architecture-search"],
        "metrics": ["accuracy"],
    }
    if data in _HUB_DATASETS:
        meta["datasets"] = [data]
    if result is not None:
        values = [("accuracy", "top-1 accuracy", result.top1)]  # one unit: fractions, as ECE (FRONT_MATTER_UNITS)
        values += [(m, m.upper(), _num(result.ensemble, m, where, 0)) for m in ("nll", "ece")]
        meta["model-index"] = [
            {
                "name": name,
                "results": [
                    {
                        "task": {"type": "image-classification"},
                        "dataset": {"name": f"{data or 'unknown'} ({result.get('split', 'test')})", "type": data},
                        "metrics": [
                            {"type": t, "name": n, "value": round(v, 4)} for t, n, v in values if v is not None
                        ],
                    }
                ],
            }
        ]
    units = f"# {FRONT_MATTER_UNITS}\n" if result is not None else ""
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + units + "---\n"


def _usage(name: str, info: EnsembleFile) -> list[str]:
    t = info.temperature_value
    temperature = (
        f"The model returns the mean of its {info.arch.num_paths} paths' logits divided by the fitted temperature "
        f"{t:.4f} (`model_args.temperature` in `config.json`), as `neas.load_ensemble` and the ONNX export do; "
        "`model.temperature = None` gives the raw mean logits. Fresh heads (`num_classes=N` of another count, "
        "`model.reset_classifier(N)`) clear it: the temperature belongs to these heads."
        if t is not None
        else f"The model returns the mean of its {info.arch.num_paths} paths' logits (no temperature was fitted)."
    )
    return [
        "## How to use",
        "",
        "```python",
        "import neas, timm  # `import neas` registers neas's timm models (neas_ensemble)",
        "",
        f'model = timm.create_model("hf-hub:USER/{name}", pretrained=True).eval()  # or "local-dir:{name}"',
        "transform = timm.data.create_transform(**timm.data.resolve_data_config(model=model))",
        "probs = model(transform(image).unsqueeze(0)).softmax(-1)  # image: a PIL image",
        "```",
        "",
        temperature,
        f"`timm.create_model(..., features_only=True)` gives its multi-scale feature maps; `neas evaluate "
        f'--checkpoint {name}` and `neas.load_ensemble("{name}")` read this folder too.',
        "",
        f"Publish it with `huggingface-cli upload USER/{name} {name} .` (neas itself downloads and uploads nothing).",
        "",
    ]


def _intro(info: EnsembleFile, released: bool, subset: bool) -> list[str]:
    paper = "Chen et al., *One-Shot Neural Ensemble Architecture Search by Diversity-Guided Search Space Shrinking*"
    how = (
        f"released by the authors of NEAS ({paper}, CVPR 2021)"
        if released
        else (f"found by NEAS ({paper}, CVPR 2021) with neas and retrained from scratch")
    )
    lines = [
        f"An ensemble of {info.arch.num_paths} networks (paths) that share their first {info.arch.split} searchable "
        f"layers, {how}. It predicts the mean of its paths' logits.",
        "",
    ]
    if subset:
        lines += [
            "These are some of the paths of a retrained ensemble (`neas export --paths`): the run's test numbers "
            "are the whole ensemble's and are left out (its `eval.json` `anytime` entries hold the sub-ensembles'; "
            "or run `neas evaluate` on this folder).",
            "",
        ]
    return lines


def model_card(
    source: str | Path | None, net, info: EnsembleFile, name: str, license: str = "other", whole: bool = True
) -> str:
    """The README.md of an exported ensemble ``net`` (described by ``info``; its records found from the weights
    ``source``, None for a released checkpoint; ``whole``: False for some of the run's paths, whose test numbers
    the run's records do not hold): see the module docstring."""
    sources = locate(source) if source is not None else None
    has_eval = sources is not None and sources.retrain is not None
    result = read_eval(sources.retrain / EVAL) if has_eval else None
    where = str(sources.retrain / EVAL) if has_eval else "eval"
    scores = result if whole else None
    k = info.arch.num_paths
    lines = [
        _front_matter(name, info, scores, license, where),
        f"# {_text(name)}",
        "",
        *_intro(info, sources is None, not whole),
        *_usage(name, info),
        "## Architecture",
        "",
        "```text",
        arch_report(info.space, info.arch, info.num_classes, title=name),
        "```",
        "",
        *_cost_lines(net, info, scores, where),
    ]
    if scores is not None:
        lines += [*_scores(scores, where, k), *_beyond(scores, where)]
    if sources is None:
        lines += ["## Provenance", "", "- the authors' released checkpoint, read by neas's safe loader", ""]
    else:
        top = sources.run or sources.retrain or sources.model.parent
        lines += [*_provenance(sources, info), *_data_lines(sources, info, result), *_compare_lines(sources, top), ""]
    if license == "other":
        lines += ["License: not set (`license: other`); set it with `neas export --license ID` before publishing.", ""]
    return "\n".join(lines)
