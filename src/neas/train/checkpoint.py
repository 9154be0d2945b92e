"""Atomic, self-describing checkpoints: safetensors for tensors, JSON for everything else.

A checkpoint is one safetensors file holding the model (``model.<name>``) and the optimizer's
per-parameter state (``optim.<index>.<key>``), with the JSON state in its metadata too. The
run's ``state.json`` names the last complete checkpoint; every file is written to a temporary
name, flushed and renamed, and ``state.json`` is replaced last, so a run killed at any moment
resumes from a complete checkpoint. Nothing is ever unpickled.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from neas.errors import NeasError

__all__ = ["atomic_write_text", "atomic_save_file", "save_checkpoint", "load_checkpoint", "read_state", "load_weights", "load_matching", "check_output"]


def _fsync_replace(tmp: Path, path: Path) -> None:
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    try:
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def atomic_write_text(path: "str | Path", text: str) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    _fsync_replace(tmp, path)


def atomic_save_file(tensors: dict[str, torch.Tensor], path: "str | Path", metadata: "dict[str, str] | None" = None) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    _fsync_replace(tmp, path)


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
    atomic_save_file(tensors, folder / f"{name}.safetensors", meta)
    atomic_write_text(run_dir / "state.json", json.dumps(state, indent=1) + "\n")
    old = sorted(folder.glob("*.safetensors"), key=lambda p: p.stat().st_mtime)[:-keep]
    for path in old:
        if path.name != f"{name}.safetensors":
            path.unlink(missing_ok=True)
    return folder / f"{name}.safetensors"


def read_state(run_dir: "str | Path") -> dict:
    path = Path(run_dir) / "state.json"
    if not path.is_file():
        raise NeasError(f"{run_dir}: no checkpoint to resume from (state.json is missing)")
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
        tensors = load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
    except (OSError, SafetensorError) as exc:
        raise NeasError(f"{path}: unreadable checkpoint ({exc})") from None
    for prefix, module in {"model": model, **(extra or {})}.items():
        part = {k[len(prefix) + 1 :]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
        upgrade = getattr(module, "upgrade_state_dict", None)  # a module that renamed its keys reads older checkpoints
        part = upgrade(part) if upgrade is not None else part
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


def check_output(out: "str | Path", inputs=(), force: bool = False, flag: str = "--out") -> Path:
    """Refuses an output path that is one of the ``inputs`` (never, even with ``force``), a
    directory, or an existing file (unless ``force``); returns it."""
    out = Path(out)
    for given in inputs:
        if given is None:
            continue
        given = Path(given)
        candidates = [given, *(given / name for name in ("model.safetensors", "supernet.safetensors"))] if given.is_dir() else [given]
        if any(out.resolve() == c.resolve() for c in candidates):
            raise NeasError(f"{flag} {out} is an input of this command; it would be overwritten")
    if out.is_dir():
        raise NeasError(f"{flag} {out} is a directory; give a file name")
    if out.exists() and not force:
        raise NeasError(f"{flag} {out} already exists; pass --force to overwrite it")
    return out


def load_matching(module: torch.nn.Module, tensors: dict[str, torch.Tensor], what: str, source: str = "file") -> torch.nn.Module:
    """Loads ``tensors`` into ``module`` after checking that the keys and shapes match exactly;
    otherwise a :class:`NeasError` starting with ``what`` lists what differs (shapes as
    ``{source} (..) vs model (..)``)."""
    own = module.state_dict()
    missing, unexpected = sorted(set(own) - set(tensors)), sorted(set(tensors) - set(own))
    mismatched = [f"{k}: {source} {tuple(tensors[k].shape)} vs model {tuple(own[k].shape)}"
                  for k in sorted(set(own) & set(tensors)) if tensors[k].shape != own[k].shape]
    parts = [f"{label} {len(keys)} key(s): {', '.join(keys[:8])}{' ...' if len(keys) > 8 else ''}"
             for label, keys in (("missing", missing), ("unexpected", unexpected)) if keys]
    if mismatched:
        parts.append(f"{len(mismatched)} shape mismatch(es): {'; '.join(mismatched[:6])}{' ...' if len(mismatched) > 6 else ''}")
    if parts:
        raise NeasError(f"{what} ({'; '.join(parts)})")
    module.load_state_dict(tensors)
    return module


def load_weights(path: "str | Path") -> tuple[dict[str, torch.Tensor], dict]:
    """A weights file (safetensors) and its metadata; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise NeasError(f"{path}: no such weights file")
    try:
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        return load_file(str(path)), meta
    except (OSError, SafetensorError) as exc:
        raise NeasError(f"{path}: not a readable safetensors file ({exc})") from None
