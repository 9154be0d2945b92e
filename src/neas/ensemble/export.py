"""Export the whole ensemble as one module — safetensors or ONNX (output: the mean logits) —
and verify the export by running it on a batch and comparing with PyTorch."""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from pathlib import Path

import torch

from neas.data.datasets import crop_pct_for
from neas.data.loader import MEAN, STD
from neas.ensemble.io import EnsembleFile, load_ensemble, save_ensemble
from neas.ensemble.model import EnsembleNet
from neas.errors import NeasError, suggest

__all__ = ["FORMATS", "Calibrated", "export", "onnx_metadata"]

FORMATS = ("safetensors", "onnx")


def _batch(net: EnsembleNet, batch_size: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    size = net.space.input_size
    return torch.randn(batch_size, net.space.in_channels, size, size, generator=gen)


def onnx_metadata(net: EnsembleNet, info: EnsembleFile | None, temperature: float | None) -> dict[str, str]:
    """What a user of the ONNX file needs to feed it: the input it expects and what its outputs mean
    (``metadata_props``, every value a string; lists and the arch as JSON)."""
    classes = list(info.classes) if info is not None and info.classes else None
    return {
        "input": "images: float32 (batch, 3, input_size, input_size), RGB, (pixel / 255 - mean) / std",
        "input_size": str(net.space.input_size),
        "mean": json.dumps(list(MEAN)),
        "std": json.dumps(list(STD)),
        "crop_pct": str(crop_pct_for("test")),  # resize the short side to input_size / crop_pct, center crop
        "interpolation": "bicubic",
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


class Calibrated(torch.nn.Module):
    """The ensemble's mean logits divided by a fitted temperature (what ONNX exports then)."""

    def __init__(self, net: EnsembleNet, temperature: float):
        super().__init__()
        self.net, self.temperature = net, float(temperature)

    def forward(self, x):
        return self.net(x) / self.temperature


def export(
    net: EnsembleNet,
    fmt: str,
    out: str | Path,
    batch_size: int = 2,
    opset: int = 17,
    info: EnsembleFile | None = None,
    temperature: float | None = None,
) -> float:
    """Writes ``net`` to ``out`` in ``fmt``; returns the max |difference| of the exported
    model's output from PyTorch's on a random batch (raises if it exceeds 1e-4). With a
    ``temperature``, the ONNX graph outputs the scaled logits; safetensors keeps ``info``'s
    fields (its temperature too)."""
    if fmt not in FORMATS:
        raise NeasError(f"unknown export format {fmt!r}{suggest(fmt, FORMATS)}; formats: {', '.join(FORMATS)}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    net = net.cpu().eval()
    x = _batch(net, batch_size)
    with torch.no_grad():
        expected = net(x)
    if fmt == "onnx" and temperature is not None:
        expected = expected / temperature
    tmp = out.with_name(f".{out.name}.tmp")  # verified before it replaces anything at ``out``
    try:
        if fmt == "onnx":
            module = net if temperature is None else Calibrated(net, temperature)
            got = _onnx(module, tmp, x, opset, onnx_metadata(net, info, temperature))
        else:
            fields = {f.name: getattr(info, f.name) for f in dataclasses.fields(info)} if info is not None else {}
            for name in ("space", "arch", "num_classes"):
                fields.pop(name, None)
            save_ensemble(net, tmp, **fields)
            with torch.no_grad():
                got = load_ensemble(tmp)[0](x)
        diff = (got - expected).abs().max().item()
        if not diff <= 1e-4:
            raise NeasError(
                f"export check failed: the {fmt} model differs from PyTorch by {diff:.3g} (> 1e-4); {out} was not "
                "written"
            )
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return diff
