"""A Hub-ready timm folder of an ensemble (issue 38, item 2): ``neas export --format timm --out DIR``.

The folder holds what timm's own loaders read (``timm.create_model("local-dir:DIR", pretrained=True)``,
or ``hf-hub:USER/REPO`` once uploaded):

- ``config.json``: timm's ``architecture`` (``neas_ensemble``), ``num_classes``, ``label_names``,
  ``model_args`` (the ``arch`` and ``space`` JSON and the fitted ``temperature``) and ``pretrained_cfg``
  (the model's :class:`~neas.data.preprocess.Preprocessing`: input size, crop, interpolation, mean,
  std; ``first_conv``, ``classifier``), written by timm's ``save_config_for_hf``;
- ``model.safetensors``: the neas ensemble file (state_dict in the released key layout, its record in
  the metadata), which ``neas.load_ensemble(DIR)`` and ``neas evaluate --checkpoint DIR`` read too;
- ``README.md``: the model card (:mod:`neas.report.card`).

Everything is written into a staging folder first and checked by loading it back through
``local-dir:`` (logits within 1e-5 of the PyTorch model, the temperature applied as
``neas.load_ensemble`` applies it); only then are the files copied into ``DIR``, ``config.json`` last.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from pathlib import Path

import torch

from neas.ensemble.io import EnsembleFile, save_ensemble
from neas.ensemble.model import EnsembleNet
from neas.errors import NeasError
from neas.io import write_bytes, write_text
from neas.runfiles import MODEL, MODEL_CARD, TIMM_CONFIG

__all__ = ["TOLERANCE", "export_timm", "timm_model"]

TOLERANCE = 1e-5  # the exported folder's logits vs PyTorch's (the same arithmetic: ~1e-7 in practice)


def timm_model(net: EnsembleNet, info: EnsembleFile):
    """``net`` as the timm model ``neas_ensemble`` (its weights copied, its ``pretrained_cfg`` the file's),
    with the temperature ``info`` records."""
    import timm

    model = timm.create_model(
        "neas_ensemble",
        arch=net.arch.to_json(),
        space=net.space.to_dict(),
        num_classes=net.num_classes,
        temperature=info.temperature_value,
        pretrained_cfg_overlay=info.pretrained_cfg(),
    )
    model.load_state_dict(net.state_dict())
    return model.eval()


def _write(staging: Path, net: EnsembleNet, info: EnsembleFile, card: str) -> None:
    from timm.models._hub import save_config_for_hf

    fields = {f.name: getattr(info, f.name) for f in dataclasses.fields(info)}
    for name in ("space", "arch", "num_classes"):
        fields.pop(name)
    save_ensemble(net, staging / MODEL, **fields)
    model = timm_model(net, info)
    args = {"arch": net.arch.to_json(), "space": net.space.to_dict()}
    if info.temperature_value is not None:
        args["temperature"] = info.temperature_value
    labels = {"label_names": list(info.classes)} if info.classes else {}
    save_config_for_hf(model, str(staging / TIMM_CONFIG), model_config=labels, model_args=args)
    write_text(staging / MODEL_CARD, card)


def _verify(staging: Path, net: EnsembleNet, info: EnsembleFile, batch_size: int) -> float:
    """The staged folder through timm's offline loader against ``net`` (its temperature applied)."""
    import timm

    quiet = logging.getLogger("timm")
    level, quiet.level = quiet.level, logging.WARNING  # its info lines name the staging folder, not --out
    try:
        loaded = timm.create_model(f"local-dir:{staging}", pretrained=True).eval()
    finally:
        quiet.setLevel(level)
    size = net.space.input_size
    x = torch.randn(batch_size, net.space.in_channels, size, size, generator=torch.Generator().manual_seed(0))
    kept, net.temperature = net.temperature, info.temperature_value
    try:
        with torch.no_grad():
            return (loaded(x) - net(x)).abs().max().item()
    finally:
        net.temperature = kept


def export_timm(net: EnsembleNet, info: EnsembleFile, out: str | Path, card: str, batch_size: int = 2) -> float:
    """Writes the folder ``out`` (see the module docstring); returns the max |difference| of the folder's
    timm model from ``net`` on a random batch. Raises, writing nothing, above :data:`TOLERANCE`."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    net = net.cpu().eval()
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as staging:
        staging = Path(staging)
        _write(staging, net, info, card)
        diff = _verify(staging, net, info, batch_size)
        if not diff <= TOLERANCE:
            raise NeasError(
                f"export check failed: the timm folder's model differs from PyTorch by {diff:.3g} (> {TOLERANCE:g}); "
                f"{out} was not written"
            )
        out.mkdir(exist_ok=True)
        for name in (MODEL, MODEL_CARD, TIMM_CONFIG):  # config.json, what makes it a timm folder, last
            write_bytes(out / name, (staging / name).read_bytes())
    return diff
