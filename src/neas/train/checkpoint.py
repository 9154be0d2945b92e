"""Atomic, self-describing checkpoints: safetensors for tensors, JSON for everything else.

A checkpoint is one safetensors file holding the model (``model.<name>``) and the optimizer's
per-parameter state (``optim.<index>.<key>``), with the JSON state in its metadata too. The
run's ``state.json`` names the last complete checkpoint; every file is written to a temporary
name, flushed and renamed, and ``state.json`` is replaced last, so a run killed at any moment
resumes from a complete checkpoint. Nothing is ever unpickled.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from neas.errors import NeasError
from neas.io import load_matching, load_weights, save_tensors, write_json
from neas.rundir import STATE

__all__ = ["save_checkpoint", "load_checkpoint", "read_state"]


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, entry in state["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{index}.{key}"] = value
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def save_checkpoint(
    run_dir: "str | Path",
    name: str,
    model: torch.nn.Module,
    optimizer: "torch.optim.Optimizer | None",
    state: dict,
    keep: int = 2,
    extra: "dict[str, torch.nn.Module] | None" = None,
) -> Path:
    """Writes ``<run>/checkpoints/<name>.safetensors`` then points ``<run>/state.json`` at it.

    ``extra`` modules (e.g. ``{"ema": ema_model}``) are stored under their prefix.
    """
    run_dir = Path(run_dir)
    folder = run_dir / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    for prefix, module in (extra or {}).items():
        tensors.update({f"{prefix}.{k}": v for k, v in module.state_dict().items()})
    optim_json = None
    if optimizer is not None:
        optim_tensors, optim_json = _optimizer_tensors(optimizer)
        tensors.update(optim_tensors)
    state = {**state, "checkpoint": f"checkpoints/{name}.safetensors"}
    meta = {"state": json.dumps(state), "optimizer": json.dumps(optim_json)}
    save_tensors(folder / f"{name}.safetensors", tensors, meta)
    write_json(run_dir / STATE, state)
    old = sorted(folder.glob("*.safetensors"), key=lambda p: p.stat().st_mtime)[:-keep]
    for path in old:
        if path.name != f"{name}.safetensors":
            path.unlink(missing_ok=True)
    return folder / f"{name}.safetensors"


def read_state(run_dir: "str | Path") -> dict:
    path = Path(run_dir) / STATE
    if not path.is_file():
        raise NeasError(f"{run_dir}: no checkpoint to resume from ({STATE} is missing)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise NeasError(f"{path}: corrupt state file ({exc.msg})") from None


def load_checkpoint(
    run_dir: "str | Path",
    model: torch.nn.Module,
    optimizer: "torch.optim.Optimizer | None",
    extra: "dict[str, torch.nn.Module] | None" = None,
) -> dict:
    """Restores the model, optimizer (and ``extra`` modules) of the checkpoint ``state.json``
    names; returns the state."""
    state = read_state(run_dir)
    path = Path(run_dir) / state["checkpoint"]
    try:
        tensors, meta = load_weights(path)
    except NeasError as exc:
        raise NeasError(f"unreadable checkpoint: {exc}") from None
    for prefix, module in {"model": model, **(extra or {})}.items():
        part = {k[len(prefix) + 1 :]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
        load_matching(module, part, f"{path}: the checkpoint's {prefix} weights do not fit this run's {prefix}")
    if optimizer is not None and meta.get("optimizer") not in (None, "null"):
        optim_json = json.loads(meta["optimizer"])
        per_param: dict[int, dict] = {}
        for key, value in tensors.items():
            if key.startswith("optim."):
                _, index, name = key.split(".", 2)
                per_param.setdefault(int(index), {})[name] = value
        for index, scalars in optim_json["scalars"].items():
            per_param.setdefault(int(index), {}).update(scalars)
        optimizer.load_state_dict({"state": per_param, "param_groups": optim_json["param_groups"]})
    return state
