"""Benchmark 10: the single-file ONNX cascade against the full-ensemble ONNX, onnxruntime at batch 1.

Both files are written by ``neas export`` (``--cascade --single-file`` and plain ``--format onnx``) and
run image by image, at batch 1, on one CPU thread (the serving case the single file is for: a phone,
a C++ server answering one request); the multi-file ``OnnxCascade`` at batch 1 is timed beside them
for reference. The printed ratio is the full ensemble's latency per image over the cascade's (> 1: the
cascade is faster); the cascade's answers must equal its PyTorch reference (same stops).

python -m benchmarks.cascade_onnx --checkpoint runs/demo/retrain   # a trained model and its fitted cascade,
                                                                   # on the first images of its test split
python -m benchmarks.cascade_onnx                                  # no checkpoint: see :func:`_untrained`
"""

from __future__ import annotations

import argparse
import random
import tempfile
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import SIZES, Result, interleaved
from neas.data.datasets import load_dataset
from neas.data.loader import normalize
from neas.ensemble.cascade import cascade_predict
from neas.ensemble.cascade_export import OnnxCascade, export_cascade
from neas.ensemble.cascade_onnx import export_cascade_onnx
from neas.ensemble.export import export
from neas.ensemble.io import load_ensemble
from neas.ensemble.model import build_ensemble
from neas.space import EnsembleArch, SearchSpace, resolve_arch_and_space

__all__ = ["cascade_onnx"]

IMAGES = 64  # per timed round, each at batch 1
STOP_AT_FIRST = 0.978  # the trained demo's fitted cascade stops 97.8 % of its test images at step 1


def _untrained(arch: str, images: int, input_size: int, seed: int = 0):
    """A randomly initialised network — ``demo``: the demo's shape (the tiny space, two paths, split 3
    as the demo's search picks it: only the last layer private); ``neas-m``: the released NEAS-M at
    ``input_size`` (its last four layers private), 100 classes — random images, and a threshold that
    stops :data:`STOP_AT_FIRST` of them at step 1 (as the trained demo's fitted cascade does on its
    test split), placed midway between two confidences."""
    torch.manual_seed(seed)
    if arch == "demo":
        space = SearchSpace.from_dict({**SearchSpace.preset("tiny").to_dict(), "split": [3, 3]})
        net = build_ensemble(space, EnsembleArch.sample(space, random.Random(seed)), 10)
    else:
        ensemble, space = resolve_arch_and_space(arch, None)
        space = SearchSpace.from_dict({**space.to_dict(), "input_size": input_size})
        net = build_ensemble(space, ensemble, 100)
    net = net.eval()
    x = torch.randn(images, 3, space.input_size, space.input_size, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        confidence = net.path_logits(x)[0].double().softmax(-1).max(-1).values.sort().values
    i = max(1, images - round(STOP_AT_FIRST * images))  # the lowest i (at least one) go on to step 2
    threshold = float((confidence[i - 1] + confidence[i]) / 2)
    return net, {"order": [0, 1], "thresholds": [threshold], "temperature": None}, None, x


def _trained(checkpoint: str, images: int):
    """The model file's network, fitted cascade and record, and the first images of its test split."""
    path = Path(checkpoint)
    net, info = load_ensemble(path / "model.safetensors" if path.is_dir() else path)
    if info.cascade is None:
        raise SystemExit(f"{checkpoint}: no fitted cascade; run `neas evaluate --checkpoint {checkpoint} --cascade`")
    data = load_dataset((info.data or {}).get("data", "digits"), "test", net.space.input_size)
    return net, info.cascade, info, normalize(data.images[:images])


def _session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def cascade_onnx(size: dict, checkpoint: str | None = None, arch: str = "demo", images: int = IMAGES) -> Result:
    """Times the three at batch 1 (module docstring); ``checkpoint`` (a trained model with a fitted
    cascade) or else an untrained ``arch`` (:func:`_untrained`)."""
    if checkpoint is None:
        net, cascade, info, x = _untrained(arch, images, size["imagenet_input"])
    else:
        net, cascade, info, x = _trained(checkpoint, images)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t = info.temperature_value if info is not None else None  # as `neas export` applies it, to all three
        export_cascade_onnx(net, cascade, tmp / "cascade.onnx", info=info, temperature=t)
        export(net, "onnx", tmp / "full.onnx", info=info, temperature=t)
        export_cascade(net, cascade, tmp / "steps", info=info, temperature=t)
        single, full, steps = _session(tmp / "cascade.onnx"), _session(tmp / "full.onnx"), OnnxCascade(tmp / "steps")
        steps.sessions = [_session(tmp / "steps" / step["file"]) for step in steps.spec["steps"]]  # one thread too
        batch = [x[i : i + 1].numpy() for i in range(len(x))]
        record = cascade if isinstance(cascade, dict) else cascade.to_json()
        stops = np.concatenate([single.run(None, {"images": image})[1] for image in batch])
        with torch.no_grad():
            in_order = torch.stack([net.path_logits(x)[k] for k in record["order"]])
        expected = cascade_predict(in_order, record["thresholds"], record["temperature"])[1].numpy()
        seconds = interleaved(
            {
                "single": lambda: [single.run(None, {"images": image}) for image in batch],
                "full": lambda: [full.run(None, {"images": image}) for image in batch],
                "steps": lambda: [steps(image) for image in batch],
            },
            size["repeats"],
            size["warmup"],
        )
    per_image = {name: s / len(batch) for name, s in seconds.items()}
    ratio = per_image["full"] / per_image["single"]
    return Result(
        f"10. ONNX cascade, one file ({'trained' if checkpoint else arch})",
        "single-file cascade (If nodes)",
        "full-ensemble ONNX",
        per_image["single"],
        per_image["full"],
        "> 1.0",
        ratio,
        ratio > 1.0 and bool(np.array_equal(stops, expected)),
        {
            "model": checkpoint or f"untrained {arch}-shaped network, threshold stopping {STOP_AT_FIRST:.1%} at step 1",
            "images": len(batch),
            "stop_fraction": [float(f) for f in np.bincount(stops - 1, minlength=len(record["order"])) / len(stops)],
            "same_stops_as_pytorch": bool(np.array_equal(stops, expected)),
            "multi_file_ms": per_image["steps"] * 1e3,
            "full_over_multi_file": per_image["full"] / per_image["steps"],
        },
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cascade_onnx")
    parser.add_argument("--checkpoint", help="a model file or retrain run directory with a fitted cascade")
    parser.add_argument("--arch", choices=("demo", "neas-m"), default="demo", help="without --checkpoint")
    parser.add_argument("--images", type=int, default=IMAGES)
    parser.add_argument("--size", choices=sorted(SIZES), default="cpu")
    parser.add_argument("--repeats", type=int, help="timed rounds (default: the size's)")
    args = parser.parse_args(argv)
    size = SIZES[args.size] | ({"repeats": args.repeats} if args.repeats else {})
    result = cascade_onnx(size, args.checkpoint, args.arch, args.images)
    print(result.line())
    print(f"   {result.extra}")
    return 0 if result.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
