"""Export the whole ensemble as one module — safetensors or ONNX (output: the mean logits, divided by
the temperature when one is given: ``EnsembleNet.temperature``, the rule ``neas.load_ensemble`` and the
timm model follow too) — and verify the export by running it on a batch and comparing with PyTorch."""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from pathlib import Path

import torch

from neas.data.preprocess import Preprocessing
from neas.ensemble.io import EnsembleFile, load_ensemble, save_ensemble
from neas.ensemble.model import EnsembleNet
from neas.errors import NeasError, suggest

__all__ = ["FORMATS", "export", "onnx_metadata"]

FORMATS = ("safetensors", "onnx", "timm")


def _batch(net: EnsembleNet, batch_size: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    size = net.space.input_size
    return torch.randn(batch_size, net.space.in_channels, size, size, generator=gen)


def onnx_metadata(net: EnsembleNet, info: EnsembleFile | None, temperature: float | None) -> dict[str, str]:
    """What a user of the ONNX file needs to feed it: the input it expects (the model's
    :class:`~neas.data.preprocess.Preprocessing`, recorded with it) and what its outputs mean
    (``metadata_props``, every value a string; lists and the arch as JSON)."""
    classes = list(info.classes) if info is not None and info.classes else None
    pre = info.preprocess if info is not None else Preprocessing(net.space.input_size, 1.0)
    return {
        "input": "images: float32 (batch, 3, input_size, input_size), RGB, (pixel / 255 - mean) / std",
        "input_size": str(pre.input_size),
        "mean": json.dumps(list(pre.mean)),
        "std": json.dumps(list(pre.std)),
        "crop_pct": str(pre.crop_pct),  # resize the short side to floor(input_size / crop_pct), centre crop
        "crop_mode": "center",
        "interpolation": pre.interpolation,
        "preprocess": pre.describe(),
        "output": "logits: float32 (batch, num_classes), the mean of the paths' logits"
        + (" divided by the temperature" if temperature is not None else ""),
        "classes": json.dumps(classes),
        "num_classes": str(net.num_classes),
        "temperature": json.dumps(temperature),
        "arch": json.dumps(net.arch.to_json()),
        "space": net.space.name,
    }


def _onnx(net: torch.nn.Module, path: Path, x: torch.Tensor, opset: int, metadata: dict[str, str]) -> torch.Tensor:
    try:
        import onnx
        import onnxruntime as ort
    except ImportError:
        raise NeasError("ONNX export needs the packages onnx and onnxruntime (pip install onnx onnxruntime)") from None
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (x,),
            str(path),
            input_names=["images"],
            output_names=["logits"],
            opset_version=opset,
            dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
            dynamo=False,
        )
    model = onnx.load(str(path))
    onnx.helper.set_model_props(model, metadata)
    onnx.save(model, str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {"images": x.numpy()})[0])


def export(
    net: EnsembleNet,
    fmt: str,
    out: str | Path,
    batch_size: int = 2,
    opset: int = 17,
    info: EnsembleFile | None = None,
    temperature: float | None = None,
) -> float:
    """Writes ``net`` to ``out`` in ``fmt`` (``safetensors`` or ``onnx``; a timm folder:
    :func:`neas.ensemble.hub.export_timm`); returns the max |difference| of the exported model's output
    from PyTorch's on a random batch (raises if it exceeds 1e-4). With a ``temperature``, the ONNX graph
    outputs the mean logits divided by it (``EnsembleNet.temperature``); safetensors keeps ``info``'s fields
    (its temperature too, which ``neas.load_ensemble`` applies)."""
    if fmt not in FORMATS or fmt == "timm":
        single = [f for f in FORMATS if f != "timm"]
        raise NeasError(f"unknown export format {fmt!r}{suggest(fmt, single)}; formats: {', '.join(single)}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    net = net.cpu().eval()
    kept, net.temperature = net.temperature, temperature if fmt == "onnx" else None
    x = _batch(net, batch_size)
    tmp = out.with_name(f".{out.name}.tmp")  # verified before it replaces anything at ``out``
    try:
        with torch.no_grad():
            expected = net(x)
        if fmt == "onnx":
            got = _onnx(net, tmp, x, opset, onnx_metadata(net, info, temperature))
        else:
            fields = {f.name: getattr(info, f.name) for f in dataclasses.fields(info)} if info is not None else {}
            for name in ("space", "arch", "num_classes"):
                fields.pop(name, None)
            save_ensemble(net, tmp, **fields)
            with torch.no_grad():
                got = load_ensemble(tmp, calibrated=False)[0](x)
        diff = (got - expected).abs().max().item()
        if not diff <= 1e-4:
            raise NeasError(
                f"export check failed: the {fmt} model differs from PyTorch by {diff:.3g} (> 1e-4); {out} was not "
                "written"
            )
        os.replace(tmp, out)
    finally:
        net.temperature = kept
        tmp.unlink(missing_ok=True)
    return diff
