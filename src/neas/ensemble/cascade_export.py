"""The deployable early-exit cascade (issue 28 item 5): one ONNX file per step, run step by step.

:func:`export_cascade` writes, into a directory, one ONNX file per step of a fitted cascade
(:func:`neas.ensemble.cascade.cascade_predict`) and ``cascade.json``. Step 1 maps the images to the
logits of the first path in the cascade order and the shared trunk's output (stem, L0 and the shared
layers: run once); step j > 1 maps that output to the logits of the j-th path. Stopping at step j
therefore costs exactly the sub-ensemble of the first j paths. The stem and L0 are one module for
every path even at split 0, so the trunk's output is handed on there too; the runtime also accepts
a step whose input is the images (its ONNX input named ``images``).

:class:`OnnxCascade` runs such a directory with onnxruntime on CPU, each step only on the images that
have not stopped yet::

    from neas.ensemble.cascade_export import OnnxCascade

    cascade = OnnxCascade("cascade_dir")         # cascade.json and one session per step
    logits, stops = cascade(images)              # images: float32 (N, 3, S, S), normalised as cascade.json says
    predicted = logits.argmax(-1)                # logits (N, C): the mean of the paths run / T; stops (N,) in 1..K

The logits returned follow the one temperature rule of ``neas.load_ensemble`` and the ONNX file: the
mean logits of the sub-ensemble each image stopped at, divided by the model's stored temperature
(``output_temperature`` in ``cascade.json``; null: raw, as ``neas export --raw-logits`` writes it).
The cascade's own ``temperature`` only scales the stopping confidence, as in ``cascade_predict``.

``cascade.json`` is checked against its schema when a cascade is opened (issue 40): K >= 2 steps named
``step<j>.onnx``, each a file inside the folder (a symlink leading out of it is refused), the first
taking the images; the order a permutation of the paths; K - 1 finite thresholds; ``temperature`` and
``output_temperature`` (absent in an older export: null) each null or in ``records.TEMPERATURE_RANGE``;
``num_classes`` classes; ``fitted.exit`` (how the thresholds were chosen: provenance, which inference
never reads), when there, one of ``records.CASCADE_EXITS``.
``record_sha256`` covers the whole spec, so an edit is refused as damage; a spec without it (an older
export, or one written by hand) is accepted with the schema checks.
"""

from __future__ import annotations

import dataclasses
import io
import json
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from neas.ensemble.cascade import cascade_predict
from neas.ensemble.export import onnx_metadata
from neas.ensemble.io import EnsembleFile
from neas.ensemble.model import EnsembleNet
from neas.errors import NeasError
from neas.io import read_json, record_sha256, write_bytes, write_json
from neas.nn import run_pieces
from neas.records import CascadeRecord, check_exit, check_temperature
from neas.runfiles import CASCADE_JSON
from neas.space import path_pieces, trunk_pieces

__all__ = ["FORMAT", "OnnxCascade", "export_cascade", "step_model", "step_models"]


FORMAT = "neas.cascade/1"
RECORD_SHA256 = "record_sha256"  # of every other field of cascade.json
_TOLERANCE = 1e-4  # max |difference| of the returned logits from PyTorch's
_INPUTS = ("images", "features")  # what a step's ONNX file takes


def _record_hash(spec: dict) -> str:
    return record_sha256({key: value for key, value in spec.items() if key != RECORD_SHA256})


class _FirstStep(torch.nn.Module):
    """Images -> (logits of one path, the trunk's output that every later step starts from)."""

    def __init__(self, net: EnsembleNet, path: int):
        super().__init__()
        self.net, self.path = net, path

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) -> logits (B, num_classes), features (B, C', H', W')."""
        features = run_pieces(trunk_pieces(self.net.arch), self.net.run_piece, images)
        logits, _ = run_pieces(path_pieces(self.net.arch, self.path), self.net.run_piece, features)
        return logits, features


class _LaterStep(torch.nn.Module):
    """The trunk's output -> the logits of one path."""

    def __init__(self, net: EnsembleNet, path: int):
        super().__init__()
        self.net, self.path = net, path

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(B, C', H', W') -> logits (B, num_classes)."""
        logits, _ = run_pieces(path_pieces(self.net.arch, self.path), self.net.run_piece, features)
        return logits


def step_model(module: torch.nn.Module, x: torch.Tensor, first: bool, opset: int):
    """One step's ONNX model (``onnx.ModelProto``), exported in memory: step 1 maps ``images`` to
    ``logits`` and ``features``, a later step ``features`` to ``logits``; the batch axis is dynamic."""
    import onnx

    inputs, outputs = (["images"], ["logits", "features"]) if first else (["features"], ["logits"])
    axes = {name: {0: "batch"} for name in inputs + outputs}
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (x,),
            buffer,
            input_names=inputs,
            output_names=outputs,
            opset_version=opset,
            dynamic_axes=axes,
            dynamo=False,
        )
    return onnx.load_from_string(buffer.getvalue())


def step_models(net: EnsembleNet, order, opset: int) -> list:
    """The ONNX model of every step of a cascade running the paths in ``order`` (``onnx.ModelProto``s,
    in memory, without metadata): :func:`step_model` of step 1 and of each later step."""
    x = _images(net, 2)
    with torch.no_grad():
        features = run_pieces(trunk_pieces(net.arch), net.run_piece, x)
    # each wrapper in eval mode itself: the exporter restores the wrapper's mode, recursively, into ``net``
    models = [step_model(_FirstStep(net, order[0]).eval(), x, True, opset)]
    return models + [step_model(_LaterStep(net, k).eval(), features, False, opset) for k in order[1:]]


def _spec(net: EnsembleNet, cascade: CascadeRecord, info: EnsembleFile | None, temperature: float | None) -> dict:
    """What ``cascade.json`` says: the cascade, the file of each step, the input the first one expects and the
    temperature the returned logits are divided by (``output_temperature``)."""
    meta = onnx_metadata(net, info, None)
    order = list(cascade.order)
    steps = [
        {"file": f"step{j}.onnx", "path": k, "input": "images" if j == 1 else "features"}
        for j, k in enumerate(order, start=1)
    ]
    spec = {
        "format": FORMAT,
        "order": order,
        "thresholds": list(cascade.thresholds),
        "temperature": cascade.temperature,
        "output_temperature": temperature,
        "steps": steps,
        "input": {key: meta[key] for key in ("input", "interpolation")}
        | {key: json.loads(meta[key]) for key in ("input_size", "mean", "std", "crop_pct")},
        "output": "logits (N, num_classes): the mean of the logits of the paths run"
        + (", divided by output_temperature" if temperature is not None else ", unscaled (raw)")
        + "; stops (N,): the step each image stopped at, 1..K",
        "num_classes": net.num_classes,
        "classes": json.loads(meta["classes"]),
        "arch": net.arch.to_json(),
        "space": net.space.name,
        "fitted": cascade.fitted(),
    }
    return spec | {RECORD_SHA256: _record_hash(spec)}


def _check_cascade(net: EnsembleNet, cascade: CascadeRecord | dict) -> CascadeRecord:
    """The cascade to export, checked against the net: K >= 2 paths, and the record's own checks."""
    if net.arch.num_paths < 2:
        raise NeasError("a cascade needs an ensemble of at least 2 paths, got 1")
    return cascade if isinstance(cascade, CascadeRecord) else CascadeRecord.from_json(cascade, net.arch.num_paths)


def _write_steps(net: EnsembleNet, spec: dict, folder: Path, opset: int, info: EnsembleFile | None) -> None:
    """Every step's ONNX file and ``cascade.json`` in ``folder``."""
    import onnx

    base = onnx_metadata(net, info, None)
    k = len(spec["steps"])
    models = step_models(net, [step["path"] for step in spec["steps"]], opset)
    for j, (step, model) in enumerate(zip(spec["steps"], models), start=1):
        first = j == 1
        metadata = base | {
            "input": base["input"] if first else "features: float32, the output of step 1's 'features'",
            "output": f"logits: float32 (batch, num_classes) of path {step['path']}"
            + (", and features: the shared trunk's output, the input of steps 2.." if first else ""),
            "cascade_step": f"{j}/{k}",
            "temperature": json.dumps(None),
        }
        onnx.helper.set_model_props(model, metadata)
        onnx.save(model, str(folder / step["file"]))
    write_json(folder / CASCADE_JSON, spec)


def _images(net: EnsembleNet, n: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    size = net.space.input_size
    return torch.randn(n, net.space.in_channels, size, size, generator=gen)


def _mixed_thresholds(path_logits: torch.Tensor, temperature: float | None) -> list[float]:
    """Thresholds that stop about half the images at each step: the midpoint of the widest gap
    between two confidences in the middle half, so float noise between runtimes flips no stop."""
    t = 1.0 if temperature is None else float(temperature)
    thresholds = []
    for j in range(1, path_logits.shape[0]):
        conf = (path_logits[:j].mean(0).double() / t).softmax(-1).max(-1).values.sort().values
        n = conf.shape[0]
        lo, hi = n // 4, max(n // 4 + 1, 3 * n // 4)
        gaps = conf[lo + 1 : hi + 1] - conf[lo:hi]
        i = lo + int(gaps.argmax())
        thresholds.append(float((conf[i] + conf[i + 1]) / 2))
    return thresholds


def _verify(net: EnsembleNet, spec: dict, folder: Path, batch_size: int) -> float:
    """Max |difference| of the ONNX cascade's logits from :func:`cascade_predict`'s (divided by the
    ``output_temperature``, like with like) on random images, with the fitted thresholds and with
    thresholds that stop images at every step; stops must agree."""
    runtime = OnnxCascade(folder)
    x = _images(net, batch_size, seed=1)
    with torch.no_grad():
        per_path = net.path_logits(x)
    in_order = torch.stack([per_path[k] for k in spec["order"]])
    temperature, scale = spec["temperature"], spec["output_temperature"]
    worst = 0.0
    for thresholds in (spec["thresholds"], _mixed_thresholds(in_order, temperature)):
        expected, expected_stops = cascade_predict(in_order, thresholds, temperature)
        expected = expected if scale is None else expected / scale
        runtime.thresholds = thresholds
        got, stops = runtime(x.numpy())
        if not np.array_equal(stops, expected_stops.numpy()):
            raise NeasError(
                f"cascade export check failed: the ONNX cascade stops {int((stops != expected_stops.numpy()).sum())} "
                f"of {batch_size} images at another step than PyTorch; nothing was written"
            )
        worst = max(worst, float(np.abs(got - expected.numpy()).max()))
    if not worst <= _TOLERANCE:
        raise NeasError(
            f"cascade export check failed: the ONNX cascade differs from PyTorch by {worst:.3g} (> {_TOLERANCE}); "
            "nothing was written"
        )
    return worst


def export_cascade(
    net: EnsembleNet,
    cascade: CascadeRecord | dict,
    out_dir: str | Path,
    info: EnsembleFile | None = None,
    opset: int = 17,
    batch_size: int = 16,
    temperature: float | None = None,
) -> float:
    """Writes the cascade as one ONNX file per step and ``cascade.json`` into ``out_dir``.

    Args:
        net: the ensemble (K >= 2 paths).
        cascade: ``EnsembleFile.cascade`` (or its JSON): ``order`` (K paths), ``thresholds`` (K - 1),
            ``temperature``.
        out_dir: the directory (created; files in it with the same names are replaced).
        info: the model file's record (its classes go into the metadata).
        temperature: divides the returned logits (``output_temperature``: the model file's stored one,
            as ``neas export`` passes it; None: raw mean logits). The stopping rule is ``cascade``'s.

    Returns:
        The max |difference| of the ONNX cascade's logits from PyTorch's ``cascade_predict`` (divided by
        ``temperature``) on random images (raises, writing nothing, above 1e-4 or when any image stops at
        another step).
    """
    cascade = _check_cascade(net, cascade)
    out_dir = Path(out_dir)
    net = net.cpu().eval()
    temperature = check_temperature(temperature, "export temperature", nullable=True)
    spec = _spec(net, cascade, info, temperature)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=f".{out_dir.name}.") as staging:
        staging = Path(staging)
        _write_steps(net, spec, staging, opset, info)
        diff = _verify(net, spec, staging, batch_size)
        out_dir.mkdir(exist_ok=True)
        for step in spec["steps"]:  # verified: now each file atomically, cascade.json (the index) last
            write_bytes(out_dir / step["file"], (staging / step["file"]).read_bytes())
        write_json(out_dir / CASCADE_JSON, spec)
    return diff


def _softmax_max(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(-1, keepdims=True)
    exp = np.exp(shifted)
    return exp.max(-1) / exp.sum(-1)


def _check_steps(spec: dict, order: tuple[int, ...], where: str) -> None:
    """Step j is ``step<j>.onnx``, runs path ``order[j - 1]`` and takes the images (j = 1) or the trunk's features."""
    for j, step in enumerate(spec["steps"], start=1):
        if step.get("file") != f"step{j}.onnx":
            raise NeasError(f"{where}: steps[{j - 1}] 'file' must be 'step{j}.onnx', got {step.get('file')!r:.80}")
        if step.get("input") not in _INPUTS[: 1 if j == 1 else 2]:
            valid = "'images'" if j == 1 else "'images' or 'features'"
            raise NeasError(f"{where}: steps[{j - 1}] 'input' must be {valid}, got {step.get('input')!r:.80}")
        if step.get("path", order[j - 1]) != order[j - 1]:
            raise NeasError(f"{where}: steps[{j - 1}] 'path' must be {order[j - 1]}, got {step['path']!r:.40}")


def _check_spec(spec: dict, where: str) -> CascadeRecord:
    """``cascade.json`` against its schema (see the module docstring); the cascade it describes."""
    if spec.get("format") != FORMAT:
        raise NeasError(f"{where}: not a {FORMAT} file")
    steps = spec.get("steps")
    if not (isinstance(steps, list) and len(steps) >= 2 and all(isinstance(step, dict) for step in steps)):
        raise NeasError(f"{where}: 'steps' must be a list of K >= 2 objects, got {steps!r:.80}")
    record = CascadeRecord.from_json(spec, len(steps), where)
    check_temperature(spec.get("output_temperature"), f"{where}: 'output_temperature'", nullable=True)
    fitted = spec.get("fitted", {})
    if not isinstance(fitted, dict):
        raise NeasError(f"{where}: 'fitted' must be an object, got {fitted!r:.80}")
    # provenance: how the thresholds were chosen (inference reads none of it), a known rule when it is there
    record = dataclasses.replace(record, exit_rule=check_exit(fitted.get("exit"), f"{where}: fitted 'exit'"))
    _check_steps(spec, record.order, where)
    num_classes, classes = spec.get("num_classes"), spec.get("classes")
    if not (isinstance(num_classes, int) and not isinstance(num_classes, bool) and num_classes >= 1):
        raise NeasError(f"{where}: 'num_classes' must be a positive integer, got {num_classes!r:.80}")
    if classes is not None and not (
        isinstance(classes, list)
        and len(classes) == num_classes
        and all(isinstance(c, str) for c in classes)
        and len(set(classes)) == num_classes
    ):
        raise NeasError(f"{where}: 'classes' must be null or {num_classes} distinct names, got {classes!r:.80}")
    if RECORD_SHA256 in spec and spec[RECORD_SHA256] != _record_hash(spec):
        raise NeasError(f"{where}: damaged or edited: it does not match the SHA-256 recorded in it; export it again")
    return record


def _step_file(folder: Path, name: str, where: str) -> Path:
    """``folder / name``, refused unless it is a file inside ``folder`` (after following any symlink)."""
    path = folder / name
    real, root = path.resolve(), folder.resolve()
    if real.parent != root:
        raise NeasError(f"{where}: {path} leads outside the cascade's folder (to {real}); refused")
    if not real.is_file():
        raise NeasError(f"{path}: no such step file (listed in {where})")
    return real


def _session(ort, path: Path, expected_input: str):
    """An onnxruntime session of one step; errors (not an ONNX file, another input) name the file."""
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's own exception types (InvalidProtobuf, Fail, ...)
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise NeasError(f"{path}: not a readable ONNX step ({detail:.200})") from None
    if session.get_inputs()[0].name != expected_input:
        raise NeasError(f"{path}: takes {session.get_inputs()[0].name!r}, but cascade.json says {expected_input!r}")
    return session


class OnnxCascade:
    """A cascade directory written by :func:`export_cascade`, run with onnxruntime on CPU.

    Attributes:
        spec: ``cascade.json`` (checked against its schema, see the module docstring).
        thresholds: K - 1 confidence thresholds (from ``cascade.json``; may be set to others).
        temperature: divides the mean logits for the stopping confidence (None: 1).
        output_temperature: divides the returned logits (``cascade.json``'s; None: raw).
        exit_rule: how the thresholds were fitted (``fitted.exit``: accuracy or risk), for the record.
    """

    def __init__(self, folder: str | Path):
        try:
            import onnxruntime as ort
        except ImportError:
            raise NeasError("running an ONNX cascade needs onnxruntime (pip install onnxruntime)") from None
        folder = Path(folder)
        where = str(folder / CASCADE_JSON)
        self.spec = read_json(folder / CASCADE_JSON, "cascade")
        record = _check_spec(self.spec, where)
        self.thresholds, self.temperature = list(record.thresholds), record.temperature
        self.exit_rule = record.exit_rule
        scale = self.spec.get("output_temperature")  # checked by _check_spec
        self.output_temperature = None if scale is None else float(scale)
        steps = self.spec["steps"]
        files = [_step_file(folder, step["file"], where) for step in steps]
        self.sessions = [_session(ort, path, step["input"]) for path, step in zip(files, steps)]
        self.inputs = [step["input"] for step in steps]  # "images" | "features"
        if "features" in self.inputs and len(self.sessions[0].get_outputs()) < 2:
            raise NeasError(f"{files[0]}: returns no features, but a later step of {where} takes them")

    def __call__(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, 3, S, S) float32 -> logits (N, C) float32 of the sub-ensemble each image stopped at
        (divided by :attr:`output_temperature` when there is one), and the step (N,) int64 in 1..K.
        Step j runs only on the images that no earlier step stopped."""
        images = np.ascontiguousarray(images, dtype=np.float32)
        k, n = len(self.sessions), images.shape[0]
        if n == 0:
            return np.zeros((0, int(self.spec["num_classes"])), np.float32), np.zeros(0, np.int64)
        t = 1.0 if self.temperature is None else float(self.temperature)
        stops = np.full(n, k, dtype=np.int64)
        logits, active, total, features = None, np.arange(n), None, None
        for j, (session, name) in enumerate(zip(self.sessions, self.inputs), start=1):
            x = images[active] if name == "images" else features
            outputs = session.run(None, {name: x})
            if j == 1:
                features = outputs[1] if len(outputs) > 1 else None
                total = np.zeros_like(outputs[0], dtype=np.float64)
                logits = np.zeros((n, outputs[0].shape[1]), dtype=np.float32)
            total += outputs[0]
            mean = total / j
            stop = _softmax_max(mean / t) >= self.thresholds[j - 1] if j < k else np.ones(len(active), dtype=bool)
            logits[active[stop]], stops[active[stop]] = mean[stop], j
            active, total = active[~stop], total[~stop]
            features = features[~stop] if features is not None else None
            if not active.size:
                break
        if self.output_temperature is not None:
            logits /= np.float32(self.output_temperature)
        return logits, stops
